// Small elementwise helpers the containers share (residual sums).
#pragma once

#include <dspp/tensor.h>

#include <cstdint>

#include "nn/device_ops.h"

namespace dspp::nn {

// a + b, both f32 of one shape (the caller checked), into a new tensor; on the GPU, of one
// float dtype.
inline Tensor add(const Tensor& a, const Tensor& b) {
  if (gpu::on_gpu(a)) return gpu::add("add", a, b);
  Tensor out = Tensor::empty(a.shape());
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
  return out;
}

}  // namespace dspp::nn
