// device/cuda: GEMM through cuBLASLt (kernels_gemm.cpp), for DeviceKernels::gemm.
#pragma once

#include <dspp/abi.h>

#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>

#include "launch.h"

namespace dspp::cuda {

// c [m, n] = epilogue(alpha op(a) op(b) + beta c), row-major; checked by the caller.
struct GemmArgs {
  int32_t ab_dtype = DSPP_F32;  // a and b
  int32_t c_dtype = DSPP_F32;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;        // op(a) [m, k], op(b) [k, n]
  int64_t lda = 0, ldb = 0, ldc = 0;  // columns of the stored (row-major) a, b, c
  float alpha = 1.0f;
  float beta = 0.0f;
  bool bias_epilogue = false;
  bool gelu_epilogue = false;
  const void* bias = nullptr;  // [n], c's dtype
  void* pre_gelu = nullptr;    // like c, optional
  bool allow_tf32 = false;
};

// One cuBLASLt handle (created on first use, on the device current then) and the algorithms the
// heuristic chose, by problem. libcublasLt is opened with dlopen on first use, so the plugin
// loads on machines without it (DeviceKernels::gemm then fails with DSPP_ERR_NOT_SUPPORTED).
class LtGemm {
 public:
  explicit LtGemm(const dspp_host_api* host) : host_(host) {}
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  ~LtGemm();
  void run(const GemmArgs& g, Scratch& scratch);

 private:
  // What the heuristic said for one problem (asking costs tens of microseconds a call).
  struct Choice {
    bool found = false;
    cublasLtMatmulAlgo_t algo{};
  };
  using Key = std::array<int64_t, 17>;
  // One cuBLASLt call with the given epilogue (cublasLtEpilogue_t); false when cuBLASLt has no
  // algorithm for it (the caller then falls back to a plainer one).
  bool try_matmul(const GemmArgs& g, int32_t lt_epilogue, Scratch& scratch);
  cublasLtHandle_t handle();

  const dspp_host_api* host_;
  std::mutex mutex_;
  cublasLtHandle_t handle_ = nullptr;
  std::map<Key, Choice> choices_;
};

}  // namespace dspp::cuda
