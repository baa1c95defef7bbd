// device/cuda: the kernel launchers (kernels_*.cu) that kernels.cpp calls after checking the
// arguments. They take raw pointers and sizes that are already valid, enqueue on the stream and
// throw dspp::plugin::StatusError (through DSPP_CUDA_CHECK) when CUDA reports an error. This
// header is shared by nvcc (C++17) and the host compiler (C++20), so it holds plain declarations.
#pragma once

#include <dspp/abi.h>
#include <dspp/kinds/device.h>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dspp::cuda {

// Scratch memory for one kernel call: blocks from the device's caching allocator on the call's
// stream, handed back (in stream order, so work already enqueued may still use them) when the
// call returns or throws. Never cudaMalloc in a kernel path.
class Scratch {
 public:
  Scratch(dspp::Device& device, cudaStream_t stream) : device_(device), stream_(stream) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();
  // At least `bytes` bytes, 256-byte aligned; throws (the allocator has set the message).
  void* get(size_t bytes);
  cudaStream_t stream() const { return stream_; }

 private:
  dspp::Device& device_;
  cudaStream_t stream_;
  std::vector<void*> blocks_;
};

// ---- kernels_elementwise.cu -------------------------------------------------------------------
// Any float dtype (f32, bf16, f16) unless said; n elements; `out` may alias an input.
void launch_gelu_forward(int32_t dtype, const void* x, void* y, int64_t n, cudaStream_t stream);
void launch_gelu_backward(int32_t dtype, const void* x, const void* dy, void* dx, int64_t n,
                          cudaStream_t stream);
void launch_add(int32_t dtype, const void* a, const void* b, void* out, int64_t n,
                cudaStream_t stream);
void launch_scale(int32_t dtype, const void* x, float alpha, void* out, int64_t n,
                  cudaStream_t stream);
// dtype may also be i32.
void launch_fill(int32_t dtype, void* out, double value, int64_t n, cudaStream_t stream);
// Philox random numbers (DeviceKernels::fill_uniform / fill_normal): uniform on [a, a + span)
// when `normal` is false, else mean a and standard deviation `span`.
void launch_fill_random(int32_t dtype, void* out, int64_t n, uint64_t seed, uint64_t offset,
                        bool normal, float a, float span, cudaStream_t stream);
void launch_cast(int32_t x_dtype, const void* x, int32_t out_dtype, void* out, int64_t n,
                 cudaStream_t stream);
// The GEMM epilogue where cuBLASLt does not fuse it: c [m, n] = gelu?(c + bias?), with `pre`
// (optional, like c) receiving the GELU input. bias [n] in c's dtype, or NULL.
void launch_bias_gelu(int32_t dtype, void* c, const void* bias, void* pre, bool gelu, int64_t m,
                      int64_t n, cudaStream_t stream);
// db [n] (db_dtype: f32 or dy's) = (accumulate ? db : 0) + column sums of dy [m, n].
void launch_bias_grad(int32_t dy_dtype, const void* dy, int32_t db_dtype, void* db, int64_t m,
                      int64_t n, bool accumulate, Scratch& scratch);

// ---- kernels_norm.cu ----------------------------------------------------------------------------
void launch_layernorm_forward(int32_t dtype, const void* x, const void* weight, const void* bias,
                              float eps, void* y, float* mean, float* rstd, int64_t rows, int64_t c,
                              cudaStream_t stream);
// dx, dweight, dbias may each be NULL; dweight and dbias are of grad_dtype (f32 or dtype).
void launch_layernorm_backward(int32_t dtype, const void* dy, const void* x, const void* weight,
                               const float* mean, const float* rstd, void* dx, int32_t grad_dtype,
                               void* dweight, void* dbias, int64_t rows, int64_t c,
                               Scratch& scratch);

// ---- kernels_loss.cu ----------------------------------------------------------------------------
// losses, mean_loss and dlogits may each be NULL; dlogits may be logits.
void launch_cross_entropy(int32_t dtype, const void* logits, const int32_t* targets, int64_t rows,
                          int64_t v, int64_t ignore_index, float scale, float* losses,
                          float* mean_loss, void* dlogits, Scratch& scratch);

// ---- kernels_embedding.cu -----------------------------------------------------------------------
void launch_embedding_forward(int32_t dtype, const int32_t* ids, const void* weight, void* out,
                              int64_t n, int64_t num, int64_t dim, cudaStream_t stream);
// grad_dtype: f32 or dtype. n < 2^31.
void launch_embedding_backward(int32_t dtype, const int32_t* ids, const void* dout,
                               int32_t grad_dtype, void* dweight, int64_t n, int64_t num,
                               int64_t dim, Scratch& scratch);

// ---- kernels_attention.cu -----------------------------------------------------------------------
constexpr int64_t kAttentionMaxHeadSize = 128;
void launch_attention_forward(int32_t dtype, const void* qkv, void* y, float* lse, int64_t b,
                              int64_t t, int64_t c, int64_t n_head, cudaStream_t stream);
void launch_attention_backward(int32_t dtype, const void* qkv, const void* y, const float* lse,
                               const void* dy, void* dqkv, int64_t b, int64_t t, int64_t c,
                               int64_t n_head, Scratch& scratch);

// ---- kernels_optimizer.cu -----------------------------------------------------------------------
// out[0] (device f64) = (accumulate ? out[0] : 0) + sum of x[i]^2 in f64, in an order fixed by n.
// x: any float dtype.
void launch_sum_squares(int32_t dtype, const void* x, int64_t n, double* out, bool accumulate,
                        Scratch& scratch);
// One Adam step over n f32 elements (DeviceAdamConsts' formula, the CPU kernel's fp32 operations).
void launch_adam_step(float* p, const float* g, float* m, float* v, int64_t n,
                      const dspp::DeviceAdamConsts& k, cudaStream_t stream);
// Version 3, n f32 elements each (the formulas of <dspp/kinds/device.h>, the CPU kernels' fp32
// operations). buf may be NULL when k.momentum is 0.
void launch_sgd_step(float* p, const float* g, float* buf, int64_t n,
                     const dspp::DeviceSgdConsts& k, cudaStream_t stream);
void launch_lion_step(float* p, const float* g, float* m, int64_t n,
                      const dspp::DeviceLionConsts& k, cudaStream_t stream);
void launch_adagrad_step(float* p, const float* g, float* sum, int64_t n,
                         const dspp::DeviceAdagradConsts& k, cudaStream_t stream);
void launch_lamb_moments(const float* p, const float* g, float* m, float* v, float* u, int64_t n,
                         const dspp::DeviceLambConsts& k, cudaStream_t stream);
void launch_lamb_apply(float* p, const float* m, const float* v, int64_t n,
                       const dspp::DeviceLambConsts& k, float scale, cudaStream_t stream);
void launch_muon_momentum(const float* g, float* m, float* u, int64_t n, float beta,
                          float one_minus_beta, cudaStream_t stream);
void launch_decayed_update(float* p, const float* u, int64_t n, float decay, float step,
                           cudaStream_t stream);
// out [cols, rows] = x [rows, cols]^T; any float dtype (the bits are moved).
void launch_transpose(int32_t dtype, const void* x, void* out, int64_t rows, int64_t cols,
                      cudaStream_t stream);
// x [n, n]: x[i, i] += value.
void launch_add_diagonal(float* x, int64_t n, float value, cudaStream_t stream);
// out = x / (float(sqrt(*sum_sq)) + eps); sum_sq one f64 of device memory; out may be x.
void launch_divide_by_norm(const float* x, const double* sum_sq, float eps, float* out, int64_t n,
                           cudaStream_t stream);

}  // namespace dspp::cuda
