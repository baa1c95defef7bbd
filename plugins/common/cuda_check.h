// Checked CUDA runtime calls for the CUDA plugins (device/cuda, comm/nccl): every failure becomes
// a dspp::plugin::StatusError whose message names the call, the file and line, and CUDA's error
// name and text. Header-only; each plugin carries its own copy (plugins link nothing shared).
#pragma once

#include <dspp/plugin.h>

#include <cuda_runtime_api.h>

#include <string>

// __FILE_NAME__ (GCC 12+, Clang) keeps messages short; fall back to the full path elsewhere.
#ifdef __FILE_NAME__
#define DSPP_CUDA_FILE __FILE_NAME__
#else
#define DSPP_CUDA_FILE __FILE__
#endif

namespace dspp::cuda {

// "cudaMalloc(&p, bytes) failed at allocator.cpp:123: cudaErrorMemoryAllocation (out of memory)"
inline std::string describe_failure(cudaError_t err, const char* call, const char* file, int line) {
  return std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
         cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
}

inline dspp_status status_of(cudaError_t err) {
  return err == cudaErrorMemoryAllocation ? DSPP_ERR_OUT_OF_MEMORY : DSPP_ERR_RUNTIME;
}

[[noreturn]] inline void throw_failure(const char* who, cudaError_t err, const char* call,
                                       const char* file, int line) {
  // Clear the sticky "last error" so that a later, unrelated check does not report this one.
  (void)cudaGetLastError();
  throw dspp::plugin::StatusError(
      status_of(err), std::string(who) + ": " + describe_failure(err, call, file, line));
}

}  // namespace dspp::cuda

// DSPP_CUDA_CHECK("device/cuda", cudaMalloc(&p, n)); throws on any error.
#define DSPP_CUDA_CHECK(who, call)                                                       \
  do {                                                                                   \
    const cudaError_t dspp_cuda_err_ = (call);                                           \
    if (dspp_cuda_err_ != cudaSuccess) {                                                 \
      ::dspp::cuda::throw_failure(who, dspp_cuda_err_, #call, DSPP_CUDA_FILE, __LINE__); \
    }                                                                                    \
  } while (0)
