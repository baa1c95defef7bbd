// LayerNorm over the last dimension (llm.c's layernorm_forward/backward). Rows are independent, so
// forward and the input gradient run in parallel over rows; the weight gradients sum over rows in
// row order (a fixed order, whatever the thread count).
#include <dspp/nn.h>

#include <cmath>

#include "nn/check.h"
#include "nn/device_ops.h"

namespace dspp {

LayerNorm::LayerNorm(int64_t dim, float eps) : eps_(eps) {
  if (dim <= 0) nn::fail(*this, "dim must be positive, got " + std::to_string(dim));
  register_parameter("weight", weight_, {dim});
  register_parameter("bias", bias_, {dim});
  float* w = weight_.value.data<float>();
  for (int64_t i = 0; i < dim; ++i) w[i] = 1.0f;
}

Tensor LayerNorm::forward(const Tensor& x) {
  const int64_t c = weight_.shape[0];
  if (nn::gpu::on_gpu(weight_.value)) {
    const std::string who = nn::where(*this);
    const Tensor& w = weight_.value;
    Tensor xd = nn::gpu::to_compute(who, "input", x, w.dtype(), w.device());
    if (xd.size(-1) != c) {
      nn::fail(*this, "input must be [..., " + std::to_string(c) + "], got " + x.describe());
    }
    const int64_t rows = xd.numel() / c;
    Tensor y = Tensor::empty(xd.shape(), w.dtype(), w.device());
    Tensor mean = Tensor::empty({rows}, DSPP_F32, w.device());
    Tensor rstd = Tensor::empty({rows}, DSPP_F32, w.device());
    const dspp_tensor_view vx = xd.view(), vw = w.view(), vb = bias_.value.view(), vy = y.view(),
                           vm = mean.view(), vr = rstd.view();
    nn::gpu::run(
        who, nn::gpu::kernels(who).layernorm_forward(&vx, &vw, &vb, eps_, &vy, &vm, &vr, nullptr),
        "layernorm_forward");
    x_ = xd;
    mean_ = mean;
    rstd_ = rstd;
    return y;
  }
  if (nn::require_host(*this, "input", x, DSPP_F32) != c) {
    nn::fail(*this, "input must be [..., " + std::to_string(c) + "], got " + x.describe());
  }
  const int64_t rows = x.numel() / c;
  Tensor out = Tensor::empty(x.shape());
  Tensor mean = Tensor::empty({rows});
  Tensor rstd = Tensor::empty({rows});
  const float* xp = x.data<float>();
  const float* w = weight_.value.data<float>();
  const float* b = bias_.value.data<float>();
  float* o = out.data<float>();
  float* mp = mean.data<float>();
  float* rp = rstd.data<float>();
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    float m = 0.0f;
    for (int64_t i = 0; i < c; ++i) m += xr[i];
    m /= static_cast<float>(c);
    float v = 0.0f;
    for (int64_t i = 0; i < c; ++i) v += (xr[i] - m) * (xr[i] - m);
    v /= static_cast<float>(c);
    float s = 1.0f / std::sqrt(v + eps_);
    float* orow = o + r * c;
    for (int64_t i = 0; i < c; ++i) orow[i] = (xr[i] - m) * s * w[i] + b[i];
    mp[r] = m;
    rp[r] = s;
  }
  x_ = x;
  mean_ = mean;
  rstd_ = rstd;
  return out;
}

Tensor LayerNorm::backward_input(const Tensor& dy) {
  nn::require_forward(*this, x_);
  if (nn::gpu::on_gpu(x_)) {
    const std::string who = nn::where(*this);
    nn::gpu::require(who, "dy", dy, x_.shape(), x_.dtype(), x_.device());
    Tensor dx = Tensor::empty(x_.shape(), x_.dtype(), x_.device());
    const dspp_tensor_view vdy = dy.view(), vx = x_.view(), vw = weight_.value.view(),
                           vm = mean_.view(), vr = rstd_.view(), vdx = dx.view();
    nn::gpu::run(who,
                 nn::gpu::kernels(who).layernorm_backward(&vdy, &vx, &vw, &vm, &vr, &vdx, nullptr,
                                                          nullptr, nullptr),
                 "layernorm_backward");
    return dx;
  }
  nn::require_shape(*this, "dy", dy, x_.shape());
  const int64_t c = weight_.shape[0];
  const int64_t rows = x_.numel() / c;
  Tensor dx = Tensor::empty(x_.shape());
  const float* xp = x_.data<float>();
  const float* d = dy.data<float>();
  const float* w = weight_.value.data<float>();
  const float* mp = mean_.data<float>();
  const float* rp = rstd_.data<float>();
  float* dxp = dx.data<float>();
#pragma omp parallel for schedule(static) if (rows * c > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    const float* dr = d + r * c;
    const float m = mp[r], s = rp[r];
    // dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dy * w.
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int64_t i = 0; i < c; ++i) {
      float dn = dr[i] * w[i];
      dnorm_mean += dn;
      dnorm_norm_mean += dn * (xr[i] - m) * s;
    }
    dnorm_mean /= static_cast<float>(c);
    dnorm_norm_mean /= static_cast<float>(c);
    float* dxr = dxp + r * c;
    for (int64_t i = 0; i < c; ++i) {
      float norm = (xr[i] - m) * s;
      dxr[i] = s * (dr[i] * w[i] - dnorm_mean - norm * dnorm_norm_mean);
    }
  }
  return dx;
}

void LayerNorm::backward_weight(const Tensor& dy) {
  nn::require_forward(*this, x_);
  if (nn::gpu::on_gpu(x_)) {
    const std::string who = nn::where(*this);
    nn::gpu::require(who, "dy", dy, x_.shape(), x_.dtype(), x_.device());
    const dspp_tensor_view vdy = dy.view(), vx = x_.view(), vw = weight_.value.view(),
                           vm = mean_.view(), vr = rstd_.view(), vdw = weight_.grad.view(),
                           vdb = bias_.grad.view();
    nn::gpu::run(who,
                 nn::gpu::kernels(who).layernorm_backward(&vdy, &vx, &vw, &vm, &vr, nullptr, &vdw,
                                                          &vdb, nullptr),
                 "layernorm_backward");
    return;
  }
  nn::require_shape(*this, "dy", dy, x_.shape());
  const int64_t c = weight_.shape[0];
  const int64_t rows = x_.numel() / c;
  const float* xp = x_.data<float>();
  const float* d = dy.data<float>();
  const float* mp = mean_.data<float>();
  const float* rp = rstd_.data<float>();
  float* dw = weight_.grad.data<float>();
  float* db = bias_.grad.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * c;
    const float* dr = d + r * c;
    const float m = mp[r], s = rp[r];
    for (int64_t i = 0; i < c; ++i) {
      dw[i] += dr[i] * (xr[i] - m) * s;
      db[i] += dr[i];
    }
  }
}

}  // namespace dspp
