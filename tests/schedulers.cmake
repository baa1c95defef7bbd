# The LR scheduler plugins (plugins/scheduler/lr_schedules) against DeepSpeed's reference values.
dspp_add_test(test_schedulers SOURCES test_schedulers.cpp)
add_dependencies(test_schedulers dspp_scheduler_lr_schedules)
target_compile_definitions(test_schedulers PRIVATE
  DSPP_LR_SCHEDULES_PLUGIN="$<TARGET_FILE:dspp_scheduler_lr_schedules>")
