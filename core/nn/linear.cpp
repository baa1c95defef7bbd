// Linear: y = x W^T + b through OpenBLAS. With x [N, in], W [out, in] (row-major):
//   forward          y  = x W^T            sgemm(N, T)   [N, out]
//   backward_input   dx = dy W             sgemm(N, N)   [N, in]
//   backward_weight  dW += dy^T x          sgemm(T, N)   [out, in], beta 1 accumulates
//                    db += sum_n dy[n, :]
// OpenBLAS splits these GEMMs across threads by rows and columns of the output, never along the
// summed dimension, so results do not depend on its thread count.
#include <dspp/nn.h>

#include <cblas.h>

#include <climits>

#include "nn/check.h"
#include "nn/device_ops.h"

namespace dspp {
namespace {

int blas_dim(const Module& m, int64_t n) {
  if (n > INT_MAX) nn::fail(m, "dimension " + std::to_string(n) + " exceeds the BLAS int range");
  return static_cast<int>(n);
}

}  // namespace

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng, float init_std) {
  if (in_features <= 0 || out_features <= 0) {
    nn::fail(*this, "in_features and out_features must be positive, got " +
                        std::to_string(in_features) + " and " + std::to_string(out_features));
  }
  register_parameter("weight", own_weight_, {out_features, in_features});
  rng.fill_normal(own_weight_.value, init_std);
  if (bias) {
    has_bias_ = true;
    register_parameter("bias", bias_, {out_features});
  }
}

Linear::Linear(Parameter& tied_weight) : weight_(&tied_weight) {
  if (tied_weight.shape.size() != 2) {
    nn::fail(*this, "a tied weight must be [out, in], got '" + tied_weight.name + "' with " +
                        std::to_string(tied_weight.shape.size()) + " dimensions");
  }
  register_tied_parameter(tied_weight);
}

Tensor Linear::forward(const Tensor& x) {
  const int64_t in = in_features(), out = out_features();
  if (nn::gpu::on_gpu(weight_->value)) {
    // y = x W^T (+ b in the GEMM's epilogue), in the weight's dtype.
    const std::string who = nn::where(*this);
    const Tensor& w = weight_->value;
    Tensor xd = nn::gpu::to_compute(who, "input", x, w.dtype(), w.device());
    if (xd.size(-1) != in) {
      nn::fail(*this, "input must be [..., " + std::to_string(in) + "], got " + x.describe());
    }
    Tensor y = Tensor::empty(nn::with_last(xd, out), w.dtype(), w.device());
    const dspp_tensor_view vx = xd.view(), vw = w.view(), vy = y.view();
    const dspp_tensor_view vb = has_bias_ ? bias_.value.view() : dspp_tensor_view{};
    nn::gpu::run(
        who,
        nn::gpu::kernels(who).gemm(&vx, 0, &vw, 1, &vy, 1.0f, 0.0f,
                                   has_bias_ ? DSPP_GEMM_EPILOGUE_BIAS : DSPP_GEMM_EPILOGUE_NONE,
                                   has_bias_ ? &vb : nullptr, nullptr, 0, nullptr),
        "gemm");
    x_ = xd;
    return y;
  }
  if (nn::require_host(*this, "input", x, DSPP_F32) != in) {
    nn::fail(*this, "input must be [..., " + std::to_string(in) + "], got " + x.describe());
  }
  const int64_t n = x.numel() / in;
  Tensor y = Tensor::empty(nn::with_last(x, out));
  float* yp = y.data<float>();
  float beta = 0.0f;
  if (has_bias_) {
    // Start from the bias and let the GEMM add x W^T: one pass over y instead of two.
    const float* b = bias_.value.data<float>();
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t o = 0; o < out; ++o) yp[r * out + o] = b[o];
    }
    beta = 1.0f;
  }
  if (n > 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_dim(*this, n), blas_dim(*this, out),
                blas_dim(*this, in), 1.0f, x.data<float>(), blas_dim(*this, in),
                weight_->value.data<float>(), blas_dim(*this, in), beta, yp, blas_dim(*this, out));
  }
  x_ = x;
  return y;
}

Tensor Linear::backward_input(const Tensor& dy) {
  nn::require_forward(*this, x_);
  const int64_t in = in_features(), out = out_features();
  if (nn::gpu::on_gpu(x_)) {
    const std::string who = nn::where(*this);
    nn::gpu::require(who, "dy", dy, nn::with_last(x_, out), x_.dtype(), x_.device());
    Tensor dx = Tensor::empty(x_.shape(), x_.dtype(), x_.device());
    const dspp_tensor_view vdy = dy.view(), vw = weight_->value.view(), vdx = dx.view();
    nn::gpu::run(who,
                 nn::gpu::kernels(who).gemm(&vdy, 0, &vw, 0, &vdx, 1.0f, 0.0f,
                                            DSPP_GEMM_EPILOGUE_NONE, nullptr, nullptr, 0, nullptr),
                 "gemm");
    return dx;
  }
  nn::require_shape(*this, "dy", dy, nn::with_last(x_, out));
  const int64_t n = x_.numel() / in;
  Tensor dx = Tensor::empty(x_.shape());
  if (n > 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas_dim(*this, n), blas_dim(*this, in),
                blas_dim(*this, out), 1.0f, dy.data<float>(), blas_dim(*this, out),
                weight_->value.data<float>(), blas_dim(*this, in), 0.0f, dx.data<float>(),
                blas_dim(*this, in));
  }
  return dx;
}

void Linear::backward_weight(const Tensor& dy) {
  nn::require_forward(*this, x_);
  const int64_t in = in_features(), out = out_features();
  if (nn::gpu::on_gpu(x_)) {
    // dW += dy^T x and db += column sums of dy, accumulated in the f32 gradients.
    const std::string who = nn::where(*this);
    nn::gpu::require(who, "dy", dy, nn::with_last(x_, out), x_.dtype(), x_.device());
    if (x_.numel() == 0) return;
    DeviceKernels& k = nn::gpu::kernels(who);
    const dspp_tensor_view vdy = dy.view(), vx = x_.view(), vdw = weight_->grad.view();
    nn::gpu::run(who,
                 k.gemm(&vdy, 1, &vx, 0, &vdw, 1.0f, 1.0f, DSPP_GEMM_EPILOGUE_NONE, nullptr,
                        nullptr, 0, nullptr),
                 "gemm");
    if (has_bias_) {
      const dspp_tensor_view vdb = bias_.grad.view();
      nn::gpu::run(who, k.bias_grad(&vdy, &vdb, 1, nullptr), "bias_grad");
    }
    return;
  }
  nn::require_shape(*this, "dy", dy, nn::with_last(x_, out));
  const int64_t n = x_.numel() / in;
  if (n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas_dim(*this, out), blas_dim(*this, in),
              blas_dim(*this, n), 1.0f, dy.data<float>(), blas_dim(*this, out), x_.data<float>(),
              blas_dim(*this, in), 1.0f, weight_->grad.data<float>(), blas_dim(*this, in));
  if (has_bias_) {
    // Rows in order, columns vectorised: a fixed summation order.
    float* db = bias_.grad.data<float>();
    const float* d = dy.data<float>();
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t o = 0; o < out; ++o) db[o] += d[r * out + o];
    }
  }
}

}  // namespace dspp
