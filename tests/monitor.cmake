dspp_add_test(test_monitor SOURCES test_monitor.cpp)
# The 2-process case runs ds-train.
add_dependencies(test_monitor ds-train)
