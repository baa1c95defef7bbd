// Small kernels the GPU tests use to make a stream busy for a known time (tests/gpu_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

// One thread waits `ms` milliseconds of GPU time (%globaltimer), then writes `value` to *p.
cudaError_t launch_sleep_then_write(int* p, int value, double ms, cudaStream_t stream);
