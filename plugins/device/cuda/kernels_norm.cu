// device/cuda: LayerNorm over the last dimension, the CPU layer's formulas (core/nn/layernorm.cpp):
// mean, then the biased variance of (x - mean) (two passes, as the CPU does, rather than a
// one-pass Welford), rstd = 1 / sqrt(var + eps), y = (x - mean) rstd w + b.
//
// Forward: one warp per row (rows are independent). Backward: each block owns a fixed set of
// rows (row = block, block + grid, ...), computes their dx and sums their dweight/dbias terms in
// per-column accumulators that only one thread touches; a second kernel adds the blocks' sums
// in block order. The grid depends on the row count only, so the result is deterministic, and no
// float atomics are used.
#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

constexpr int kFwdThreads = 256;  // 8 rows per block
constexpr int kBwdThreads = 256;
constexpr int kBwdWarps = kBwdThreads / 32;
constexpr int64_t kBwdMaxBlocks = 512;
constexpr int64_t kBwdSharedLimit = 48 * 1024;  // accumulators in shared memory up to this

template <class T>
__global__ void layernorm_forward_kernel(const T* x, const T* w, const T* b, float eps, T* y,
                                         float* mean, float* rstd, int64_t rows, int c) {
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const T* xr = x + row * c;
  float s = 0.0f;
  for (int i = lane; i < c; i += 32) s += to_float(xr[i]);
  const float m = warp_sum(s) / static_cast<float>(c);
  float v = 0.0f;
  for (int i = lane; i < c; i += 32) {
    const float d = to_float(xr[i]) - m;
    v += d * d;
  }
  const float var = warp_sum(v) / static_cast<float>(c);
  const float r = 1.0f / sqrtf(var + eps);
  T* yr = y + row * c;
  for (int i = lane; i < c; i += 32) {
    yr[i] = from_float<T>((to_float(xr[i]) - m) * r * to_float(w[i]) + to_float(b[i]));
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
}

// partial (when the parameter gradients are wanted): [gridDim.x][2 c] (dweight terms, then dbias
// terms). acc_in_shared: accumulate in dynamic shared memory and copy out at the end, else
// directly in this block's row of `partial`.
template <class T>
__global__ void layernorm_backward_kernel(const T* dy, const T* x, const T* w, const float* mean,
                                          const float* rstd, T* dx, float* partial,
                                          bool acc_in_shared, int64_t rows, int c) {
  extern __shared__ float acc_shared[];
  __shared__ float red[2][kBwdWarps][2];  // two slots: row k uses slot k % 2 (one sync per row)
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float* acc = nullptr;
  if (partial) {
    acc = acc_in_shared ? acc_shared : partial + blockIdx.x * int64_t(2 * c);
    // Each thread zeroes and later updates only columns i = tid + k * blockDim.x (and c + i).
    for (int i = tid; i < c; i += blockDim.x) {
      acc[i] = 0.0f;
      acc[c + i] = 0.0f;
    }
  }
  int slot = 0;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * c;
    const T* dyr = dy + row * c;
    const float m = mean[row], s = rstd[row];
    // dx = s (dnorm - mean(dnorm) - norm mean(dnorm norm)), dnorm = dy w.
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    if (dx) {
      float a = 0.0f, bn = 0.0f;
      for (int i = tid; i < c; i += blockDim.x) {
        const float norm = (to_float(xr[i]) - m) * s;
        const float dn = to_float(dyr[i]) * to_float(w[i]);
        a += dn;
        bn += dn * norm;
      }
      a = warp_sum(a);
      bn = warp_sum(bn);
      if (lane == 0) {
        red[slot][warp][0] = a;
        red[slot][warp][1] = bn;
      }
      __syncthreads();
      float ta = 0.0f, tb = 0.0f;
      for (int k = 0; k < kBwdWarps; ++k) {
        ta += red[slot][k][0];
        tb += red[slot][k][1];
      }
      dnorm_mean = ta / static_cast<float>(c);
      dnorm_norm_mean = tb / static_cast<float>(c);
      slot ^= 1;
    }
    for (int i = tid; i < c; i += blockDim.x) {
      const float dyv = to_float(dyr[i]);
      const float norm = (to_float(xr[i]) - m) * s;
      if (dx) {
        dx[row * c + i] =
            from_float<T>(s * (dyv * to_float(w[i]) - dnorm_mean - norm * dnorm_norm_mean));
      }
      if (acc) {
        acc[i] += dyv * norm;
        acc[c + i] += dyv;
      }
    }
  }
  if (acc && acc_in_shared) {
    float* out = partial + blockIdx.x * int64_t(2 * c);
    for (int i = tid; i < c; i += blockDim.x) {
      out[i] = acc[i];
      out[c + i] = acc[c + i];
    }
  }
}

template <class G>
__global__ void layernorm_params_finish_kernel(const float* partial, int64_t blocks, int c,
                                               G* dweight, G* dbias) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < c; i += gridDim.x * blockDim.x) {
    float sw = 0.0f, sb = 0.0f;
    for (int64_t k = 0; k < blocks; ++k) {
      sw += partial[k * 2 * c + i];
      sb += partial[k * 2 * c + c + i];
    }
    if (dweight) dweight[i] = from_float<G>(to_float(dweight[i]) + sw);
    if (dbias) dbias[i] = from_float<G>(to_float(dbias[i]) + sb);
  }
}

}  // namespace

void launch_layernorm_forward(int32_t dtype, const void* x, const void* weight, const void* bias,
                              float eps, void* y, float* mean, float* rstd, int64_t rows, int64_t c,
                              cudaStream_t stream) {
  if (rows == 0) return;
  const int rows_per_block = kFwdThreads / 32;
  const unsigned blocks = static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block);
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    layernorm_forward_kernel<T><<<blocks, kFwdThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias), eps,
        static_cast<T*>(y), mean, rstd, rows, static_cast<int>(c));
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_layernorm_backward(int32_t dtype, const void* dy, const void* x, const void* weight,
                               const float* mean, const float* rstd, void* dx, int32_t grad_dtype,
                               void* dweight, void* dbias, int64_t rows, int64_t c,
                               Scratch& scratch) {
  if (rows == 0) return;
  const cudaStream_t stream = scratch.stream();
  const bool want_params = dweight || dbias;
  const int64_t blocks = std::min(rows, kBwdMaxBlocks);
  float* partial = nullptr;
  bool acc_in_shared = false;
  size_t shared = 0;
  if (want_params) {
    partial = static_cast<float*>(scratch.get(sizeof(float) * 2 * c * blocks));
    acc_in_shared = int64_t(sizeof(float)) * 2 * c <= kBwdSharedLimit;
    if (acc_in_shared) shared = sizeof(float) * 2 * c;
  }
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    layernorm_backward_kernel<T><<<static_cast<unsigned>(blocks), kBwdThreads, shared, stream>>>(
        static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(weight), mean,
        rstd, static_cast<T*>(dx), partial, acc_in_shared, rows, static_cast<int>(c));
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
  if (!want_params) return;
  dispatch_float(grad_dtype, [&](auto tag) {
    using G = typename decltype(tag)::type;
    layernorm_params_finish_kernel<G><<<grid_for(c, 256), 256, 0, stream>>>(
        partial, blocks, static_cast<int>(c), static_cast<G*>(dweight), static_cast<G*>(dbias));
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace dspp::cuda
