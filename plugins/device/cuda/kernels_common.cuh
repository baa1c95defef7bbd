// device/cuda: what the kernel files share: dtype conversions, warp and block reductions, the
// dtype dispatch and launch-size helpers. Reductions combine values in a fixed order (a fixed
// shuffle tree, then warps in index order), so every result is the same from run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "../../common/cuda_check.h"
#include "launch.h"

#define DSPP_KERNEL_CHECK(call) DSPP_CUDA_CHECK("device/cuda", call)

namespace dspp::cuda {

// ---- conversions (round to nearest even when narrowing) ---------------------------------------
__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// ---- reductions -----------------------------------------------------------------------------
template <class V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// `shared` holds 32 values; the caller syncs before reusing it.
template <class V>
__device__ __forceinline__ V block_sum(V v, V* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  V total = 0;
  for (int w = 0; w < warps; ++w) total += shared[w];  // the same order in every thread
  return total;
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, shared[w]);
  return m;
}

// ---- GELU, the CPU layer's formula (core/nn/gelu.cpp) -----------------------------------------
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

__device__ __forceinline__ float gelu(float v) {
  return 0.5f * v * (1.0f + tanhf(kGeluScale * (v + kGeluCubic * v * v * v)));
}
// d/dx = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 * 0.044715 x^2)
__device__ __forceinline__ float gelu_grad(float v) {
  const float t = tanhf(kGeluScale * (v + kGeluCubic * v * v * v));
  return 0.5f * (1.0f + t) +
         0.5f * v * (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCubic * v * v);
}

// ---- dispatch ---------------------------------------------------------------------------------
template <class T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<T>{}) with the C++ type of a float dtype. kernels.cpp has checked the dtype; an
// unexpected one here is a bug.
template <class Fn>
void dispatch_float(int32_t dtype, Fn&& fn) {
  switch (dtype) {
    case DSPP_F32:
      fn(Tag<float>{});
      return;
    case DSPP_BF16:
      fn(Tag<__nv_bfloat16>{});
      return;
    case DSPP_F16:
      fn(Tag<__half>{});
      return;
    default:
      throw dspp::plugin::StatusError(
          DSPP_ERR_INTERNAL, "device/cuda: kernel dispatch got dtype " + std::to_string(dtype));
  }
}

// Blocks for a grid-stride loop over n items: enough to fill the GPU, within the grid limit.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(blocks, 1), int64_t(1) << 20));
}

}  // namespace dspp::cuda
