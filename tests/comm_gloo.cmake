# comm/gloo: real multi-process runs of the Gloo plugin (tests/test_comm_gloo.cpp starts
# comm_gloo_worker as the ranks). Skipped when the plugin is not built (no libgloo-dev).
if(TARGET dspp_comm_gloo)
  add_executable(comm_gloo_worker comm_gloo_worker.cpp)
  target_link_libraries(comm_gloo_worker PRIVATE dspp)
  target_include_directories(comm_gloo_worker PRIVATE "${PROJECT_SOURCE_DIR}/core")
  target_compile_options(comm_gloo_worker PRIVATE ${DSPP_WARNINGS})
  target_compile_definitions(comm_gloo_worker PRIVATE
    DSPP_COMM_GLOO_PLUGIN="$<TARGET_FILE:dspp_comm_gloo>")
  add_dependencies(comm_gloo_worker dspp_comm_gloo)

  dspp_add_test(test_comm_gloo SOURCES test_comm_gloo.cpp)
  add_dependencies(test_comm_gloo comm_gloo_worker)
  target_compile_definitions(test_comm_gloo PRIVATE
    COMM_GLOO_WORKER="$<TARGET_FILE:comm_gloo_worker>")
endif()
