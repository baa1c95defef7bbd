// device/cuda: causal self-attention core for the GPT-2 qkv layout [B, T, 3C], flash-attention
// style: the T x T probabilities are never stored. Forward walks the key tiles of a query tile
// with an online softmax (running max m and sum l per row, the output rescaled when m grows) in
// f32 and saves lse = m + log(l) per row; backward recomputes the probabilities from lse.
// Contract of every kernel here: y in qkv's dtype, lse f32 in natural log, a query t sees the
// keys <= t, scores scaled by 1/sqrt(hs), backward deterministic (below).
//
// Why our own kernels and not cuDNN's SDPA: the GPU machine has cuDNN 9.19 but, as far as
// /work/shared/GPU-MACHINE.md lists, not the header-only cudnn-frontend its graph API is meant to
// be used through, and the raw backend descriptors are verbose; more important, linking libcudnn
// would stop the plugin from loading on machines without it (the plugin must load everywhere,
// see CMakeLists.txt). These kernels need nothing beyond the CUDA runtime.
//
// Two implementations, chosen per call in the launch functions at the end:
// - Tensor cores (namespace tc) for bf16/f16 with head size 64 or 128 (GPT-2 124M has 64), all
//   pointers 16-byte aligned, compute capability >= 8.0. Warp-level mma.sync.m16n8k16 (inline
//   PTX; T inputs, f32 accumulate) computes S = Q K^T and O += P V forward, and S, dP = dY V^T,
//   dV += P^T dY, dK += dS^T Q, dQ += dS K backward; P and dS are rounded to T just before their
//   products (as FlashAttention-2 does), everything else (scores, mask, softmax statistics, lse,
//   delta, every accumulator) is f32. mma.sync rather than nvcuda::wmma because its register
//   layout is specified: the online softmax and the causal mask need each accumulator's row and
//   column, and the score accumulators of two 8-key tiles are, repacked, exactly the A operand of
//   the following product, with no trip through shared memory (wmma's fragments are opaque).
//   Not wgmma (Hopper's asynchronous warpgroup MMA): it needs shared-memory descriptors, swizzled
//   layouts and warpgroup pipelining; mma.sync runs on sm_80 and later and already moves the
//   attention off the CUDA cores (measured below). Blocks of 4 warps own a 64-row tile, each warp
//   16 rows; tiles are staged in shared memory as T ([64][hs + 8]: the 16-byte skew keeps
//   ldmatrix free of bank conflicts) by cp.async, double-buffered so the next tile loads while
//   this one is multiplied, and read into fragments by ldmatrix (.trans where the operand is
//   the tile itself rather than its transpose). Padding rows past T are zero-filled by the copy
//   itself (nothing read); masked and padded scores are replaced (a select, never a multiply) by
//   -inf forward, so P is exactly 0, and by 0 backward, so whatever a masked product held (a
//   future key's value, inf, NaN) never reaches a sum. Score groups wholly above the diagonal
//   are skipped. Smem: forward 5 tiles (45 KiB at hs 64, 85 KiB at 128), backward 6 (54/102
//   KiB, + 1 KiB of lse and delta for dK/dV), set with cudaFuncSetAttribute.
// - CUDA cores (SIMT) for f32, the other head sizes (up to 128, zero-padded to 32/64/128), and
//   for every dtype under DSPP_ATTENTION=simt: f32 FMA with tiles converted to f32 in shared
//   memory, described next.
//
// DSPP_ATTENTION=simt (environment, read once per process at the first attention call) sends
// bf16/f16 to the CUDA-core kernels too: a way around a tensor-core regression without a rebuild.
// Unset, or any other value: the dispatch above.
//
// Measured on the H200 (bench/gpu_kernels.cpp: B 8, T 1024, C 768, 12 heads, hs 64, bf16; FLOPs
// counted as 4 B nh T^2 hs / 2 forward, 2.5 x that backward): forward 0.593 -> 0.082 ms
// (21.7 -> 157 TFLOP/s), backward 1.979 -> 0.296 ms (16.3 -> 109 TFLOP/s) from SIMT to tensor
// cores, i.e. 2.57 -> 0.38 ms per layer.
//
// SIMT tiling: 64 query rows x 64 key rows per step, 256 threads as 16 x 16; thread (ty, tx) owns
// rows 4 ty .. 4 ty + 3 and the strided columns tx + 16 j (j < 4) of a 64 x 64 score tile, and
// columns tx + 16 j (j < HS / 16) of a 64 x HS output tile, so the row statistics of the online
// softmax are reduced over the 16 lanes of a half-warp with shuffles. Tiles are kept in shared
// memory in f32 (converted once on load): "row" tiles [64][HS + 1] read as broadcasts along a row
// and transposed "column" tiles [HS][65] read along consecutive columns; the odd strides keep the
// banks distinct. The same numbers for every dtype.
//
// Backward, deterministic without atomics (both implementations): delta = rowsum(dy * y) first;
// then one kernel per key tile accumulates dK and dV over the query tiles at or after it, and
// another per query tile accumulates dQ over the key tiles up to it. Each output element is
// accumulated by one thread (SIMT) or in one lane's mma accumulators (tensor cores) over a fixed
// sequence of steps and written once, so the bits are the same from run to run, at the cost of
// computing the score tiles twice.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

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

// ---- tensor-core kernels (bf16/f16, head size 64 or 128) ----------------------------------------
//
// Warp-level mma.sync.m16n8k16 (bf16/f16 in, f32 accumulate) on 64-row tiles, 4 warps of 16 rows
// each. Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), g = lane / 4,
// i = lane % 4: A (16 x 16) a0 = A[g][2i, 2i+1], a1 = A[g+8][2i..], a2 = A[g][2i+8..],
// a3 = A[g+8][2i+8..]; B (16 x 8) b0 = B[2i, 2i+1][g], b1 = B[2i+8, 2i+9][g]; C (16 x 8)
// c0, c1 = C[g][2i, 2i+1], c2, c3 = C[g+8][2i, 2i+1]. So the accumulators of two adjacent 8-column
// score tiles, rounded to T and packed in pairs, are exactly the A fragment of the next product
// over those 16 columns (P V, P^T dY, dS K, dS^T Q) with no trip through shared memory; the
// reason for mma.sync over nvcuda::wmma, whose accumulator layout is opaque (the row max/sum of
// the softmax and the causal mask need to know which row and column each value is).
// Operands come from shared memory by ldmatrix (x4: four 8 x 8 b16 matrices, a row address per
// lane): plain for A fragments and for B = M^T of a row-major M, .trans for B = M itself.
namespace tc {

constexpr int kRows = 64;  // rows of a query or key tile
constexpr int kWarps = 4;  // each owns 16 rows of the block's tile
constexpr int kThreads = 32 * kWarps;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kRows == kTile, "the launches size the grid in kTile rows");

// Shared-memory tiles are [kRows][HS + 8] elements of T: the 16-byte row skew puts the 8 rows an
// ldmatrix phase reads (16 bytes each) in 8 different 4-bank groups, so no bank conflicts.
template <int HS>
constexpr int kLd = HS + 8;
template <int HS>
constexpr size_t tile_bytes() {
  return size_t(kRows) * kLd<HS> * 2;
}
// forward: Q + 2 x (K, V); backward dK/dV: K, V + 2 x (Q, dY) + 2 x (lse, delta); dQ: Q, dY +
// 2 x (K, V).
template <int HS>
constexpr size_t forward_smem() {
  return 5 * tile_bytes<HS>();
}
template <int HS>
constexpr size_t backward_kv_smem() {
  return 6 * tile_bytes<HS>() + 4 * kRows * sizeof(float);
}
template <int HS>
constexpr size_t backward_q_smem() {
  return 6 * tile_bytes<HS>();
}
static_assert(backward_kv_smem<128>() <= 227 * 1024, "over the per-block shared memory of sm_90");

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; with full == false nothing is read and the 16 bytes
// are zero-filled (src must still be a valid address).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(full ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// The lane's ldmatrix row address for, in a row-major tile with row stride LD elements:
// - a_frag: the A fragment of the 16 x 16 block at (r0, c0); also the B fragments (.trans) of two
//   8-column tiles when the block is B[k][n] itself (k = rows r0.., n = columns c0..): r[0], r[1]
//   = b0, b1 of columns c0.., r[2], r[3] = b0, b1 of columns c0 + 8..;
// - bt_frag: the B fragments of two 8-column tiles of B = M^T (n = rows r0.. of M, k = columns
//   c0.. of M): r[0], r[1] = b0, b1 of n = r0.., r[2], r[3] = b0, b1 of n = r0 + 8...
template <int LD, class T>
__device__ __forceinline__ uint32_t a_frag(const T* tile, int r0, int c0, int lane) {
  return smem_addr(tile + (r0 + (lane & 15)) * LD + c0 + (lane >> 4) * 8);
}
template <int LD, class T>
__device__ __forceinline__ uint32_t bt_frag(const T* tile, int r0, int c0, int lane) {
  return smem_addr(tile + (r0 + (lane >> 4) * 8 + (lane & 7)) * LD + c0 + ((lane >> 3) & 1) * 8);
}

// d += a b: m16n8k16, T (bf16 or f16) inputs, f32 accumulate.
template <class T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  // Never launched below sm_80 (the launch checks the device); keeps older targets compiling.
  (void)d, (void)a, (void)b0, (void)b1;
  __trap();
#endif
}

// Two floats rounded (nearest even) to T and packed, lo in the low 16 bits (the lower column).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t u;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&u, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&u, &v, 4);
  }
  return u;
}
// Two adjacent elements of T (4-byte aligned).
template <class T>
__device__ __forceinline__ void store2(T* p, float lo, float hi) {
  *reinterpret_cast<uint32_t*>(p) = pack2<T>(lo, hi);
}

// Rows row0 .. row0 + 63 of src (row stride ld elements, HS columns) into the tile dst, with
// cp.async; rows at or past t_len are zero-filled without reading. src is the head's row 0.
template <int HS, class T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t ld, int row0, int t_len) {
  constexpr int kChunks = HS / 8;  // 16-byte pieces of a row
  static_assert(kRows * kChunks % kThreads == 0, "whole passes");
#pragma unroll
  for (int pass = 0; pass < kRows * kChunks / kThreads; ++pass) {
    const int idx = pass * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kChunks, ch = idx % kChunks, t = row0 + r;
    const bool in = t < t_len;
    cp_async16(smem_addr(dst + r * kLd<HS> + ch * 8), src + (in ? int64_t(t) * ld : 0) + ch * 8,
               in);
  }
}

// grid (B * n_head, query tiles), the tile with the most key tiles first. Warp w owns query rows
// q0 + 16 w .. + 15; per key tile: S = Q K^T (16 x 64 per warp), mask, online softmax in f32
// (base 2: scores pre-multiplied by scale log2(e)), O = O corr + round(P) V.
template <class T, int HS>
__global__ void __launch_bounds__(kThreads)
    attention_forward_tc_kernel(const T* qkv, T* y, float* lse, int t_len, int c, int n_head,
                                float scale_log2) {
  constexpr int LD = kLd<HS>, KD = HS / 16, ND = HS / 8;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* qs = reinterpret_cast<T*>(tc_smem);  // [kRows][LD]
  T* ks = qs + kRows * LD;                // [2][kRows][LD]
  T* vs = ks + 2 * kRows * LD;            // [2][kRows][LD]
  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int qtile = gridDim.y - 1 - blockIdx.y, q0 = qtile * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, i4 = lane % 4;
  const int64_t ld = 3 * int64_t(c);
  const T* base = qkv + int64_t(b) * t_len * ld + int64_t(h) * HS;
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

  load_tile<HS>(qs, base, ld, q0, t_len);
  load_tile<HS>(ks, base + c, ld, 0, t_len);
  load_tile<HS>(vs, base + 2 * c, ld, 0, t_len);
  cp_async_commit();

  uint32_t qf[KD][4];
  float o[ND][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
  for (int j = 0; j < ND; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

  for (int kt = 0; kt <= qtile; ++kt) {
    const int buf = kt & 1;
    if (kt < qtile) {  // prefetch the next K, V tiles into the other buffer
      load_tile<HS>(ks + (buf ^ 1) * kRows * LD, base + c, ld, (kt + 1) * kRows, t_len);
      load_tile<HS>(vs + (buf ^ 1) * kRows * LD, base + 2 * c, ld, (kt + 1) * kRows, t_len);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) ldsm_x4(qf[kk], a_frag<LD>(qs, warp * 16, kk * 16, lane));
    }
    const T* kb = ks + buf * kRows * LD;
    const T* vb = vs + buf * kRows * LD;
    const int k0 = kt * kRows;
    // On the diagonal tile the 16-key groups after the warp's rows are all masked: skipped (their
    // scores stay 0 and are masked below, so P is 0 there either way).
    const int groups = kt == qtile ? warp + 1 : 4;

    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
      for (int jp = 0; jp < 4; ++jp) {
        if (jp < groups) {
          uint32_t r[4];
          ldsm_x4(r, bt_frag<LD>(kb, jp * 16, kk * 16, lane));
          mma<T>(s[2 * jp], qf[kk], r[0], r[1]);
          mma<T>(s[2 * jp + 1], qf[kk], r[2], r[3]);
        }
      }
    }

    // Mask (a query t sees keys <= t, keys < t_len), scale, row max over the quad that shares a
    // row. Every row sees key k0 (k0 <= q0 <= its row, k0 < t_len), so the max is finite; the
    // guard only keeps exp2f away from inf - inf.
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + 8 * j + 2 * i4 + (e & 1);
        const bool ok = key <= row[e >> 1] && key < t_len;
        s[j][e] = ok ? s[j][e] * scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
      }
    }
    float mu[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      mu[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
      const float corr = exp2f(m[r] - mu[r]);  // 0 on the first tile (m = -inf)
      m[r] = mx[r];
      l[r] *= corr;  // this lane's part of the row sum; the quad's parts are added at the end
#pragma unroll
      for (int j = 0; j < ND; ++j) {
        o[j][2 * r] *= corr;
        o[j][2 * r + 1] *= corr;
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - mu[e >> 1]);  // exactly 0 where masked
        l[e >> 1] += s[j][e];
      }
    }

    // O += round(P) V over 16 keys at a time: P's accumulators repacked as the A fragment.
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      if (kc < groups) {
        const uint32_t a[4] = {pack2<T>(s[2 * kc][0], s[2 * kc][1]),
                               pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                               pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                               pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
        for (int dp = 0; dp < ND / 2; ++dp) {
          uint32_t r[4];
          ldsm_x4_trans(r, a_frag<LD>(vb, kc * 16, dp * 16, lane));
          mma<T>(o[2 * dp], a, r[0], r[1]);
          mma<T>(o[2 * dp + 1], a, r[2], r[3]);
        }
      }
    }
    __syncthreads();  // all warps are done with this buffer before it is refilled
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    if (row[r] >= t_len) continue;
    const float inv = 1.0f / l[r];
    T* out = y + (int64_t(b) * t_len + row[r]) * c + int64_t(h) * HS + 2 * i4;
#pragma unroll
    for (int j = 0; j < ND; ++j) store2(out + 8 * j, o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
    if (i4 == 0) lse[int64_t(bh) * t_len + row[r]] = m[r] * kLn2 + logf(l[r]);
  }
}

// dK, dV of one key tile: grid (B * n_head, key tiles). Warp w owns keys k0 + 16 w .. + 15 and
// walks the query tiles at or after the key tile 16 queries at a time: S^T = K Q^T and
// dP^T = V dY^T (16 x 16), P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta), then
// dV += round(P^T) dY and dK += round(dS^T) Q, each output element in one lane's registers.
template <class T, int HS>
__global__ void __launch_bounds__(kThreads)
    attention_backward_kv_tc_kernel(const T* qkv, const T* dy, const float* lse, const float* delta,
                                    T* dqkv, int t_len, int c, int n_head, float scale,
                                    float scale_log2) {
  constexpr int LD = kLd<HS>, KD = HS / 16, ND = HS / 8;
  // K and V fragments stay in registers for HS 64; for 128 they are re-read from shared memory
  // (dK and dV alone are 128 f32 registers a lane there).
  constexpr bool kHoldKV = HS <= 64;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* ks = reinterpret_cast<T*>(tc_smem);                          // [kRows][LD]
  T* vs = ks + kRows * LD;                                        // [kRows][LD]
  T* qs = vs + kRows * LD;                                        // [2][kRows][LD]
  T* ds_ = qs + 2 * kRows * LD;                                   // [2][kRows][LD]  dy
  float* lse_s = reinterpret_cast<float*>(ds_ + 2 * kRows * LD);  // [2][kRows], log2 units
  float* delta_s = lse_s + 2 * kRows;                             // [2][kRows]
  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int ktile = blockIdx.y, k0 = ktile * kRows;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, i4 = lane % 4;
  const int64_t ld = 3 * int64_t(c);
  const T* base = qkv + int64_t(b) * t_len * ld + int64_t(h) * HS;
  const T* dbase = dy + int64_t(b) * t_len * c + int64_t(h) * HS;
  const float* lse_row = lse + int64_t(bh) * t_len;
  const float* delta_row = delta + int64_t(bh) * t_len;
  const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  const int ntiles = (t_len + kRows - 1) / kRows;

  // The query tile's Q, dY (cp.async) and lse, delta (plain loads, read after the barrier).
  auto load_queries = [&](int qt, int buf) {
    load_tile<HS>(qs + buf * kRows * LD, base, ld, qt * kRows, t_len);
    load_tile<HS>(ds_ + buf * kRows * LD, dbase, c, qt * kRows, t_len);
    const int q = qt * kRows + tid % kRows;
    if (tid < kRows) {
      lse_s[buf * kRows + tid] = q < t_len ? lse_row[q] * kLog2e : 0.0f;
    } else {
      delta_s[buf * kRows + tid - kRows] = q < t_len ? delta_row[q] : 0.0f;
    }
  };
  static_assert(kThreads == 2 * kRows, "lse by one half of the block, delta by the other");

  load_tile<HS>(ks, base + c, ld, k0, t_len);
  load_tile<HS>(vs, base + 2 * c, ld, k0, t_len);
  load_queries(ktile, 0);
  cp_async_commit();

  uint32_t kf[kHoldKV ? KD : 1][4], vf[kHoldKV ? KD : 1][4];
  (void)kf, (void)vf;  // unused when !kHoldKV
  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.0f;
  }

  for (int qt = ktile; qt < ntiles; ++qt) {
    const int buf = (qt - ktile) & 1;
    if (qt + 1 < ntiles) {
      load_queries(qt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if constexpr (kHoldKV) {
      if (qt == ktile) {
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
          ldsm_x4(kf[kk], a_frag<LD>(ks, warp * 16, kk * 16, lane));
          ldsm_x4(vf[kk], a_frag<LD>(vs, warp * 16, kk * 16, lane));
        }
      }
    }
    const T* qb = qs + buf * kRows * LD;
    const T* db = ds_ + buf * kRows * LD;
    const float* lse_b = lse_s + buf * kRows;
    const float* delta_b = delta_s + buf * kRows;
    const int q0 = qt * kRows;
#pragma unroll 1
    for (int cq = qt == ktile ? warp : 0; cq < 4; ++cq) {
      // Query groups before the warp's keys (diagonal tile) are masked whole: started after.
      if (q0 + cq * 16 >= t_len) break;  // the rest is padding
      float st[2][4], dpt[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t ka[4], va[4], r[4];
        if constexpr (kHoldKV) {
#pragma unroll
          for (int e = 0; e < 4; ++e) ka[e] = kf[kk][e], va[e] = vf[kk][e];
        } else {
          ldsm_x4(ka, a_frag<LD>(ks, warp * 16, kk * 16, lane));
          ldsm_x4(va, a_frag<LD>(vs, warp * 16, kk * 16, lane));
        }
        ldsm_x4(r, bt_frag<LD>(qb, cq * 16, kk * 16, lane));
        mma<T>(st[0], ka, r[0], r[1]);
        mma<T>(st[1], ka, r[2], r[3]);
        ldsm_x4(r, bt_frag<LD>(db, cq * 16, kk * 16, lane));
        mma<T>(dpt[0], va, r[0], r[1]);
        mma<T>(dpt[1], va, r[2], r[3]);
      }
      // Rows are keys, columns queries. P = 0 unless key <= query < t_len (then key < t_len);
      // a select, so nothing computed for a masked or padded element reaches the sums.
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = cq * 16 + 8 * j + 2 * i4 + (e & 1), q = q0 + ql;
          const bool ok = key[e >> 1] <= q && q < t_len;
          const float p = ok ? exp2f(st[j][e] * scale_log2 - lse_b[ql]) : 0.0f;
          dpt[j][e] = ok ? p * (dpt[j][e] - delta_b[ql]) : 0.0f;
          st[j][e] = p;
        }
      }
      const uint32_t pa[4] = {pack2<T>(st[0][0], st[0][1]), pack2<T>(st[0][2], st[0][3]),
                              pack2<T>(st[1][0], st[1][1]), pack2<T>(st[1][2], st[1][3])};
      const uint32_t sa[4] = {pack2<T>(dpt[0][0], dpt[0][1]), pack2<T>(dpt[0][2], dpt[0][3]),
                              pack2<T>(dpt[1][0], dpt[1][1]), pack2<T>(dpt[1][2], dpt[1][3])};
#pragma unroll
      for (int dp = 0; dp < ND / 2; ++dp) {
        uint32_t r[4];
        ldsm_x4_trans(r, a_frag<LD>(db, cq * 16, dp * 16, lane));
        mma<T>(dv[2 * dp], pa, r[0], r[1]);
        mma<T>(dv[2 * dp + 1], pa, r[2], r[3]);
        ldsm_x4_trans(r, a_frag<LD>(qb, cq * 16, dp * 16, lane));
        mma<T>(dk[2 * dp], sa, r[0], r[1]);
        mma<T>(dk[2 * dp + 1], sa, r[2], r[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= t_len) continue;
    T* out = dqkv + (int64_t(b) * t_len + key[r]) * ld + int64_t(h) * HS + 2 * i4;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      store2(out + c + 8 * j, dk[j][2 * r] * scale, dk[j][2 * r + 1] * scale);
      store2(out + 2 * c + 8 * j, dv[j][2 * r], dv[j][2 * r + 1]);
    }
  }
}

// dQ of one query tile: grid (B * n_head, query tiles), the longest rows first. Warp w owns
// queries q0 + 16 w .. + 15 and walks the key tiles up to the diagonal 16 keys at a time:
// S = Q K^T, dP = dY V^T, dS = P (dP - delta), dQ += round(dS) K.
template <class T, int HS>
__global__ void __launch_bounds__(kThreads)
    attention_backward_q_tc_kernel(const T* qkv, const T* dy, const float* lse, const float* delta,
                                   T* dqkv, int t_len, int c, int n_head, float scale,
                                   float scale_log2) {
  constexpr int LD = kLd<HS>, KD = HS / 16, ND = HS / 8;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  T* qs = reinterpret_cast<T*>(tc_smem);  // [kRows][LD]
  T* ds_ = qs + kRows * LD;               // [kRows][LD]     dy
  T* ks = ds_ + kRows * LD;               // [2][kRows][LD]
  T* vs = ks + 2 * kRows * LD;            // [2][kRows][LD]
  const int bh = blockIdx.x, b = bh / n_head, h = bh % n_head;
  const int qtile = gridDim.y - 1 - blockIdx.y, q0 = qtile * kRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, i4 = lane % 4;
  const int64_t ld = 3 * int64_t(c);
  const T* base = qkv + int64_t(b) * t_len * ld + int64_t(h) * HS;
  const T* dbase = dy + int64_t(b) * t_len * c + int64_t(h) * HS;
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float lse2[2], dlt[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool in = row[r] < t_len;
    lse2[r] = in ? lse[int64_t(bh) * t_len + row[r]] * kLog2e : 0.0f;
    dlt[r] = in ? delta[int64_t(bh) * t_len + row[r]] : 0.0f;
  }
  // A warp whose 16 rows are all padding only helps load and synchronise.
  const bool active = q0 + warp * 16 < t_len;

  load_tile<HS>(qs, base, ld, q0, t_len);
  load_tile<HS>(ds_, dbase, c, q0, t_len);
  load_tile<HS>(ks, base + c, ld, 0, t_len);
  load_tile<HS>(vs, base + 2 * c, ld, 0, t_len);
  cp_async_commit();

  uint32_t qf[KD][4], gf[KD][4];
  float dq[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;

  for (int kt = 0; kt <= qtile; ++kt) {
    const int buf = kt & 1;
    if (kt < qtile) {
      load_tile<HS>(ks + (buf ^ 1) * kRows * LD, base + c, ld, (kt + 1) * kRows, t_len);
      load_tile<HS>(vs + (buf ^ 1) * kRows * LD, base + 2 * c, ld, (kt + 1) * kRows, t_len);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        ldsm_x4(qf[kk], a_frag<LD>(qs, warp * 16, kk * 16, lane));
        ldsm_x4(gf[kk], a_frag<LD>(ds_, warp * 16, kk * 16, lane));
      }
    }
    const T* kb = ks + buf * kRows * LD;
    const T* vb = vs + buf * kRows * LD;
    const int k0 = kt * kRows;
    // Key groups after the warp's rows (diagonal tile) are masked whole: not visited.
    const int groups = !active ? 0 : kt == qtile ? warp + 1 : 4;
#pragma unroll 1
    for (int ck = 0; ck < groups; ++ck) {
      float s[2][4], dp[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        uint32_t r[4];
        ldsm_x4(r, bt_frag<LD>(kb, ck * 16, kk * 16, lane));
        mma<T>(s[0], qf[kk], r[0], r[1]);
        mma<T>(s[1], qf[kk], r[2], r[3]);
        ldsm_x4(r, bt_frag<LD>(vb, ck * 16, kk * 16, lane));
        mma<T>(dp[0], gf[kk], r[0], r[1]);
        mma<T>(dp[1], gf[kk], r[2], r[3]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kidx = k0 + ck * 16 + 8 * j + 2 * i4 + (e & 1), r = e >> 1;
          const bool ok = kidx <= row[r] && row[r] < t_len;
          s[j][e] = ok ? exp2f(s[j][e] * scale_log2 - lse2[r]) * (dp[j][e] - dlt[r]) : 0.0f;
        }
      }
      const uint32_t sa[4] = {pack2<T>(s[0][0], s[0][1]), pack2<T>(s[0][2], s[0][3]),
                              pack2<T>(s[1][0], s[1][1]), pack2<T>(s[1][2], s[1][3])};
#pragma unroll
      for (int dd = 0; dd < ND / 2; ++dd) {
        uint32_t r[4];
        ldsm_x4_trans(r, a_frag<LD>(kb, ck * 16, dd * 16, lane));
        mma<T>(dq[2 * dd], sa, r[0], r[1]);
        mma<T>(dq[2 * dd + 1], sa, r[2], r[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= t_len) continue;
    T* out = dqkv + (int64_t(b) * t_len + row[r]) * ld + int64_t(h) * HS + 2 * i4;
#pragma unroll
    for (int j = 0; j < ND; ++j)
      store2(out + 8 * j, dq[j][2 * r] * scale, dq[j][2 * r + 1] * scale);
  }
}

}  // namespace tc

// DSPP_ATTENTION=simt selects the CUDA-core kernels for every dtype; read once per process.
bool simt_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("DSPP_ATTENTION");
    return v != nullptr && std::strcmp(v, "simt") == 0;
  }();
  return forced;
}

// Whether the tensor-core kernels take a call: bf16/f16, head size 64 or 128, not forced off,
// every pointer 16-byte aligned (cp.async moves 16 bytes; with hs a multiple of 64 every row
// and head offset then is too), and a device of compute capability 8.0 or later (mma.sync with
// bf16; the binary is built for sm_90, but the check costs nothing).
bool tensor_cores(int32_t dtype, int64_t hs, std::initializer_list<const void*> ptrs) {
  if (dtype != DSPP_BF16 && dtype != DSPP_F16) return false;
  if (hs != 64 && hs != 128) return false;
  if (simt_forced()) return false;
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  int dev = 0, major = 0;
  DSPP_KERNEL_CHECK(cudaGetDevice(&dev));
  DSPP_KERNEL_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 8;
}

// Calls fn(std::integral_constant<int, HS>) for the tensor-core head sizes (tensor_cores said
// yes, so hs is 64 or 128).
template <class Fn>
void dispatch_tc_head_size(int64_t hs, Fn&& fn) {
  if (hs == 64) {
    fn(std::integral_constant<int, 64>{});
  } else {
    fn(std::integral_constant<int, 128>{});
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
  const bool tc = tensor_cores(dtype, c / n_head, {qkv, y});
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      if (tc) {
        dispatch_tc_head_size(c / n_head, [&](auto hs_tag) {
          constexpr int HS = decltype(hs_tag)::value;
          const size_t smem = tc::forward_smem<HS>();
          DSPP_KERNEL_CHECK(cudaFuncSetAttribute(tc::attention_forward_tc_kernel<T, HS>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem)));
          tc::attention_forward_tc_kernel<T, HS><<<grid, tc::kThreads, smem, stream>>>(
              static_cast<const T*>(qkv), static_cast<T*>(y), lse, static_cast<int>(t),
              static_cast<int>(c), static_cast<int>(n_head), scale * tc::kLog2e);
        });
        return;
      }
    }
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
  const bool tc = tensor_cores(dtype, c / n_head, {qkv, dy, dqkv});
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t threads = rows * 32;
    attention_delta_kernel<T><<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(
        static_cast<const T*>(y), static_cast<const T*>(dy), delta, rows, static_cast<int>(t),
        static_cast<int>(c), static_cast<int>(n_head));
    DSPP_KERNEL_CHECK(cudaGetLastError());
    if constexpr (!std::is_same_v<T, float>) {
      if (tc) {
        dispatch_tc_head_size(c / n_head, [&](auto hs_tag) {
          constexpr int HS = decltype(hs_tag)::value;
          const size_t kv_smem = tc::backward_kv_smem<HS>(), q_smem = tc::backward_q_smem<HS>();
          DSPP_KERNEL_CHECK(cudaFuncSetAttribute(tc::attention_backward_kv_tc_kernel<T, HS>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(kv_smem)));
          DSPP_KERNEL_CHECK(cudaFuncSetAttribute(tc::attention_backward_q_tc_kernel<T, HS>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(q_smem)));
          tc::attention_backward_kv_tc_kernel<T, HS><<<grid, tc::kThreads, kv_smem, stream>>>(
              static_cast<const T*>(qkv), static_cast<const T*>(dy), lse, delta,
              static_cast<T*>(dqkv), static_cast<int>(t), static_cast<int>(c),
              static_cast<int>(n_head), scale, scale * tc::kLog2e);
          DSPP_KERNEL_CHECK(cudaGetLastError());
          tc::attention_backward_q_tc_kernel<T, HS><<<grid, tc::kThreads, q_smem, stream>>>(
              static_cast<const T*>(qkv), static_cast<const T*>(dy), lse, delta,
              static_cast<T*>(dqkv), static_cast<int>(t), static_cast<int>(c),
              static_cast<int>(n_head), scale, scale * tc::kLog2e);
        });
        return;
      }
    }
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
