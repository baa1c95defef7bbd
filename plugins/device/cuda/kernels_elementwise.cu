// device/cuda: elementwise kernels (GELU, residual add, scale, fill, casts), the GEMM epilogue
// cuBLASLt does not fuse (bias + GELU) and Linear's bias gradient (column sums).
//
// Elementwise kernels are grid-stride loops with one element per thread and iteration; they are
// memory-bound and every element is independent, so results do not depend on the launch shape.
#include <dspp/philox.h>

#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void gelu_forward_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = from_float<T>(gelu(to_float(x[i])));
  }
}

template <class T>
__global__ void gelu_backward_kernel(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dx[i] = from_float<T>(gelu_grad(to_float(x[i])) * to_float(dy[i]));
  }
}

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
  }
}

template <class T>
__global__ void scale_kernel(const T* x, float alpha, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(alpha * to_float(x[i]));
  }
}

template <class T>
__global__ void fill_kernel(T* out, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = value;
  }
}

// One thread per element: each computes its element's Philox block (the four lanes of a block are
// computed by four threads; 10 rounds of two 32-bit multiplies are cheap next to the store).
template <class T>
__global__ void random_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, bool normal,
                              float a, float span) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t e = offset + static_cast<uint64_t>(i);
    const philox::Words b = philox::block_of(seed, e);
    float v;
    if (!normal) {
      v = __fmaf_rn(span, philox::unit_float(b.w[e & 3]), a);
    } else {
      const int p = static_cast<int>((e & 3) >> 1);
      const float u1 = static_cast<float>((b.w[2 * p] >> 8) + 1) * 5.9604644775390625e-8f;
      const float u2 = philox::unit_float(b.w[2 * p + 1]);
      const float r = sqrtf(-2.0f * logf(u1));
      float s, c;
      sincospif(2.0f * u2, &s, &c);
      v = __fmaf_rn(span, r * ((e & 1) ? s : c), a);
    }
    out[i] = from_float<T>(v);
  }
}

template <class In, class Out>
__global__ void cast_kernel(const In* x, Out* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = from_float<Out>(to_float(x[i]));
  }
}

// c [m, n] = gelu?(c + bias?); pre receives the GELU input.
template <class T>
__global__ void bias_gelu_kernel(T* c, const T* bias, T* pre, bool apply_gelu, int64_t m,
                                 int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = to_float(c[i]);
    if (bias) v += to_float(bias[i % n]);
    if (pre) pre[i] = from_float<T>(v);
    c[i] = from_float<T>(apply_gelu ? gelu(v) : v);
  }
}

// Column sums in two passes with a chunking that depends on the shape only, so the summation
// order (and the result) is fixed: pass 1 sums chunk `blockIdx.y` of the rows for 32 columns
// (8 row strides per column, then the 8 partial sums in order); pass 2 adds the chunks in order.
constexpr int kColRows = 8;

template <class T>
__global__ void column_partials_kernel(const T* dy, float* partial, int64_t m, int64_t n,
                                       int64_t rows_per_chunk) {
  __shared__ float red[kColRows][33];
  const int64_t col = blockIdx.x * int64_t(32) + threadIdx.x;
  const int64_t r0 = blockIdx.y * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < m ? r0 + rows_per_chunk : m;
  float s = 0.0f;
  if (col < n) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColRows) s += to_float(dy[r * n + col]);
  }
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    float t = 0.0f;
    for (int k = 0; k < kColRows; ++k) t += red[k][threadIdx.x];
    partial[blockIdx.y * n + col] = t;
  }
}

template <class G>
__global__ void column_finish_kernel(const float* partial, G* db, int64_t chunks, int64_t n,
                                     bool accumulate) {
  for (int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; col < n;
       col += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * n + col];
    db[col] = from_float<G>(accumulate ? to_float(db[col]) + s : s);
  }
}

}  // namespace

void launch_gelu_forward(int32_t dtype, const void* x, void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    gelu_forward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x),
                                                                           static_cast<T*>(y), n);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_gelu_backward(int32_t dtype, const void* x, const void* dy, void* dx, int64_t n,
                          cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    gelu_backward_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), n);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_add(int32_t dtype, const void* a, const void* b, void* out, int64_t n,
                cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_scale(int32_t dtype, const void* x, float alpha, void* out, int64_t n,
                  cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    scale_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x), alpha,
                                                                    static_cast<T*>(out), n);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_fill(int32_t dtype, void* out, double value, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (dtype == DSPP_I32) {
    fill_kernel<int32_t><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<int32_t*>(out), static_cast<int32_t>(value), n);
  } else {
    dispatch_float(dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      // The value converted once on the host (round to nearest even, as the kernels do).
      T v;
      if constexpr (std::is_same_v<T, float>) {
        v = static_cast<float>(value);
      } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        v = __float2bfloat16_rn(static_cast<float>(value));
      } else {
        v = __float2half_rn(static_cast<float>(value));
      }
      fill_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<T*>(out), v, n);
    });
  }
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_fill_random(int32_t dtype, void* out, int64_t n, uint64_t seed, uint64_t offset,
                        bool normal, float a, float span, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    random_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<T*>(out), n, seed,
                                                                     offset, normal, a, span);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_cast(int32_t x_dtype, const void* x, int32_t out_dtype, void* out, int64_t n,
                 cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(x_dtype, [&](auto in_tag) {
    using In = typename decltype(in_tag)::type;
    dispatch_float(out_dtype, [&](auto out_tag) {
      using Out = typename decltype(out_tag)::type;
      cast_kernel<In, Out><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
          static_cast<const In*>(x), static_cast<Out*>(out), n);
    });
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_bias_gelu(int32_t dtype, void* c, const void* bias, void* pre, bool apply_gelu,
                      int64_t m, int64_t n, cudaStream_t stream) {
  if (m * n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    bias_gelu_kernel<T><<<grid_for(m * n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(c), static_cast<const T*>(bias), static_cast<T*>(pre), apply_gelu, m, n);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_bias_grad(int32_t dy_dtype, const void* dy, int32_t db_dtype, void* db, int64_t m,
                      int64_t n, bool accumulate, Scratch& scratch) {
  if (n == 0) return;
  const cudaStream_t stream = scratch.stream();
  // At most 256 chunks of at least 64 rows: enough blocks to fill the GPU for training shapes,
  // and a partial buffer of at most 256 rows.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((m + 63) / 64, 256));
  const int64_t rows_per_chunk = std::max<int64_t>(1, (m + chunks - 1) / chunks);
  float* partial = static_cast<float*>(scratch.get(sizeof(float) * chunks * n));
  const dim3 grid(static_cast<unsigned>((n + 31) / 32), static_cast<unsigned>(chunks));
  dispatch_float(dy_dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    column_partials_kernel<T><<<grid, dim3(32, kColRows), 0, stream>>>(
        static_cast<const T*>(dy), partial, m, n, rows_per_chunk);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
  dispatch_float(db_dtype, [&](auto tag) {
    using G = typename decltype(tag)::type;
    column_finish_kernel<G><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        partial, static_cast<G*>(db), chunks, n, accumulate);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace dspp::cuda
