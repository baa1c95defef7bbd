# GPU tests: built wherever CUDA is (DSPP_CUDA AUTO/ON), run everywhere. The binaries have their
# own main (gpu_main.cpp) that exits 77 without a CUDA device, which CTest reports as skipped
# (SKIP_RETURN_CODE). They hold the RESOURCE_LOCK "gpu", so `ctest -j` runs one at a time (the
# allocator tests take most of the GPU's memory for a moment).
if(NOT DSPP_HAVE_CUDA OR NOT TARGET dspp_device_cuda)
  return()
endif()

# dspp_add_gpu_test(<name> SOURCES ... [LIBS ...])
function(dspp_add_gpu_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES} gpu_main.cpp)
  # Catch2 3: the library without its main; Catch2 2: gpu_main.cpp holds the implementation.
  if(TARGET Catch2::Catch2WithMain)
    target_link_libraries(${name} PRIVATE Catch2::Catch2)
  else()
    target_link_libraries(${name} PRIVATE Catch2::Catch2)
  endif()
  # The test binaries use the shared cudart while the plugins carry a static one: the mix a host
  # application has, and the one that must work.
  target_link_libraries(${name} PRIVATE dspp CUDA::cudart ${T_LIBS})
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/core"
                                             "${CMAKE_CURRENT_SOURCE_DIR}")
  # nvcc: the host compiler's warnings, as errors under DSPP_WERROR (nvcc's own too).
  set(cuda_warnings -Xcompiler=-Wall,-Wextra)
  if(DSPP_WERROR)
    list(APPEND cuda_warnings -Xcompiler=-Werror --Werror=all-warnings)
  endif()
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DSPP_WARNINGS}>
                         $<$<COMPILE_LANGUAGE:CUDA>:${cuda_warnings}>)
  target_compile_definitions(${name} PRIVATE
    DSPP_DEVICE_CUDA_PLUGIN="$<TARGET_FILE:dspp_device_cuda>"
    DSPP_BINARY_DIR="${PROJECT_BINARY_DIR}")
  add_dependencies(${name} dspp_device_cuda)
  catch_discover_tests(${name} TEST_PREFIX "${name}:"
    PROPERTIES SKIP_RETURN_CODE 77 RESOURCE_LOCK gpu LABELS gpu
               FAIL_REGULAR_EXPRESSION "No tests ran")
endfunction()

dspp_add_gpu_test(test_gpu_device SOURCES test_gpu_device.cpp gpu_kernels.cu)
# The layer kernels of device/cuda (DeviceKernels) against float64 references.
dspp_add_gpu_test(test_gpu_kernels SOURCES test_gpu_kernels.cpp)
# The plugin-level GPU tests (dspp_test_plugin_paths: they load the plugins themselves).
function(dspp_add_gpu_plugin_test name)
  dspp_add_gpu_test(${name} SOURCES ${name}.cpp LIBS ${CMAKE_DL_LIBS})
  dspp_test_plugin_paths(${name})
endfunction()
# ZeRO stage 0 and AdamW with the flat buffers in GPU memory, against float64 references
# (zero_device_scenario.h; test_zero_device_fake runs the same scenario on a fake device).
dspp_add_gpu_plugin_test(test_gpu_zero_stage0)
# ZeRO stages 1 and 2 on the GPU at world 1: the same scenario, and bit-equal to stage 0.
dspp_add_gpu_plugin_test(test_gpu_zero_stages)
# The optimizers' device steps against their CPU path (optimizer_device_scenario.h;
# test_zero_device_fake runs the same scenario on a fake device).
dspp_add_gpu_plugin_test(test_gpu_optimizers)

# Training on the GPU vs the same training on the CPU: layers' gradients, and ds-train runs.
dspp_add_gpu_test(test_gpu_train SOURCES test_gpu_train.cpp)
add_dependencies(test_gpu_train ds-train dspp_zero_stage0 dspp_optimizer_adam
                 dspp_scheduler_lr_schedules dspp_comm_gloo)
if(TARGET dspp_comm_nccl)
  add_dependencies(test_gpu_train dspp_comm_nccl)
endif()

# Loads on CPU-only machines too: an ordinary test.
dspp_add_test(test_cuda_plugins SOURCES test_cuda_plugins.cpp)
add_dependencies(test_cuda_plugins dspp_device_cuda)
target_compile_definitions(test_cuda_plugins PRIVATE
  DSPP_DEVICE_CUDA_PLUGIN="$<TARGET_FILE:dspp_device_cuda>")

if(TARGET dspp_comm_nccl)
  add_dependencies(test_cuda_plugins dspp_comm_nccl)
  target_compile_definitions(test_cuda_plugins PRIVATE
    DSPP_COMM_NCCL_PLUGIN="$<TARGET_FILE:dspp_comm_nccl>")

  add_executable(gpu_nccl_worker gpu_nccl_worker.cpp)
  target_link_libraries(gpu_nccl_worker PRIVATE dspp)
  target_include_directories(gpu_nccl_worker PRIVATE "${PROJECT_SOURCE_DIR}/core")
  target_compile_options(gpu_nccl_worker PRIVATE ${DSPP_WARNINGS})
  target_compile_definitions(gpu_nccl_worker PRIVATE
    DSPP_DEVICE_CUDA_PLUGIN="$<TARGET_FILE:dspp_device_cuda>"
    DSPP_COMM_NCCL_PLUGIN="$<TARGET_FILE:dspp_comm_nccl>")
  add_dependencies(gpu_nccl_worker dspp_device_cuda dspp_comm_nccl)

  dspp_add_gpu_test(test_gpu_nccl SOURCES test_gpu_nccl.cpp)
  add_dependencies(test_gpu_nccl gpu_nccl_worker)
  target_compile_definitions(test_gpu_nccl PRIVATE GPU_NCCL_WORKER="$<TARGET_FILE:gpu_nccl_worker>")
endif()
