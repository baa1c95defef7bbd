// GELU, tanh approximation: y = x/2 (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi).
#include <dspp/nn.h>

#include <cmath>

#include "nn/check.h"
#include "nn/device_ops.h"

namespace dspp {
namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

}  // namespace

Tensor GELU::forward(const Tensor& x) {
  if (nn::gpu::on_gpu(x)) {
    const std::string who = nn::where(*this);
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    const dspp_tensor_view vx = x.view(), vy = y.view();
    nn::gpu::run(who, nn::gpu::kernels(who).gelu_forward(&vx, &vy, nullptr), "gelu_forward");
    x_ = x;
    return y;
  }
  nn::require_host(*this, "input", x, DSPP_F32);
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    float v = xp[i];
    yp[i] = 0.5f * v * (1.0f + std::tanh(kGeluScale * (v + kGeluCubic * v * v * v)));
  }
  x_ = x;
  return y;
}

Tensor GELU::backward_input(const Tensor& dy) {
  nn::require_forward(*this, x_);
  if (nn::gpu::on_gpu(x_)) {
    const std::string who = nn::where(*this);
    nn::gpu::require(who, "dy", dy, x_.shape(), x_.dtype(), x_.device());
    Tensor dx = Tensor::empty(x_.shape(), x_.dtype(), x_.device());
    const dspp_tensor_view vx = x_.view(), vdy = dy.view(), vdx = dx.view();
    nn::gpu::run(who, nn::gpu::kernels(who).gelu_backward(&vx, &vdy, &vdx, nullptr),
                 "gelu_backward");
    return dx;
  }
  nn::require_shape(*this, "dy", dy, x_.shape());
  Tensor dx = Tensor::empty(x_.shape());
  const float* xp = x_.data<float>();
  const float* d = dy.data<float>();
  float* dxp = dx.data<float>();
  const int64_t n = x_.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    float v = xp[i];
    float t = std::tanh(kGeluScale * (v + kGeluCubic * v * v * v));
    // d/dx = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 * 0.044715 x^2)
    float local = 0.5f * (1.0f + t) +
                  0.5f * v * (1.0f - t * t) * kGeluScale * (1.0f + 3.0f * kGeluCubic * v * v);
    dxp[i] = local * d[i];
  }
  return dx;
}

}  // namespace dspp
