dspp_add_test(test_monitor SOURCES test_monitor.cpp)
# The 2-process case runs ds-train.
add_dependencies(test_monitor ds-train)

# TensorBoard event files read back with a reader of the test's own (framing, CRCs, protobuf).
# The generated message classes come from libdspp; the test only needs their header and the
# protobuf runtime (linking the generated code twice would register it twice).
dspp_add_test(test_monitor_tensorboard SOURCES test_monitor_tensorboard.cpp)
if(DSPP_HAVE_TENSORBOARD)
  target_include_directories(test_monitor_tensorboard SYSTEM PRIVATE "${PROJECT_BINARY_DIR}/core")
  target_link_libraries(test_monitor_tensorboard PRIVATE protobuf::libprotobuf-lite)
  target_compile_definitions(test_monitor_tensorboard PRIVATE DSPP_HAVE_TENSORBOARD=1)
  # The generated header must exist before the test compiles.
  add_dependencies(test_monitor_tensorboard dspp)
else()
  target_compile_definitions(test_monitor_tensorboard PRIVATE DSPP_HAVE_TENSORBOARD=0)
endif()
