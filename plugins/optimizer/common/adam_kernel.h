// The Adam/AdamW element kernel, shared by optimizer/adam and optimizer/muon (whose parameters
// that Muon does not take get DeepSpeed's auxiliary AdamW). Header-only, like flat_optimizer.h.
//
// Per element, with bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t (1 without bias
// correction):
//   g += l2 * p                                            (L2 mode only)
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   p = p * decay - (lr / bc1) m / (sqrt(v) * (1 / sqrt(bc2)) + eps)
// where decay = 1 - lr * wd in decoupled (AdamW) mode and 1 in L2 mode.
#ifndef DSPP_PLUGINS_OPTIMIZER_ADAM_KERNEL_H
#define DSPP_PLUGINS_OPTIMIZER_ADAM_KERNEL_H

#include <dspp/kinds/device.h>

#include <cmath>
#include <cstdint>

namespace dspp::optim {

// Constants of one group for one step, rounded once to fp32 as the reference kernels do.
struct AdamConsts {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;     // lr / bc1
  float inv_sqrt_bc2;  // 1 / sqrt(bc2): one division per element instead of two (as DeepSpeed's
                       // CPU Adam; measured 1.37x per core in bench/cpu_adam)
  float eps;
  float decay;  // 1 - lr * wd when decoupled, else 1
  float l2;     // wd when L2, else 0
};

// The constants in double, rounded once. `t` is the 1-based step count.
inline AdamConsts adam_consts(double lr, double beta1, double beta2, double eps, double wd,
                              int64_t t, bool bias_correction, bool decoupled) {
  const double td = static_cast<double>(t);
  const double bc1 = bias_correction ? 1.0 - std::pow(beta1, td) : 1.0;
  const double bc2 = bias_correction ? 1.0 - std::pow(beta2, td) : 1.0;
  AdamConsts k{};
  k.beta1 = static_cast<float>(beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  k.beta2 = static_cast<float>(beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  k.step_size = static_cast<float>(lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.eps = static_cast<float>(eps);
  k.decay = static_cast<float>(decoupled ? 1.0 - lr * wd : 1.0);
  k.l2 = static_cast<float>(decoupled ? 0.0 : wd);
  return k;
}

// The same constants for DeviceKernels::adam_step (the GPU path).
inline dspp::DeviceAdamConsts device_adam_consts(const AdamConsts& c) {
  dspp::DeviceAdamConsts d{};
  d.beta1 = c.beta1;
  d.one_minus_beta1 = c.one_minus_beta1;
  d.beta2 = c.beta2;
  d.one_minus_beta2 = c.one_minus_beta2;
  d.step_size = c.step_size;
  d.inv_sqrt_bc2 = c.inv_sqrt_bc2;
  d.eps = c.eps;
  d.decay = c.decay;
  d.l2 = c.l2;
  return d;
}

// `vmax` (AMSGrad's running maximum of v) is read only when kAmsgrad.
template <bool kL2, bool kAmsgrad>
void adam_kernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                 float* __restrict v, float* __restrict vmax, int64_t n, const AdamConsts& k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    const float pi = p[i];
    if constexpr (kL2) gi = gi + k.l2 * pi;
    const float mi = k.beta1 * m[i] + k.one_minus_beta1 * gi;
    const float vi = k.beta2 * v[i] + k.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float vd = vi;
    if constexpr (kAmsgrad) {
      vd = vmax[i] > vi ? vmax[i] : vi;
      vmax[i] = vd;
    }
    const float denom = std::sqrt(vd) * k.inv_sqrt_bc2 + k.eps;
    p[i] = pi * k.decay - k.step_size * (mi / denom);
  }
}

}  // namespace dspp::optim

#endif  // DSPP_PLUGINS_OPTIMIZER_ADAM_KERNEL_H
