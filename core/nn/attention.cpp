// Causal multi-head self-attention, GPT-2 layout: c_attn -> per-head softmax(q k^T / sqrt(hs))
// with a causal mask -> c_proj. The attention core follows llm.c's attention_forward/backward,
// parallel over (batch, head): each pair reads and writes only its own head's slices, so the
// result does not depend on the thread count.
#include <dspp/nn.h>

#include <cmath>
#include <limits>
#include <vector>

#include "nn/check.h"
#include "nn/device_ops.h"

namespace dspp {
namespace {

// qkv [B, T, 3C] (q, k, v side by side, head h at columns h*hs of each) -> y [B, T, C]; att gets
// the probabilities [B, NH, T, T].
void attention_forward(float* y, float* att, const float* qkv, int64_t B, int64_t T, int64_t C,
                       int64_t NH) {
  const int64_t hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for collapse(2) schedule(static) if (B * NH * T * T * hs > (1 << 16))
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* q = qkv + (b * T + t) * C3 + h * hs;
        float* a = att + ((b * NH + h) * T + t) * T;
        float maxv = -std::numeric_limits<float>::infinity();
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* k = qkv + (b * T + t2) * C3 + C + h * hs;
          float s = 0.0f;
          for (int64_t i = 0; i < hs; ++i) s += q[i] * k[i];
          s *= scale;
          a[t2] = s;
          if (s > maxv) maxv = s;
        }
        float sum = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          float e = std::exp(a[t2] - maxv);
          a[t2] = e;
          sum += e;
        }
        const float inv = 1.0f / sum;
        for (int64_t t2 = 0; t2 <= t; ++t2) a[t2] *= inv;
        for (int64_t t2 = t + 1; t2 < T; ++t2) a[t2] = 0.0f;  // masked: the future
        float* o = y + (b * T + t) * C + h * hs;
        for (int64_t i = 0; i < hs; ++i) o[i] = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* v = qkv + (b * T + t2) * C3 + 2 * C + h * hs;
          for (int64_t i = 0; i < hs; ++i) o[i] += a[t2] * v[i];
        }
      }
    }
  }
}

// dy [B, T, C] -> dqkv [B, T, 3C] (zeroed by the caller).
void attention_backward(float* dqkv, const float* dy, const float* qkv, const float* att, int64_t B,
                        int64_t T, int64_t C, int64_t NH) {
  const int64_t hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for collapse(2) schedule(static) if (B * NH * T * T * hs > (1 << 16))
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      std::vector<float> datt(T);
      for (int64_t t = 0; t < T; ++t) {
        const float* a = att + ((b * NH + h) * T + t) * T;
        const float* dout = dy + (b * T + t) * C + h * hs;
        const float* q = qkv + (b * T + t) * C3 + h * hs;
        float* dq = dqkv + (b * T + t) * C3 + h * hs;
        // o = sum_t2 a[t2] v[t2]: datt[t2] = dout . v[t2], dv[t2] += a[t2] dout.
        float adatt = 0.0f;  // sum_t2 a[t2] datt[t2], for the softmax backward
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* v = qkv + (b * T + t2) * C3 + 2 * C + h * hs;
          float* dv = dqkv + (b * T + t2) * C3 + 2 * C + h * hs;
          float s = 0.0f;
          for (int64_t i = 0; i < hs; ++i) {
            s += dout[i] * v[i];
            dv[i] += a[t2] * dout[i];
          }
          datt[t2] = s;
          adatt += a[t2] * s;
        }
        // Softmax: dpre[t2] = a[t2] (datt[t2] - sum a datt); pre = scale q . k[t2].
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* k = qkv + (b * T + t2) * C3 + C + h * hs;
          float* dk = dqkv + (b * T + t2) * C3 + C + h * hs;
          const float dpre = a[t2] * (datt[t2] - adatt) * scale;
          for (int64_t i = 0; i < hs; ++i) {
            dq[i] += dpre * k[i];
            dk[i] += dpre * q[i];
          }
        }
      }
    }
  }
}

}  // namespace

CausalSelfAttention::CausalSelfAttention(int64_t n_embd, int64_t n_head, Rng& rng, float proj_std)
    : n_head_(n_head) {
  if (n_embd <= 0 || n_head <= 0 || n_embd % n_head != 0) {
    nn::fail(*this, "n_embd (" + std::to_string(n_embd) +
                        ") must be a positive multiple of n_head (" + std::to_string(n_head) + ")");
  }
  c_attn_ = &register_module("c_attn", std::make_shared<Linear>(n_embd, 3 * n_embd, true, rng));
  c_proj_ =
      &register_module("c_proj", std::make_shared<Linear>(n_embd, n_embd, true, rng, proj_std));
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
  const int64_t C = c_proj_->out_features();
  if (x.dim() != 3 || x.size(2) != C) {
    nn::fail(*this, "input must be [B, T, " + std::to_string(C) + "], got " + x.describe());
  }
  // c_attn decides where this runs (its weight's device; it moves a host input onto the GPU):
  // under ZeRO-3 c_proj's weight is gathered only when c_proj's own forward starts.
  Tensor qkv = forward_child(*c_attn_, x);
  const int64_t B = qkv.size(0), T = qkv.size(1);
  if (nn::gpu::on_gpu(qkv)) {
    const std::string who = nn::where(*this);
    Tensor y = Tensor::empty({B, T, C}, qkv.dtype(), qkv.device());
    Tensor lse = Tensor::empty({B, n_head_, T}, DSPP_F32, qkv.device());
    const dspp_tensor_view vq = qkv.view(), vy = y.view(), vl = lse.view();
    nn::gpu::run(who,
                 nn::gpu::kernels(who).attention_forward(&vq, static_cast<int32_t>(n_head_), &vy,
                                                         &vl, nullptr),
                 "attention_forward");
    qkv_ = qkv;
    y_ = y;
    lse_ = lse;
    return forward_child(*c_proj_, y);
  }
  nn::require_host(*this, "input", x, DSPP_F32);
  Tensor y = Tensor::empty({B, T, C});
  Tensor att = Tensor::empty({B, n_head_, T, T});
  attention_forward(y.data<float>(), att.data<float>(), qkv.data<float>(), B, T, C, n_head_);
  qkv_ = qkv;
  att_ = att;
  return forward_child(*c_proj_, y);
}

Tensor CausalSelfAttention::backward_input(const Tensor& dy) {
  nn::require_forward(*this, qkv_);
  if (nn::gpu::on_gpu(qkv_)) {
    const std::string who = nn::where(*this);
    Tensor dy_core = backward_child(*c_proj_, dy);
    Tensor dqkv = Tensor::empty(qkv_.shape(), qkv_.dtype(), qkv_.device());
    const dspp_tensor_view vq = qkv_.view(), vy = y_.view(), vl = lse_.view(), vdy = dy_core.view(),
                           vdq = dqkv.view();
    nn::gpu::run(who,
                 nn::gpu::kernels(who).attention_backward(
                     &vq, &vy, &vl, &vdy, static_cast<int32_t>(n_head_), &vdq, nullptr),
                 "attention_backward");
    return backward_child(*c_attn_, dqkv);
  }
  const int64_t B = qkv_.size(0), T = qkv_.size(1), C = c_proj_->out_features();
  nn::require_shape(*this, "dy", dy, {B, T, C});
  Tensor dy_core = backward_child(*c_proj_, dy);
  Tensor dqkv = Tensor::zeros({B, T, 3 * C});
  attention_backward(dqkv.data<float>(), dy_core.data<float>(), qkv_.data<float>(),
                     att_.data<float>(), B, T, C, n_head_);
  return backward_child(*c_attn_, dqkv);
}

}  // namespace dspp
