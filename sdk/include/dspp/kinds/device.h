// Plugin kind `device`: memory, streams, events and copies of an accelerator (CUDA). libdspp links
// no device runtime itself; a CPU-only machine simply has no device plugin loaded (or one whose
// count() is 0).
//
// One Device object serves one GPU, chosen with set_current() (the engine passes LOCAL_RANK)
// before anything else; every later call runs on that GPU, from any thread. Streams and events are
// the runtime's own handles (cudaStream_t, cudaEvent_t) passed as void*; NULL as a stream means
// the runtime's default (legacy) stream.
#ifndef DSPP_KINDS_DEVICE_H
#define DSPP_KINDS_DEVICE_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

// What a block of device memory holds (ABI 1.3), for the caching allocator's per-category
// counters. The category is the allocating thread's (Device::set_memory_category; plugins use
// dspp::plugin::MemoryCategory, the core its engine scopes) when the block is allocated.
#define DSPP_MEM_OTHER 0            // kernel workspaces, scratch, anything untagged
#define DSPP_MEM_PARAMETERS 1       // the model's working parameters (ZeRO-3: partition, gathers)
#define DSPP_MEM_GRADIENTS 2        // gradients: the flat buffer, a partition's accumulator
#define DSPP_MEM_OPTIMIZER_STATE 3  // optimizer states and fp32 master weights
#define DSPP_MEM_ACTIVATIONS 4      // what forward and backward make (outputs, saved tensors)
#define DSPP_MEM_COMM_BUFFERS 5     // reduction buckets, staging for collectives
#define DSPP_MEM_CATEGORIES 6       // how many there are (the arrays below have room for 8)

// The caching allocator's counters (bytes unless named otherwise). `struct_size` is set by the
// caller; fields are only ever appended.
struct DeviceMemoryStats {
  uint32_t struct_size;
  uint32_t device;               // the GPU these describe
  uint64_t allocated;            // held by callers now (block sizes, i.e. rounded up)
  uint64_t peak_allocated;       // the most `allocated` has been (since reset_peak_stats)
  uint64_t requested;            // held by callers now, as they asked (not rounded)
  uint64_t reserved;             // taken from the runtime: allocated + cached
  uint64_t peak_reserved;        // (since reset_peak_stats)
  uint64_t device_mallocs;       // runtime allocations made so far (cudaMalloc calls that worked)
  uint64_t device_frees;         // runtime frees made so far (cache released)
  uint64_t cache_hits;           // alloc() served from the cache
  uint64_t alloc_retries;        // a runtime allocation failed, the cache was released, retried
  uint64_t ooms;                 // alloc() calls that failed with DSPP_ERR_OUT_OF_MEMORY
  uint64_t device_free_memory;   // what the GPU reports free now (all processes)
  uint64_t device_total_memory;  // the GPU's memory
  // ABI 1.3, indexed by DSPP_MEM_*: held now (block sizes), the most held since
  // reset_peak_stats (block sizes), and held now as the callers asked.
  uint64_t category_allocated[8];
  uint64_t category_peak[8];
  uint64_t category_requested[8];
};

class DeviceKernels;  // the layer kernels, below

class Device {
 public:
  // Visible GPUs; 0 when the runtime loads but sees no GPU or no driver.
  virtual int32_t count() const noexcept = 0;
  // Chooses the GPU this object serves and makes it current on the calling thread. Once memory,
  // streams or events exist, another index is an error.
  virtual dspp_status set_current(int32_t index) noexcept = 0;

  // Device memory from the caching allocator, ordered on `stream`: the block may be reused by a
  // later alloc() on the same stream as soon as it is freed (stream order makes that safe). At
  // least 256-byte aligned. 0 bytes gives NULL. DSPP_ERR_OUT_OF_MEMORY says how much was asked,
  // in use and free.
  virtual dspp_status alloc(size_t bytes, void* stream, void** out) noexcept = 0;
  // Returns a block to the cache. `stream` is the stream whose work last used it: the allocation
  // stream (or NULL for it) makes it reusable at once; another stream makes it reusable only once
  // that stream's work up to now has finished (an event is recorded there).
  virtual dspp_status free(void* ptr, void* stream) noexcept = 0;
  // Releases every cached (unused) block to the runtime.
  virtual dspp_status empty_cache() noexcept = 0;
  virtual dspp_status memory_stats(DeviceMemoryStats* out) const noexcept = 0;
  virtual dspp_status reset_peak_stats() noexcept = 0;

  // Page-locked host memory (for fast, asynchronous copies). Not cached.
  virtual dspp_status alloc_host(size_t bytes, void** out) noexcept = 0;
  virtual dspp_status free_host(void* ptr) noexcept = 0;

  // Streams that do not synchronise with the default stream.
  virtual dspp_status create_stream(void** out) noexcept = 0;
  virtual dspp_status destroy_stream(void* stream) noexcept = 0;
  // Waits for the stream's work; NULL waits for the whole GPU.
  virtual dspp_status synchronize(void* stream) noexcept = 0;

  // Events: `timing` non-zero makes elapsed_ms() usable (timing events cost more).
  virtual dspp_status create_event(int32_t timing, void** out) noexcept = 0;
  virtual dspp_status destroy_event(void* event) noexcept = 0;
  virtual dspp_status record_event(void* event, void* stream) noexcept = 0;
  // Work issued on `stream` after this call waits for the event (the host does not wait).
  virtual dspp_status stream_wait_event(void* stream, void* event) noexcept = 0;
  // *done = 1 when the work before the event has finished.
  virtual dspp_status query_event(void* event, int32_t* done) noexcept = 0;
  virtual dspp_status synchronize_event(void* event) noexcept = 0;
  virtual dspp_status elapsed_ms(void* start, void* end, float* ms) noexcept = 0;

  // Copies `bytes` between any two of host memory (page-locked or not) and this GPU's memory,
  // ordered on `stream`. Page-locked host memory and device memory copy asynchronously. Pageable
  // host memory goes through page-locked staging buffers: host to device returns once the source
  // has been read (the device side still completes in stream order); device to host returns once
  // the destination holds the data.
  virtual dspp_status copy(void* dst, const void* src, size_t bytes, void* stream) noexcept = 0;
  // Sets `bytes` bytes of device memory to `value`, ordered on `stream`.
  virtual dspp_status memset(void* dst, int32_t value, size_t bytes, void* stream) noexcept = 0;

  // Appended in ABI 1.1: a plugin built against an older header has no such slot, so the host
  // calls it only on plugins whose descriptor's abi_minor is at least 1. The layer kernels of this
  // device, or NULL when it has none; they live as long as the device and run on its GPU.
  virtual DeviceKernels* kernels() noexcept { return nullptr; }

  // Appended in ABI 1.3 (called only on plugins whose abi_minor is at least 3): the category
  // (DSPP_MEM_*) of the calling thread's later alloc()s, until set again; returns the previous
  // one. Categories are per thread (the default is DSPP_MEM_OTHER); an unknown one counts as
  // DSPP_MEM_OTHER.
  virtual int32_t set_memory_category(int32_t /*category*/) noexcept { return DSPP_MEM_OTHER; }

 protected:
  ~Device() = default;
};

// ---- Layer kernels --------------------------------------------------------------------------
// What the layers of <dspp/nn.h> (Linear, LayerNorm, GELU, causal self-attention, Embedding,
// cross-entropy) need on a GPU, with the CPU layers' formulas. Every tensor is a view of this
// device's memory (device.type DSPP_DEVICE_CUDA); all work is enqueued on `stream` (NULL: the
// legacy default stream) and the call returns without waiting. Scratch memory comes from the
// device's caching allocator, ordered on `stream`. A view's dspp_tensor_view::stream is not read.
//
// Floating tensors are f32, bf16 or f16 ("float" below); arithmetic is f32 (some sums f64, as the
// CPU layer does), outputs are rounded once to their dtype. A "matrix" view of any rank is
// [product of all dimensions but the last, last dimension]. Arguments named optional may be NULL.
// A bad shape or dtype fails with DSPP_ERR_INVALID_ARGUMENT and a message naming the argument;
// nothing is enqueued then.

#define DSPP_DEVICE_KERNELS_VERSION 4

// gemm epilogues: what is applied to alpha op(a) op(b) + beta c before it is stored in c.
#define DSPP_GEMM_EPILOGUE_NONE 0
#define DSPP_GEMM_EPILOGUE_BIAS 1       // + bias[col]
#define DSPP_GEMM_EPILOGUE_GELU 2       // gelu(...) (tanh approximation, as GELU)
#define DSPP_GEMM_EPILOGUE_BIAS_GELU 3  // gelu(... + bias[col])
// gemm flags
#define DSPP_GEMM_ALLOW_TF32 0x1u  // f32 inputs may be multiplied as TF32 (10-bit mantissa)

// The constants of one Adam/AdamW step for a run of elements, already rounded to fp32 (the host
// computes them in double, as the CPU optimizer does). Per element, with g the gradient:
//   g += l2 * p;  m = beta1 m + one_minus_beta1 g;  v = beta2 v + one_minus_beta2 g^2
//   p = p * decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)
struct DeviceAdamConsts {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;     // lr / (1 - beta1^t), or lr without bias correction
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t), or 1
  float eps;
  float decay;  // 1 - lr * weight_decay (decoupled, AdamW), else 1
  float l2;     // weight_decay (L2 mode), else 0
};

// ---- Version 3: the constants of the other optimizers' steps, rounded to fp32 by the host (which
// computes them in double, as the CPU optimizers do). The formulas are those of the CPU plugins'
// kernels (plugins/optimizer/*), per element, each operation rounded to fp32 in the order written.

// torch.optim.SGD: d = sign g + wd p; when momentum != 0: buf = first ? d : momentum buf +
// one_minus_dampening d, then d = nesterov ? d + momentum buf : buf; p = p - lr d.
struct DeviceSgdConsts {
  float lr, wd, momentum, one_minus_dampening;
  float sign;        // -1 when maximising, else 1
  int32_t first;     // non-zero: the buffer starts as d (the first step that uses it)
  int32_t nesterov;  // non-zero: Nesterov momentum
};

// Lion: c = beta1 m + one_minus_beta1 g; p = p decay - lr sign(c) (sign of 0 and NaN: 0);
// m = beta2 m + one_minus_beta2 g (from the old m).
struct DeviceLionConsts {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float lr;
  float decay;  // 1 - lr * weight_decay
};

// Adagrad: d = sign g + wd p; sum = sum + d^2; p = p - clr (d / (sqrt(sum) + eps)).
struct DeviceAdagradConsts {
  float clr;  // lr / (1 + (t - 1) lr_decay)
  float wd;   // L2, added to the gradient (also when 0: 0 x inf is NaN, as on the CPU)
  float eps;
  float sign;  // -1 when maximising, else 1
};

// LAMB (DeepSpeed's FusedLamb, moments not bias-corrected): m = beta1 m + one_minus_beta1 g;
// v = beta2 v + one_minus_beta2 g^2; u = m / denom + wd p with denom = sqrt(v) + eps, or
// sqrt(v + eps) when eps_inside_sqrt. The trust ratio comes from the norms of p and u.
struct DeviceLambConsts {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float eps;
  float wd;
  int32_t eps_inside_sqrt;
};

class DeviceKernels {
 public:
  // DSPP_DEVICE_KERNELS_VERSION of the plugin: methods are only ever appended, each one saying
  // the version that brought it.
  virtual uint32_t version() const noexcept = 0;

  // c = epilogue(alpha op(a) op(b) + beta c), row-major, op(x) = x^T when trans_x != 0. With the
  // matrices op(a) [M, K], op(b) [K, N], c [M, N]. a and b: one float dtype; c: theirs or f32.
  // Linear: y = x W^T + b is gemm(x, 0, W, 1, y, 1, 0, BIAS, b); dx = dy W is gemm(dy, 0, W, 0,
  // dx, 1, 0); dW += dy^T x is gemm(dy, 1, x, 0, dW, 1, 1). bias: [N] in c's dtype (BIAS
  // epilogues). pre_gelu (optional, GELU epilogues): receives the GELU input, like c, for
  // gelu_backward. flags: DSPP_GEMM_*.
  virtual dspp_status gemm(const dspp_tensor_view* a, int32_t trans_a, const dspp_tensor_view* b,
                           int32_t trans_b, const dspp_tensor_view* c, float alpha, float beta,
                           int32_t epilogue, const dspp_tensor_view* bias,
                           const dspp_tensor_view* pre_gelu, uint32_t flags,
                           void* stream) noexcept = 0;
  // db[n] = (accumulate ? db[n] : 0) + sum_m dy[m, n]: Linear's bias gradient. dy: a float
  // matrix [M, N]; db: [N], f32 or dy's dtype. Summed in a fixed order (deterministic).
  virtual dspp_status bias_grad(const dspp_tensor_view* dy, const dspp_tensor_view* db,
                                int32_t accumulate, void* stream) noexcept = 0;

  // LayerNorm over the last dimension C: y = (x - mean) rstd weight + bias, rstd = 1/sqrt(var +
  // eps) with the biased variance. x, y [..., C] of one float dtype; weight, bias [C] in it too;
  // mean, rstd (optional, f32 [rows]) receive what backward needs.
  virtual dspp_status layernorm_forward(const dspp_tensor_view* x, const dspp_tensor_view* weight,
                                        const dspp_tensor_view* bias, float eps,
                                        const dspp_tensor_view* y, const dspp_tensor_view* mean,
                                        const dspp_tensor_view* rstd, void* stream) noexcept = 0;
  // dx (optional, like x) = the input gradient, overwritten; dweight, dbias (optional, [C], f32
  // or x's dtype) += the parameter gradients (summed over rows in a fixed order).
  virtual dspp_status layernorm_backward(const dspp_tensor_view* dy, const dspp_tensor_view* x,
                                         const dspp_tensor_view* weight,
                                         const dspp_tensor_view* mean, const dspp_tensor_view* rstd,
                                         const dspp_tensor_view* dx,
                                         const dspp_tensor_view* dweight,
                                         const dspp_tensor_view* dbias, void* stream) noexcept = 0;

  // GELU, tanh approximation: y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). x and y of one
  // shape and float dtype (y may be x).
  virtual dspp_status gelu_forward(const dspp_tensor_view* x, const dspp_tensor_view* y,
                                   void* stream) noexcept = 0;
  // dx = gelu'(x) dy (dx may be dy).
  virtual dspp_status gelu_backward(const dspp_tensor_view* x, const dspp_tensor_view* dy,
                                    const dspp_tensor_view* dx, void* stream) noexcept = 0;

  // Softmax cross-entropy over the last dimension V of logits [..., V] (float) with targets
  // [...] (i32); rows whose target is ignore_index count for nothing. With n the number of
  // counted rows: losses (optional, f32 [rows]) = lse - logit[target] (0 for ignored rows);
  // mean_loss (optional, f32, one element) = their sum / n (0 when n is 0); dlogits (optional,
  // like logits, may be logits itself) = scale (softmax - onehot) / n (zero rows for ignored
  // ones). A target outside [0, V) that is not ignore_index gives a NaN loss and a zero row.
  virtual dspp_status cross_entropy(const dspp_tensor_view* logits, const dspp_tensor_view* targets,
                                    int64_t ignore_index, float scale,
                                    const dspp_tensor_view* losses,
                                    const dspp_tensor_view* mean_loss,
                                    const dspp_tensor_view* dlogits, void* stream) noexcept = 0;

  // out[..., :] = weight[ids[...], :]. ids i32 [...]; weight [num, dim] float; out [..., dim] in
  // weight's dtype. Ids are not checked against num (the caller has them on the host): an id
  // outside [0, num) gives a zero row.
  virtual dspp_status embedding_forward(const dspp_tensor_view* ids, const dspp_tensor_view* weight,
                                        const dspp_tensor_view* out, void* stream) noexcept = 0;
  // dweight[ids[i], :] += dout[i, :], in token order for each row of the table (deterministic;
  // the same additions in the same order as the CPU layer). dweight [num, dim]: f32 or dout's
  // dtype. Ids outside [0, num) are skipped.
  virtual dspp_status embedding_backward(const dspp_tensor_view* ids, const dspp_tensor_view* dout,
                                         const dspp_tensor_view* dweight,
                                         void* stream) noexcept = 0;

  // Causal self-attention core, GPT-2 layout: qkv [B, T, 3C] (q, k, v side by side; head h at
  // columns h*hs of each, hs = C / n_head, hs <= 128) -> y [B, T, C] (qkv's dtype), y[t] =
  // softmax_{t2 <= t}(q[t] . k[t2] / sqrt(hs)) v; lse (f32 [B, n_head, T]) receives each row's
  // log-sum-exp for backward.
  virtual dspp_status attention_forward(const dspp_tensor_view* qkv, int32_t n_head,
                                        const dspp_tensor_view* y, const dspp_tensor_view* lse,
                                        void* stream) noexcept = 0;
  // dqkv [B, T, 3C] (overwritten) from dy [B, T, C] and the forward's qkv, y and lse.
  virtual dspp_status attention_backward(const dspp_tensor_view* qkv, const dspp_tensor_view* y,
                                         const dspp_tensor_view* lse, const dspp_tensor_view* dy,
                                         int32_t n_head, const dspp_tensor_view* dqkv,
                                         void* stream) noexcept = 0;

  // Elementwise, all of one shape (any float dtype each unless said): out = a + b (a, b, out of
  // one dtype; out may be a or b): the residual add.
  virtual dspp_status add(const dspp_tensor_view* a, const dspp_tensor_view* b,
                          const dspp_tensor_view* out, void* stream) noexcept = 0;
  // out = alpha x (one dtype; out may be x).
  virtual dspp_status scale(const dspp_tensor_view* x, float alpha, const dspp_tensor_view* out,
                            void* stream) noexcept = 0;
  // Every element of out (float or i32) = value.
  virtual dspp_status fill(const dspp_tensor_view* out, double value, void* stream) noexcept = 0;
  // out = x converted (round to nearest even) between f32, bf16 and f16.
  virtual dspp_status cast(const dspp_tensor_view* x, const dspp_tensor_view* out,
                           void* stream) noexcept = 0;

  // ---- Version 2: what the ZeRO stages and the optimizers need on the device. The host calls
  // these only when version() >= 2.
  // out[0] = (accumulate ? out[0] : 0) + sum of x[i]^2, each square and the sum in f64, summed in
  // a fixed order (the same result every run). x: float, any shape; out: f64, one element. A
  // non-finite x makes the sum non-finite (the overflow check reads it).
  virtual dspp_status sum_squares(const dspp_tensor_view* x, const dspp_tensor_view* out,
                                  int32_t accumulate, void* stream) noexcept = 0;
  // One Adam step over p, g, m, v (f32, one element count, m and v the moments): the formula of
  // DeviceAdamConsts, element by element in fp32 (the CPU kernel's operations in its order).
  virtual dspp_status adam_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                const dspp_tensor_view* m, const dspp_tensor_view* v,
                                const DeviceAdamConsts* k, void* stream) noexcept = 0;

  // ---- Version 3: the steps of sgd, lion, adagrad and lamb, and the elementwise pieces of Muon
  // (its Newton-Schulz products go through gemm with flags 0). The host calls these only when
  // version() >= 3. Every tensor is f32 unless said; the element counts must match (any shapes);
  // arguments of one call are distinct memory unless said. Per element the arithmetic is the CPU
  // kernel's fp32 operations in its order, each rounded once (no fused multiply-add), square
  // roots and divisions correctly rounded, so the results equal the CPU plugins' bit for bit.

  // One SGD step over p, g and the momentum buffer buf (DeviceSgdConsts' formula). buf may be
  // NULL when k->momentum is 0 (it is then neither read nor written).
  virtual dspp_status sgd_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                               const dspp_tensor_view* buf, const DeviceSgdConsts* k,
                               void* stream) noexcept = 0;
  // One Lion step over p, g and the momentum m (DeviceLionConsts' formula).
  virtual dspp_status lion_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                const dspp_tensor_view* m, const DeviceLionConsts* k,
                                void* stream) noexcept = 0;
  // One Adagrad step over p, g and the squared sum (DeviceAdagradConsts' formula).
  virtual dspp_status adagrad_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                   const dspp_tensor_view* sum, const DeviceAdagradConsts* k,
                                   void* stream) noexcept = 0;
  // LAMB's first pass over one parameter: m and v updated (DeviceLambConsts), u = the update
  // m / denom + wd p, written for the caller's norm (sum_squares); p is only read.
  virtual dspp_status lamb_moments(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                   const dspp_tensor_view* m, const dspp_tensor_view* v,
                                   const DeviceLambConsts* k, const dspp_tensor_view* u,
                                   void* stream) noexcept = 0;
  // LAMB's second pass: the update recomputed from the new m and v, as in the first pass, and
  // p = p - scale u, scale = step_size x the trust ratio (the host's).
  virtual dspp_status lamb_apply(const dspp_tensor_view* p, const dspp_tensor_view* m,
                                 const dspp_tensor_view* v, const DeviceLambConsts* k, float scale,
                                 void* stream) noexcept = 0;
  // Muon's momentum with the Nesterov blend: m = beta m + one_minus_beta g, then
  // u = one_minus_beta g + beta m (the new m).
  virtual dspp_status muon_momentum(const dspp_tensor_view* g, const dspp_tensor_view* m,
                                    const dspp_tensor_view* u, float beta, float one_minus_beta,
                                    void* stream) noexcept = 0;
  // The decayed update p = p decay - step u (Muon's step, and its rule for a non-finite gradient
  // with u = g).
  virtual dspp_status decayed_update(const dspp_tensor_view* p, const dspp_tensor_view* u,
                                     float decay, float step, void* stream) noexcept = 0;
  // out [C, R] = x^T for the matrix x [R, C] (a view of any rank, see "matrix" above); x and out
  // of one float dtype, distinct. Exact (a copy).
  virtual dspp_status transpose(const dspp_tensor_view* x, const dspp_tensor_view* out,
                                void* stream) noexcept = 0;
  // x[i, i] += value for the square matrix x [N, N] (f32): Newton-Schulz's a I + Z.
  virtual dspp_status add_diagonal(const dspp_tensor_view* x, float value,
                                   void* stream) noexcept = 0;
  // out = x / (float(sqrt(sum_sq[0])) + eps), the square root in f64 and rounded once to f32, the
  // addition and the division in f32: the Frobenius normalisation of Newton-Schulz, with sum_sq
  // (f64, one element of device memory) from sum_squares. out like x (may be x).
  virtual dspp_status divide_by_norm(const dspp_tensor_view* x, const dspp_tensor_view* sum_sq,
                                     float eps, const dspp_tensor_view* out,
                                     void* stream) noexcept = 0;

  // ---- Version 4 (appended within ABI 1.3; call only when version() >= 4): counter-based random
  // numbers, Philox4x32-10 with <dspp/philox.h>'s element mapping. Element i of `out` (any shape,
  // f32, bf16 or f16) is element offset + i of the stream of `seed`, so the values depend on
  // (seed, offset + i) alone: the same on every GPU and launch shape, and filling [0, n) at once
  // equals filling [0, k) at offset o and [k, n) at offset o + k.
  //
  // Uniform on [low, high): fma(high - low, u, low) in f32 (high - low rounded to f32 first),
  // with u = philox::unit_float(lane e % 4 of e's block), rounded once to out's dtype.
  virtual dspp_status fill_uniform(const dspp_tensor_view* out, uint64_t seed, uint64_t offset,
                                   float low, float high, void* stream) noexcept = 0;
  // Normal (mean, std), Box-Muller on a lane pair: element e uses words 2p and 2p + 1 of its
  // block, p = (e % 4) / 2: u1 = ((w[2p] >> 8) + 1) 2^-24 in (0, 1], u2 = unit_float(w[2p + 1]),
  // r = sqrt(-2 ln u1), z = r cos(2 pi u2) for even e and r sin(2 pi u2) for odd e, in f32 (the
  // device's own log, sqrt, sin and cos: a few ulps from the exact value), then fma(std, z, mean)
  // rounded once to out's dtype.
  virtual dspp_status fill_normal(const dspp_tensor_view* out, uint64_t seed, uint64_t offset,
                                  float mean, float std, void* stream) noexcept = 0;

 protected:
  ~DeviceKernels() = default;
};

}  // namespace dspp
#endif
#endif
