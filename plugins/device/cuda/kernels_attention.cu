// device/cuda: causal self-attention core for the GPT-2 qkv layout [B, T, 3C], flash-attention
// style: the T x T probabilities are never stored. Forward walks the key tiles of a query tile
// with an online softmax (running max m and sum l per row, the output rescaled when m grows) in
// f32 and saves lse = m + log(l) per row; backward recomputes the probabilities from lse.
//
// Why our own kernels and not cuDNN's SDPA: the GPU machine has cuDNN 9.19 but, as far as
// /work/shared/GPU-MACHINE.md lists, not the header-only cudnn-frontend its graph API is meant to
// be used through, and the raw backend descriptors are verbose; more important, linking libcudnn
// would stop the plugin from loading on machines without it (the plugin must load everywhere,
// see CMakeLists.txt). These kernels need nothing beyond the CUDA runtime.
//
// Tiling: 64 query rows x 64 key rows per step, 256 threads as 16 x 16; thread (ty, tx) owns rows
// 4 ty .. 4 ty + 3 and the strided columns tx + 16 j (j < 4) of a 64 x 64 score tile, and columns
// tx + 16 j (j < HS / 16) of a 64 x HS output tile, so the row statistics of the online softmax
// are reduced over the 16 lanes of a half-warp with shuffles. Tiles are kept in shared memory in
// f32 (converted once on load): "row" tiles [64][HS + 1] read as broadcasts along a row and
// transposed "column" tiles [HS][65] read along consecutive columns; the odd strides keep the
// banks distinct. Arithmetic is f32 FMA on CUDA cores, also for bf16/f16 inputs: the same numbers
// for every dtype, at a fraction of what tensor cores would give (a tensor-core version is
// future work; for GPT-2 shapes attention is a small part of a step).
//
// Backward, deterministic without atomics: delta = rowsum(dy * y) first; then one kernel per key
// tile accumulates dK and dV over the query tiles at or after it, and another per query tile
// accumulates dQ over the key tiles up to it. Each output element is written by one thread once,
// at the cost of computing the score tiles twice.
#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

constexpr int kTile = 64;
constexpr int kThreads = 256;
constexpr int kPad = kTile + 1;  // row stride of the transposed [d][row] tiles

// Rows row0 .. row0 + 63 of src (row stride ld), columns [0, hs), into dst[r * (HS + 1) + d];
// zero past t_len and past hs.
template <int HS, class T>
__device__ __forceinline__ void load_rows(float* dst, const T* src, int64_t ld, int row0, int t_len,
                                          int hs) {
  for (int idx = threadIdx.x; idx < kTile * HS; idx += kThreads) {
    const int r = idx / HS, d = idx % HS, t = row0 + r;
    dst[r * (HS + 1) + d] = t < t_len && d < hs ? to_float(src[int64_t(t) * ld + d]) : 0.0f;
  }
}

// The same rows transposed: dst[d * kPad + r].
template <int HS, class T>
__device__ __forceinline__ void load_cols(float* dst, const T* src, int64_t ld, int row0, int t_len,
                                          int hs) {
  for (int idx = threadIdx.x; idx < kTile * HS; idx += kThreads) {
    const int r = idx / HS, d = idx % HS, t = row0 + r;
    dst[d * kPad + r] = t < t_len && d < hs ? to_float(src[int64_t(t) * ld + d]) : 0.0f;
  }
}

// Over the 16 lanes that share a row group (a half-warp).
__device__ __forceinline__ float group_max(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float group_sum(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int HS>
constexpr size_t forward_smem_floats() {
  return size_t(kTile) * (HS + 1) + 2 * size_t(HS) * kPad + size_t(kTile) * kPad;
}
template <int HS>
constexpr size_t backward_smem_floats() {
  return 2 * size_t(kTile) * (HS + 1) + 2 * size_t(HS) * kPad + size_t(kTile) * kPad + 2 * kTile;
}

// grid (B * n_head, query tiles), the tile with the most key tiles first.
template <class T, int HS>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(const T* qkv, T* y, float* lse, int t_len, int c, int n_head,
                             float scale) {
  constexpr int D = HS / 16;
  extern __shared__ float smem[];
  float* qs = smem;                   // [kTile][HS + 1]  queries
  float* kt = qs + kTile * (HS + 1);  // [HS][kPad]        keys, transposed
  float* vt = kt + HS * kPad;         // [HS][kPad]        values, transposed
  float* ps = vt + HS * kPad;         // [kTile][kPad]     probabilities (unnormalised)
  const int hs = c / n_head;
  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int qtile = gridDim.y - 1 - blockIdx.y;
  const int q0 = qtile * kTile;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t ld = 3 * int64_t(c);
  const T* base = qkv + int64_t(b) * t_len * ld + int64_t(h) * hs;

  load_rows<HS>(qs, base, ld, q0, t_len, hs);
  float o[4][D], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < D; ++j) o[i][j] = 0.0f;
  }

  for (int ktile = 0; ktile <= qtile; ++ktile) {
    const int k0 = ktile * kTile;
    __syncthreads();  // the previous step is done with kt, vt and ps
    load_cols<HS>(kt, base + c, ld, k0, t_len, hs);
    load_cols<HS>(vt, base + 2 * c, ld, k0, t_len, hs);
    __syncthreads();

    float s[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) s[i][j] = 0.0f;
    }
#pragma unroll 4
    for (int d = 0; d < hs; ++d) {
      float qv[4], kv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) qv[i] = qs[(ty * 4 + i) * (HS + 1) + d];
#pragma unroll
      for (int j = 0; j < 4; ++j) kv[j] = kt[d * kPad + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) s[i][j] += qv[i] * kv[j];
      }
    }

    // Causal mask and online softmax. Key 0 is in the first tile and never masked, so m is
    // finite from the first step on (also for padding rows past t_len).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int q = q0 + ty * 4 + i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = k0 + tx + 16 * j;
        s[i][j] = key <= q && key < t_len ? s[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      mx = group_max(mx);
      const float m_new = fmaxf(m[i], mx);
      const float corr = m[i] == -INFINITY ? 0.0f : expf(m[i] - m_new);
      float rs = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = expf(s[i][j] - m_new);  // 0 where masked
        ps[(ty * 4 + i) * kPad + tx + 16 * j] = p;
        rs += p;
      }
      rs = group_sum(rs);
      l[i] = l[i] * corr + rs;
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < D; ++j) o[i][j] *= corr;
    }
    __syncthreads();

    const int kend = min(kTile, t_len - k0);  // keys past t_len have p = 0
    for (int kk = 0; kk < kend; ++kk) {
      float pv[4], vv[D];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = ps[(ty * 4 + i) * kPad + kk];
#pragma unroll
      for (int j = 0; j < D; ++j) vv[j] = vt[(tx + 16 * j) * kPad + kk];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < D; ++j) o[i][j] += pv[i] * vv[j];
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int q = q0 + ty * 4 + i;
    if (q >= t_len) continue;
    const float inv = 1.0f / l[i];
    T* out = y + (int64_t(b) * t_len + q) * c + int64_t(h) * hs;
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const int col = tx + 16 * j;
      if (col < hs) out[col] = from_float<T>(o[i][j] * inv);
    }
    if (tx == 0) lse[int64_t(bh) * t_len + q] = m[i] + logf(l[i]);
  }
}

// delta[(b n_head + h) T + t] = sum_d dy[b, t, h hs + d] y[b, t, h hs + d]: one warp per row.
// (Equal to sum_t2 p dP, the softmax backward's row term, because y = sum_t2 p v.)
template <class T>
__global__ void attention_delta_kernel(const T* y, const T* dy, float* delta, int64_t rows,
                                       int t_len, int c, int n_head) {
  const int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= rows) return;
  const int hs = c / n_head;
  const int64_t bt = w / n_head;
  const int h = static_cast<int>(w % n_head);
  const int64_t b = bt / t_len, t = bt % t_len;
  const int64_t off = bt * c + int64_t(h) * hs;
  float s = 0.0f;
  for (int d = lane; d < hs; d += 32) s += to_float(dy[off + d]) * to_float(y[off + d]);
  s = warp_sum(s);
  if (lane == 0) delta[(b * n_head + h) * t_len + t] = s;
}

// dK, dV of one key tile: grid (B * n_head, key tiles); key tile 0 (the most query tiles) first.
template <class T, int HS>
__global__ void __launch_bounds__(kThreads)
    attention_backward_kv_kernel(const T* qkv, const T* dy, const float* lse, const float* delta,
                                 T* dqkv, int t_len, int c, int n_head, float scale) {
  constexpr int D = HS / 16;
  extern __shared__ float smem[];
  float* ks = smem;                   // [kTile][HS + 1]  keys
  float* vs = ks + kTile * (HS + 1);  // [kTile][HS + 1]  values
  float* qt = vs + kTile * (HS + 1);  // [HS][kPad]        queries, transposed
  float* dot = qt + HS * kPad;        // [HS][kPad]        dy, transposed
  float* ps = dot + HS * kPad;        // [kTile][kPad]     p, then dS (keys x queries)
  float* lse_s = ps + kTile * kPad;   // [kTile]
  float* delta_s = lse_s + kTile;     // [kTile]
  const int hs = c / n_head;
  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int ktile = blockIdx.y;
  const int k0 = ktile * kTile;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t ld = 3 * int64_t(c);
  const T* base = qkv + int64_t(b) * t_len * ld + int64_t(h) * hs;
  const T* dbase = dy + int64_t(b) * t_len * c + int64_t(h) * hs;

  load_rows<HS>(ks, base + c, ld, k0, t_len, hs);
  load_rows<HS>(vs, base + 2 * c, ld, k0, t_len, hs);
  float dk[4][D], dv[4][D];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < D; ++j) dk[i][j] = dv[i][j] = 0.0f;
  }

  const int ntiles = (t_len + kTile - 1) / kTile;
  for (int qtile = ktile; qtile < ntiles; ++qtile) {
    const int q0 = qtile * kTile;
    __syncthreads();
    load_cols<HS>(qt, base, ld, q0, t_len, hs);
    load_cols<HS>(dot, dbase, c, q0, t_len, hs);
    if (tid < kTile) {
      const int q = q0 + tid;
      lse_s[tid] = q < t_len ? lse[int64_t(bh) * t_len + q] : 0.0f;
      delta_s[tid] = q < t_len ? delta[int64_t(bh) * t_len + q] : 0.0f;
    }
    __syncthreads();

    // S^T = K Q^T and dP^T = V dY^T for this thread's 4 keys x 4 queries.
    float st[4][4], dpt[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) st[i][j] = dpt[i][j] = 0.0f;
    }
#pragma unroll 2
    for (int d = 0; d < hs; ++d) {
      float kv[4], vv[4], qv[4], gv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        kv[i] = ks[(ty * 4 + i) * (HS + 1) + d];
        vv[i] = vs[(ty * 4 + i) * (HS + 1) + d];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        qv[j] = qt[d * kPad + tx + 16 * j];
        gv[j] = dot[d * kPad + tx + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          st[i][j] += kv[i] * qv[j];
          dpt[i][j] += vv[i] * gv[j];
        }
      }
    }
    // p = exp(s - lse) where key <= query < t_len (key < t_len follows), else 0.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int key = k0 + ty * 4 + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int q = q0 + tx + 16 * j;
        const float p = key <= q && q < t_len ? expf(st[i][j] * scale - lse_s[tx + 16 * j]) : 0.0f;
        st[i][j] = p;
        ps[(ty * 4 + i) * kPad + tx + 16 * j] = p;
      }
    }
    __syncthreads();
    const int qend = min(kTile, t_len - q0);
    // dV += P^T dY
    for (int qq = 0; qq < qend; ++qq) {
      float pv[4], gv[D];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = ps[(ty * 4 + i) * kPad + qq];
#pragma unroll
      for (int j = 0; j < D; ++j) gv[j] = dot[(tx + 16 * j) * kPad + qq];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < D; ++j) dv[i][j] += pv[i] * gv[j];
      }
    }
    __syncthreads();
    // dS = P (dP - delta); dK += dS^T Q (times scale at the end)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        ps[(ty * 4 + i) * kPad + tx + 16 * j] = st[i][j] * (dpt[i][j] - delta_s[tx + 16 * j]);
      }
    }
    __syncthreads();
    for (int qq = 0; qq < qend; ++qq) {
      float sv[4], qv[D];
#pragma unroll
      for (int i = 0; i < 4; ++i) sv[i] = ps[(ty * 4 + i) * kPad + qq];
#pragma unroll
      for (int j = 0; j < D; ++j) qv[j] = qt[(tx + 16 * j) * kPad + qq];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < D; ++j) dk[i][j] += sv[i] * qv[j];
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int key = k0 + ty * 4 + i;
    if (key >= t_len) continue;
    T* row = dqkv + (int64_t(b) * t_len + key) * ld + int64_t(h) * hs;
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const int col = tx + 16 * j;
      if (col < hs) {
        row[c + col] = from_float<T>(dk[i][j] * scale);
        row[2 * c + col] = from_float<T>(dv[i][j]);
      }
    }
  }
}

// dQ of one query tile: grid (B * n_head, query tiles), the longest rows first.
template <class T, int HS>
__global__ void __launch_bounds__(kThreads)
    attention_backward_q_kernel(const T* qkv, const T* dy, const float* lse, const float* delta,
                                T* dqkv, int t_len, int c, int n_head, float scale) {
  constexpr int D = HS / 16;
  extern __shared__ float smem[];
  float* qs = smem;                    // [kTile][HS + 1]  queries
  float* dos = qs + kTile * (HS + 1);  // [kTile][HS + 1]  dy
  float* kt = dos + kTile * (HS + 1);  // [HS][kPad]        keys, transposed
  float* vt = kt + HS * kPad;          // [HS][kPad]        values, transposed
  float* ps = vt + HS * kPad;          // [kTile][kPad]     dS (queries x keys)
  float* lse_s = ps + kTile * kPad;    // [kTile]
  float* delta_s = lse_s + kTile;      // [kTile]
  const int hs = c / n_head;
  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int qtile = gridDim.y - 1 - blockIdx.y;
  const int q0 = qtile * kTile;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t ld = 3 * int64_t(c);
  const T* base = qkv + int64_t(b) * t_len * ld + int64_t(h) * hs;
  const T* dbase = dy + int64_t(b) * t_len * c + int64_t(h) * hs;

  load_rows<HS>(qs, base, ld, q0, t_len, hs);
  load_rows<HS>(dos, dbase, c, q0, t_len, hs);
  if (tid < kTile) {
    const int q = q0 + tid;
    lse_s[tid] = q < t_len ? lse[int64_t(bh) * t_len + q] : 0.0f;
    delta_s[tid] = q < t_len ? delta[int64_t(bh) * t_len + q] : 0.0f;
  }
  float dq[4][D];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < D; ++j) dq[i][j] = 0.0f;
  }

  for (int ktile = 0; ktile <= qtile; ++ktile) {
    const int k0 = ktile * kTile;
    __syncthreads();
    load_cols<HS>(kt, base + c, ld, k0, t_len, hs);
    load_cols<HS>(vt, base + 2 * c, ld, k0, t_len, hs);
    __syncthreads();

    float s[4][4], dp[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) s[i][j] = dp[i][j] = 0.0f;
    }
#pragma unroll 2
    for (int d = 0; d < hs; ++d) {
      float qv[4], gv[4], kv[4], vv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        qv[i] = qs[(ty * 4 + i) * (HS + 1) + d];
        gv[i] = dos[(ty * 4 + i) * (HS + 1) + d];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        kv[j] = kt[d * kPad + tx + 16 * j];
        vv[j] = vt[d * kPad + tx + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          s[i][j] += qv[i] * kv[j];
          dp[i][j] += gv[i] * vv[j];
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int q = q0 + ty * 4 + i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = k0 + tx + 16 * j;
        const float p = key <= q && q < t_len ? expf(s[i][j] * scale - lse_s[ty * 4 + i]) : 0.0f;
        ps[(ty * 4 + i) * kPad + tx + 16 * j] = p * (dp[i][j] - delta_s[ty * 4 + i]);
      }
    }
    __syncthreads();
    const int kend = min(kTile, t_len - k0);
    for (int kk = 0; kk < kend; ++kk) {
      float sv[4], kv[D];
#pragma unroll
      for (int i = 0; i < 4; ++i) sv[i] = ps[(ty * 4 + i) * kPad + kk];
#pragma unroll
      for (int j = 0; j < D; ++j) kv[j] = kt[(tx + 16 * j) * kPad + kk];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < D; ++j) dq[i][j] += sv[i] * kv[j];
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int q = q0 + ty * 4 + i;
    if (q >= t_len) continue;
    T* row = dqkv + (int64_t(b) * t_len + q) * ld + int64_t(h) * hs;
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const int col = tx + 16 * j;
      if (col < hs) row[col] = from_float<T>(dq[i][j] * scale);
    }
  }
}

// Calls fn(std::integral_constant<int, HS>) with the smallest supported HS >= hs.
template <class Fn>
void dispatch_head_size(int64_t hs, Fn&& fn) {
  if (hs <= 32) {
    fn(std::integral_constant<int, 32>{});
  } else if (hs <= 64) {
    fn(std::integral_constant<int, 64>{});
  } else {
    fn(std::integral_constant<int, 128>{});
  }
}

}  // namespace

void launch_attention_forward(int32_t dtype, const void* qkv, void* y, float* lse, int64_t b,
                              int64_t t, int64_t c, int64_t n_head, cudaStream_t stream) {
  if (b == 0 || t == 0) return;
  const float scale = 1.0f / sqrtf(static_cast<float>(c / n_head));  // as the CPU layer
  const dim3 grid(static_cast<unsigned>(b * n_head),
                  static_cast<unsigned>((t + kTile - 1) / kTile));
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_head_size(c / n_head, [&](auto hs_tag) {
      constexpr int HS = decltype(hs_tag)::value;
      const size_t smem = forward_smem_floats<HS>() * sizeof(float);
      // Set on every launch: the attribute is per device, and the call costs next to nothing.
      DSPP_KERNEL_CHECK(cudaFuncSetAttribute(attention_forward_kernel<T, HS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem)));
      attention_forward_kernel<T, HS><<<grid, kThreads, smem, stream>>>(
          static_cast<const T*>(qkv), static_cast<T*>(y), lse, static_cast<int>(t),
          static_cast<int>(c), static_cast<int>(n_head), scale);
    });
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_attention_backward(int32_t dtype, const void* qkv, const void* y, const float* lse,
                               const void* dy, void* dqkv, int64_t b, int64_t t, int64_t c,
                               int64_t n_head, Scratch& scratch) {
  if (b == 0 || t == 0) return;
  const cudaStream_t stream = scratch.stream();
  const float scale = 1.0f / sqrtf(static_cast<float>(c / n_head));
  const int64_t rows = b * t * n_head;
  float* delta = static_cast<float*>(scratch.get(sizeof(float) * rows));
  const dim3 grid(static_cast<unsigned>(b * n_head),
                  static_cast<unsigned>((t + kTile - 1) / kTile));
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t threads = rows * 32;
    attention_delta_kernel<T><<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(
        static_cast<const T*>(y), static_cast<const T*>(dy), delta, rows, static_cast<int>(t),
        static_cast<int>(c), static_cast<int>(n_head));
    DSPP_KERNEL_CHECK(cudaGetLastError());
    dispatch_head_size(c / n_head, [&](auto hs_tag) {
      constexpr int HS = decltype(hs_tag)::value;
      const size_t smem = backward_smem_floats<HS>() * sizeof(float);
      DSPP_KERNEL_CHECK(cudaFuncSetAttribute(attention_backward_kv_kernel<T, HS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem)));
      DSPP_KERNEL_CHECK(cudaFuncSetAttribute(attention_backward_q_kernel<T, HS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem)));
      attention_backward_kv_kernel<T, HS><<<grid, kThreads, smem, stream>>>(
          static_cast<const T*>(qkv), static_cast<const T*>(dy), lse, delta, static_cast<T*>(dqkv),
          static_cast<int>(t), static_cast<int>(c), static_cast<int>(n_head), scale);
      DSPP_KERNEL_CHECK(cudaGetLastError());
      attention_backward_q_kernel<T, HS><<<grid, kThreads, smem, stream>>>(
          static_cast<const T*>(qkv), static_cast<const T*>(dy), lse, delta, static_cast<T*>(dqkv),
          static_cast<int>(t), static_cast<int>(c), static_cast<int>(n_head), scale);
    });
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace dspp::cuda
