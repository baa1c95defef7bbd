# ds-train, the main job: a short run must learn (the CSV's loss curve goes down, the held-out loss
# ends below chance, the last line is `final train_loss=X eval_loss=Y ...`), and bad input must
# exit non-zero with the error. See ds_train_test.sh.
foreach(mode learns errors)
  add_test(NAME ds_train:${mode}
           COMMAND bash "${CMAKE_CURRENT_SOURCE_DIR}/ds_train_test.sh" ${mode}
                   $<TARGET_FILE:ds-train> "${CMAKE_CURRENT_BINARY_DIR}/ds_train_${mode}")
  # Passive OpenMP waiting: spinning threads starve each other when ctest runs tests in parallel.
  set_tests_properties(ds_train:${mode} PROPERTIES TIMEOUT 120 ENVIRONMENT "OMP_WAIT_POLICY=passive")
endforeach()
# The same short run as 2 data-parallel processes under dsrun (what the main job does).
add_test(NAME ds_train:dsrun
         COMMAND bash "${CMAKE_CURRENT_SOURCE_DIR}/ds_train_test.sh" dsrun $<TARGET_FILE:ds-train>
                 "${CMAKE_CURRENT_BINARY_DIR}/ds_train_dsrun" $<TARGET_FILE:dsrun>)
# Two CPU ranks (a one-GPU machine has no GPU for rank 1).
set_tests_properties(ds_train:dsrun PROPERTIES TIMEOUT 120
                     ENVIRONMENT "OMP_WAIT_POLICY=passive;DSPP_DEVICE=cpu")

# Data parallelism: ds-train as 1, 2 and 4 real processes (Gloo on loopback) gives the same run.
dspp_add_test(test_dist_train SOURCES test_dist_train.cpp)
add_dependencies(test_dist_train ds-train dspp_zero_stage0 dspp_comm_gloo)
