# The CPU optimizer plugins against tests/data/optimizers.json (scripts/reference/optimizers.py).
set(DSPP_OPTIMIZER_TEST_PLUGINS dspp_optimizer_adam dspp_optimizer_sgd dspp_optimizer_lion
                                dspp_optimizer_lamb dspp_optimizer_adagrad)
dspp_add_test(test_optimizers SOURCES test_optimizers.cpp)
add_dependencies(test_optimizers ${DSPP_OPTIMIZER_TEST_PLUGINS})
foreach(t ${DSPP_OPTIMIZER_TEST_PLUGINS})
  string(TOUPPER "${t}" var)
  target_compile_definitions(test_optimizers PRIVATE "${var}_PATH=\"$<TARGET_FILE:${t}>\"")
endforeach()
