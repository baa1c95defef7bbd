# The rendezvous stores (TCP and file) and DSPP_TIMEOUT. The worker is one rank of the
# multi-process tests, started by mp::run.
add_executable(dist_store_worker dist_store_worker.cpp)
target_link_libraries(dist_store_worker PRIVATE dspp)
target_include_directories(dist_store_worker PRIVATE "${PROJECT_SOURCE_DIR}/core")
target_compile_options(dist_store_worker PRIVATE ${DSPP_WARNINGS})

dspp_add_test(test_dist_store SOURCES test_dist_store.cpp)
add_dependencies(test_dist_store dist_store_worker)
target_compile_definitions(test_dist_store PRIVATE
  DSPP_STORE_WORKER="$<TARGET_FILE:dist_store_worker>")
