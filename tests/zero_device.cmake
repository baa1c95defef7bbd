# The GPU path of ZeRO stage 0 and the optimizers on a fake device in host memory (runs on every
# machine; test_gpu_zero_stage0 in gpu.cmake runs the same scenario, zero_device_scenario.h, on a
# real GPU).
dspp_add_test(test_zero_device_fake SOURCES test_zero_device_fake.cpp LIBS ${CMAKE_DL_LIBS})
# The fake's kernels evaluate the optimizers' fp32 expressions as the CPU plugins do, built like
# them without contraction into fused multiply-adds (cpu_optimizer.cmake), so both agree bit for
# bit on every target.
target_compile_options(test_zero_device_fake PRIVATE -ffp-contract=off)
dspp_test_plugin_paths(test_zero_device_fake)
