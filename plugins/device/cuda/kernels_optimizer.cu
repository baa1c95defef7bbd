// device/cuda: what the ZeRO stages and the optimizers need on the device (DeviceKernels
// version 2): the sum of squares of a gradient (norms, the overflow check) and one Adam step.
//
// sum_squares: two kernels with a grid chosen from n only, so the summation order, and the
// result, are the same on every run and every GPU. Pass 1: block b's thread t sums, in f64, the
// squares of the elements b * threads + t, then + blocks * threads, ... in index order; the block
// then adds its threads' sums with block_sum (a fixed shuffle tree, then warps in order) into
// partial[b]. Pass 2 (one block) adds the partials the same way and applies `accumulate`. A float
// squared in f64 is exact (24-bit mantissas give at most 48 bits), so only the additions round,
// and an FMA contraction of s + x * x gives the same value as the separate operations.
//
// adam_step: a grid-stride loop, one element per thread and iteration (four with float4 loads
// when every pointer allows it); every element is independent, so results do not depend on the
// launch shape. The arithmetic is written with the _rn intrinsics, which nvcc never contracts
// into FMAs, so each element is the IEEE fp32 evaluation of the CPU kernel's expression
// (plugins/optimizer/common/adam_kernel.h) in its order, sqrt and division correctly rounded.
#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

constexpr int kSumThreads = 256;
constexpr int kSumMaxBlocks = 1024;
constexpr int64_t kSumMinPerThread = 16;  // fewer blocks below 1024 x 256 x 16 elements
constexpr int kFinishThreads = 1024;      // pass 2: at least one thread per partial
static_assert(kFinishThreads >= kSumMaxBlocks, "pass 2 reads each partial with one thread");

constexpr int kAdamThreads = 256;

// Pass 1: partial[blockIdx.x] = the block's sum of squares.
template <class T>
__global__ void sum_squares_partial_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double red[32];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const double xi = static_cast<double>(to_float(x[i]));
    s += xi * xi;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Pass 2 (one block): out[0] = (accumulate ? out[0] : 0) + the partials' sum.
__global__ void sum_squares_finish_kernel(const double* partial, int blocks, double* out,
                                          bool accumulate) {
  __shared__ double red[32];
  const double s =
      block_sum(static_cast<int>(threadIdx.x) < blocks ? partial[threadIdx.x] : 0.0, red);
  if (threadIdx.x == 0) *out = accumulate ? *out + s : s;
}

// One element of the step: the CPU kernel's operations in its order, each rounded once.
__device__ __forceinline__ void adam_element(float& p, float gi, float& m, float& v,
                                             const DeviceAdamConsts& k) {
  const float pi = p;
  // Only when there is an L2 term: 0 * p would turn an infinite p into a NaN gradient.
  if (k.l2 != 0.0f) gi = __fadd_rn(gi, __fmul_rn(k.l2, pi));
  const float mi = __fadd_rn(__fmul_rn(k.beta1, m), __fmul_rn(k.one_minus_beta1, gi));
  const float vi =
      __fadd_rn(__fmul_rn(k.beta2, v), __fmul_rn(__fmul_rn(k.one_minus_beta2, gi), gi));
  m = mi;
  v = vi;
  const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), k.inv_sqrt_bc2), k.eps);
  p = __fsub_rn(__fmul_rn(pi, k.decay), __fmul_rn(k.step_size, __fdiv_rn(mi, denom)));
}

__global__ void adam_step_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                                 DeviceAdamConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float pi = p[i], mi = m[i], vi = v[i];
    adam_element(pi, g[i], mi, vi, k);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

// n4 groups of four elements; every pointer 16-byte aligned.
__global__ void adam_step_vec4_kernel(float4* p, const float4* g, float4* m, float4* v, int64_t n4,
                                      DeviceAdamConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    float4 pi = p[i], mi = m[i], vi = v[i];
    const float4 gi = g[i];
    adam_element(pi.x, gi.x, mi.x, vi.x, k);
    adam_element(pi.y, gi.y, mi.y, vi.y, k);
    adam_element(pi.z, gi.z, mi.z, vi.z, k);
    adam_element(pi.w, gi.w, mi.w, vi.w, k);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

bool aligned16(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

}  // namespace

void launch_sum_squares(int32_t dtype, const void* x, int64_t n, double* out, bool accumulate,
                        Scratch& scratch) {
  const cudaStream_t stream = scratch.stream();
  if (n == 0) {
    // All-zero bytes are +0.0.
    if (!accumulate) DSPP_KERNEL_CHECK(cudaMemsetAsync(out, 0, sizeof(double), stream));
    return;
  }
  // The grid depends on n only (never on the GPU): it fixes the summation order.
  const int64_t per_block = int64_t(kSumThreads) * kSumMinPerThread;
  const int blocks =
      static_cast<int>(std::min<int64_t>((n + per_block - 1) / per_block, kSumMaxBlocks));
  double* partial = static_cast<double*>(scratch.get(sizeof(double) * blocks));
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sum_squares_partial_kernel<T><<<static_cast<unsigned>(blocks), kSumThreads, 0, stream>>>(
        static_cast<const T*>(x), n, partial);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
  sum_squares_finish_kernel<<<1, kFinishThreads, 0, stream>>>(partial, blocks, out, accumulate);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_adam_step(float* p, const float* g, float* m, float* v, int64_t n,
                      const DeviceAdamConsts& k, cudaStream_t stream) {
  if (n == 0) return;
  int64_t done = 0;
  if (aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v) && n >= 4) {
    const int64_t n4 = n / 4;
    adam_step_vec4_kernel<<<grid_for(n4, kAdamThreads), kAdamThreads, 0, stream>>>(
        reinterpret_cast<float4*>(p), reinterpret_cast<const float4*>(g),
        reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v), n4, k);
    DSPP_KERNEL_CHECK(cudaGetLastError());
    done = n4 * 4;
  }
  if (done < n) {
    const int64_t rest = n - done;
    adam_step_kernel<<<grid_for(rest, kAdamThreads), kAdamThreads, 0, stream>>>(
        p + done, g + done, m + done, v + done, rest, k);
    DSPP_KERNEL_CHECK(cudaGetLastError());
  }
}

}  // namespace dspp::cuda
