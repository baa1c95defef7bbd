// device/cuda: what the ZeRO stages and the optimizers need on the device: the sum of squares of
// a gradient (norms, the overflow check) and one Adam step (DeviceKernels version 2); the steps of
// SGD, Lion, Adagrad and LAMB and Muon's elementwise pieces (version 3).
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
//
// Version 3 follows the same rules: grid-stride loops, one element per thread and iteration, the
// CPU plugins' expressions (plugins/optimizer/*/*.cpp) written with the _rn intrinsics in their
// order, so each element equals the CPU's bit for bit. Products of constants the CPU also forms
// (k.one_minus_beta2 * g * g is (k.one_minus_beta2 * g) * g) keep their association. Lion's
// sign() is exact. transpose moves bits (tiles of 32 x 32 through shared memory, any 2- or 4-byte
// dtype); divide_by_norm takes the square root of the f64 sum with __dsqrt_rn and rounds it once
// to f32, as the CPU's static_cast<float>(std::sqrt(sq)) does.
#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

constexpr int kSumThreads = 256;
constexpr int kSumMaxBlocks = 1024;
constexpr int64_t kSumMinPerThread = 16;  // fewer blocks below 1024 x 256 x 16 elements
constexpr int kFinishThreads = 1024;      // pass 2: at least one thread per partial
static_assert(kFinishThreads >= kSumMaxBlocks, "pass 2 reads each partial with one thread");

constexpr int kAdamThreads = 256;
constexpr int kStepThreads = 256;  // version 3's elementwise kernels
constexpr int kTile = 32;          // transpose: 32 x 32 tiles, blocks of 32 x 8 threads
constexpr int kTileRows = 8;

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

// ---- version 3 ----

__global__ void sgd_step_kernel(float* p, const float* g, float* buf, int64_t n,
                                DeviceSgdConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float pi = p[i];
    const float d = __fadd_rn(__fmul_rn(k.sign, g[i]), __fmul_rn(k.wd, pi));
    if (k.momentum == 0.0f) {  // plain SGD: no buffer
      p[i] = __fsub_rn(pi, __fmul_rn(k.lr, d));
      continue;
    }
    const float b =
        k.first ? d : __fadd_rn(__fmul_rn(k.momentum, buf[i]), __fmul_rn(k.one_minus_dampening, d));
    buf[i] = b;
    const float u = k.nesterov ? __fadd_rn(d, __fmul_rn(k.momentum, b)) : b;
    p[i] = __fsub_rn(pi, __fmul_rn(k.lr, u));
  }
}

__global__ void lion_step_kernel(float* p, const float* g, float* m, int64_t n,
                                 DeviceLionConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = m[i];
    const float c = __fadd_rn(__fmul_rn(k.beta1, mi), __fmul_rn(k.one_minus_beta1, gi));
    const float sign = (c > 0.0f ? 1.0f : 0.0f) - (c < 0.0f ? 1.0f : 0.0f);  // NaN: 0
    p[i] = __fsub_rn(__fmul_rn(p[i], k.decay), __fmul_rn(k.lr, sign));
    m[i] = __fadd_rn(__fmul_rn(k.beta2, mi), __fmul_rn(k.one_minus_beta2, gi));
  }
}

__global__ void adagrad_step_kernel(float* p, const float* g, float* sum, int64_t n,
                                    DeviceAdagradConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float pi = p[i];
    const float gi = __fadd_rn(__fmul_rn(k.sign, g[i]), __fmul_rn(k.wd, pi));
    const float s = __fadd_rn(sum[i], __fmul_rn(gi, gi));
    sum[i] = s;
    p[i] = __fsub_rn(pi, __fmul_rn(k.clr, __fdiv_rn(gi, __fadd_rn(__fsqrt_rn(s), k.eps))));
  }
}

// LAMB's update from the new moments: m / denom + wd p.
__device__ __forceinline__ float lamb_update(float m, float v, float p, const DeviceLambConsts& k) {
  const float denom =
      k.eps_inside_sqrt ? __fsqrt_rn(__fadd_rn(v, k.eps)) : __fadd_rn(__fsqrt_rn(v), k.eps);
  return __fadd_rn(__fdiv_rn(m, denom), __fmul_rn(k.wd, p));
}

__global__ void lamb_moments_kernel(const float* p, const float* g, float* m, float* v, float* u,
                                    int64_t n, DeviceLambConsts k) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = __fadd_rn(__fmul_rn(k.beta1, m[i]), __fmul_rn(k.one_minus_beta1, gi));
    const float vi =
        __fadd_rn(__fmul_rn(k.beta2, v[i]), __fmul_rn(__fmul_rn(k.one_minus_beta2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    u[i] = lamb_update(mi, vi, p[i], k);
  }
}

__global__ void lamb_apply_kernel(float* p, const float* m, const float* v, int64_t n,
                                  DeviceLambConsts k, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float pi = p[i];
    p[i] = __fsub_rn(pi, __fmul_rn(scale, lamb_update(m[i], v[i], pi, k)));
  }
}

__global__ void muon_momentum_kernel(const float* g, float* m, float* u, int64_t n, float beta,
                                     float one_minus_beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = __fadd_rn(__fmul_rn(beta, m[i]), __fmul_rn(one_minus_beta, gi));
    m[i] = mi;
    u[i] = __fadd_rn(__fmul_rn(one_minus_beta, gi), __fmul_rn(beta, mi));
  }
}

__global__ void decayed_update_kernel(float* p, const float* u, int64_t n, float decay,
                                      float step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = __fsub_rn(__fmul_rn(p[i], decay), __fmul_rn(step, u[i]));
  }
}

// out [cols, rows] = x [rows, cols]^T, bits moved through a shared tile (the padding column
// avoids bank conflicts); a grid-stride loop over the tiles.
template <class Bits>
__global__ void transpose_kernel(const Bits* x, Bits* out, int64_t rows, int64_t cols) {
  __shared__ Bits tile[kTile][kTile + 1];
  const int64_t tiles_c = (cols + kTile - 1) / kTile;
  const int64_t tiles = (rows + kTile - 1) / kTile * tiles_c;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = t / tiles_c * kTile, c0 = t % tiles_c * kTile;
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t r = r0 + j, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[j][threadIdx.x] = x[r * cols + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t c = c0 + j, r = r0 + threadIdx.x;  // out[c, r]
      if (c < cols && r < rows) out[c * rows + r] = tile[threadIdx.x][j];
    }
    __syncthreads();  // the tile is rewritten for the next t
  }
}

__global__ void add_diagonal_kernel(float* x, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i * (n + 1)] = __fadd_rn(x[i * (n + 1)], value);
  }
}

__global__ void divide_by_norm_kernel(const float* x, const double* sum_sq, float eps, float* out,
                                      int64_t n) {
  const float denom = __fadd_rn(__double2float_rn(__dsqrt_rn(*sum_sq)), eps);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __fdiv_rn(x[i], denom);
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

// ---- version 3 ----

void launch_sgd_step(float* p, const float* g, float* buf, int64_t n, const DeviceSgdConsts& k,
                     cudaStream_t stream) {
  if (n == 0) return;
  sgd_step_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(p, g, buf, n, k);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_lion_step(float* p, const float* g, float* m, int64_t n, const DeviceLionConsts& k,
                      cudaStream_t stream) {
  if (n == 0) return;
  lion_step_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(p, g, m, n, k);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_adagrad_step(float* p, const float* g, float* sum, int64_t n,
                         const DeviceAdagradConsts& k, cudaStream_t stream) {
  if (n == 0) return;
  adagrad_step_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(p, g, sum, n, k);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_lamb_moments(const float* p, const float* g, float* m, float* v, float* u, int64_t n,
                         const DeviceLambConsts& k, cudaStream_t stream) {
  if (n == 0) return;
  lamb_moments_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(p, g, m, v, u, n, k);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_lamb_apply(float* p, const float* m, const float* v, int64_t n,
                       const DeviceLambConsts& k, float scale, cudaStream_t stream) {
  if (n == 0) return;
  lamb_apply_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(p, m, v, n, k, scale);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_muon_momentum(const float* g, float* m, float* u, int64_t n, float beta,
                          float one_minus_beta, cudaStream_t stream) {
  if (n == 0) return;
  muon_momentum_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(g, m, u, n, beta,
                                                                               one_minus_beta);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_decayed_update(float* p, const float* u, int64_t n, float decay, float step,
                           cudaStream_t stream) {
  if (n == 0) return;
  decayed_update_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(p, u, n, decay,
                                                                                step);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_transpose(int32_t dtype, const void* x, void* out, int64_t rows, int64_t cols,
                      cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const int64_t tiles = (rows + kTile - 1) / kTile * ((cols + kTile - 1) / kTile);
  const dim3 block(kTile, kTileRows);
  if (dtype == DSPP_F32) {
    transpose_kernel<uint32_t><<<grid_for(tiles, 1), block, 0, stream>>>(
        static_cast<const uint32_t*>(x), static_cast<uint32_t*>(out), rows, cols);
  } else if (dtype == DSPP_BF16 || dtype == DSPP_F16) {
    transpose_kernel<uint16_t><<<grid_for(tiles, 1), block, 0, stream>>>(
        static_cast<const uint16_t*>(x), static_cast<uint16_t*>(out), rows, cols);
  } else {  // kernels.cpp has checked the dtype: a bug
    throw dspp::plugin::StatusError(DSPP_ERR_INTERNAL,
                                    "device/cuda: transpose got dtype " + std::to_string(dtype));
  }
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_add_diagonal(float* x, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  add_diagonal_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(x, n, value);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_divide_by_norm(const float* x, const double* sum_sq, float eps, float* out, int64_t n,
                           cudaStream_t stream) {
  if (n == 0) return;
  divide_by_norm_kernel<<<grid_for(n, kStepThreads), kStepThreads, 0, stream>>>(x, sum_sq, eps, out,
                                                                                n);
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace dspp::cuda
