// The losses. Row losses are computed in parallel and summed in row order in double, so the
// mean is the same whatever the thread count.
#include <dspp/error.h>
#include <dspp/nn.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "nn/device_ops.h"

namespace dspp {
namespace {

[[noreturn]] void fail(const char* who, const std::string& msg) {
  throw Error(Errc::kInvalidArgument, std::string(who) + ": " + msg);
}

bool host_of(const Tensor& t, dspp_dtype dtype) {
  return t.defined() && t.dtype() == dtype && t.device().type == DSPP_DEVICE_CPU;
}

}  // namespace

float CrossEntropyLoss::forward_loss(const Tensor& logits, const Tensor& targets) {
  if (nn::gpu::on_gpu(logits)) return forward_loss_gpu(logits, targets);
  if (!host_of(logits, DSPP_F32) || logits.dim() < 1 || logits.size(-1) <= 0) {
    fail("CrossEntropyLoss", "logits must be f32 [..., V] on the cpu, got " + logits.describe());
  }
  std::vector<int64_t> rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  if (!host_of(targets, DSPP_I32) || targets.shape() != rows_shape) {
    fail("CrossEntropyLoss",
         "targets must be i32 shaped like the logits without their last "
         "dimension (logits " +
             logits.describe() + "), got " + targets.describe());
  }
  const int64_t V = logits.size(-1);
  const int64_t n = targets.numel();
  const int32_t* t = targets.data<int32_t>();
  count_ = count_targets(targets, V);
  Tensor lse = Tensor::empty({n});
  std::vector<double> row_loss(n, 0.0);
  const float* l = logits.data<float>();
  float* lp = lse.data<float>();
#pragma omp parallel for schedule(static) if (n * V > (1 << 15))
  for (int64_t r = 0; r < n; ++r) {
    const float* row = l + r * V;
    float maxv = row[0];
    for (int64_t v = 1; v < V; ++v) maxv = row[v] > maxv ? row[v] : maxv;
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - maxv);  // float exp, double sum
    const double lse_r = maxv + std::log(sum);
    lp[r] = static_cast<float>(lse_r);
    if (t[r] != ignore_index_) row_loss[r] = lse_r - row[t[r]];
  }
  double total = 0.0;
  for (int64_t r = 0; r < n; ++r) total += row_loss[r];
  logits_ = logits;
  targets_ = targets;
  lse_ = lse;
  return count_ > 0 ? static_cast<float>(total / static_cast<double>(count_)) : 0.0f;
}

int64_t CrossEntropyLoss::count_targets(const Tensor& targets, int64_t V) const {
  const int32_t* t = targets.data<int32_t>();
  int64_t count = 0;
  for (int64_t r = 0, n = targets.numel(); r < n; ++r) {
    if (t[r] == ignore_index_) continue;
    if (t[r] < 0 || t[r] >= V) {
      fail("CrossEntropyLoss", "target " + std::to_string(t[r]) + " at position " +
                                   std::to_string(r) + " is outside [0, " + std::to_string(V) +
                                   ") and is not ignore_index " + std::to_string(ignore_index_));
    }
    ++count;
  }
  return count;
}

// On the GPU: the fused kernel gives the mean loss (copied to the host: the caller wants the
// number) and, in backward_loss, the logits' gradient. Targets are checked and counted on the
// host (a host copy is made when they come from the device).
float CrossEntropyLoss::forward_loss_gpu(const Tensor& logits, const Tensor& targets) {
  const char* who = "CrossEntropyLoss";
  if (logits.dim() < 1 || logits.size(-1) <= 0 || !nn::gpu::is_float(logits.dtype())) {
    fail(who, "logits must be float [..., V], got " + logits.describe());
  }
  std::vector<int64_t> rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  if (!targets.defined() || targets.dtype() != DSPP_I32 || targets.shape() != rows_shape) {
    fail(who, "targets must be i32 shaped like the logits without their last dimension (logits " +
                  logits.describe() + "), got " + targets.describe());
  }
  count_ = count_targets(targets.to(cpu_device()), logits.size(-1));
  Tensor td = targets.to(logits.device());
  Tensor mean = Tensor::empty({1}, DSPP_F32, logits.device());
  // The gradient comes out of the same pass over the logits (for scale 1; backward_loss scales
  // it when asked for another), so the logits are read once per micro-step, not twice.
  Tensor d = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  const dspp_tensor_view vl = logits.view(), vt = td.view(), vm = mean.view(), vd = d.view();
  nn::gpu::run(who,
               nn::gpu::kernels(who).cross_entropy(&vl, &vt, ignore_index_, 1.0f, nullptr, &vm, &vd,
                                                   nullptr),
               "cross_entropy");
  dlogits_ = d;
  logits_ = logits;
  targets_ = td;
  float loss = 0.0f;
  std::memcpy(&loss, mean.to(cpu_device()).data(), sizeof loss);
  return loss;
}

Tensor CrossEntropyLoss::backward_loss(float scale) {
  if (!logits_.defined()) fail("CrossEntropyLoss", "backward_loss called before forward_loss");
  if (nn::gpu::on_gpu(logits_)) {
    Tensor d = dlogits_;
    dlogits_ = Tensor();  // one backward per forward; frees it after the model's backward
    if (!d.defined()) fail("CrossEntropyLoss", "backward_loss called twice for one forward_loss");
    if (scale == 1.0f) return d;
    const dspp_tensor_view vd = d.view();
    DeviceKernels& k = nn::gpu::kernels("CrossEntropyLoss");
    if (d.dtype() == DSPP_F16) {
      // fp16: the unit gradient (~1/(rows V)) underflows, which is what the loss scale is for:
      // compute it scaled, in a second pass.
      const dspp_tensor_view vl = logits_.view(), vt = targets_.view();
      nn::gpu::run("CrossEntropyLoss",
                   k.cross_entropy(&vl, &vt, ignore_index_, scale, nullptr, nullptr, &vd, nullptr),
                   "cross_entropy");
    } else {
      // f32/bf16 have the range: scaling the unit gradient rounds once more than computing it
      // scaled, a difference of one rounding (GA > 1).
      nn::gpu::run("CrossEntropyLoss", k.scale(&vd, scale, &vd, nullptr), "scale");
    }
    return d;
  }
  const int64_t V = logits_.size(-1);
  const int64_t n = targets_.numel();
  Tensor d = Tensor::empty(logits_.shape());
  const float* l = logits_.data<float>();
  const int32_t* t = targets_.data<int32_t>();
  const float* lp = lse_.data<float>();
  float* dp = d.data<float>();
  // d(mean loss)/d logit = (softmax - onehot) / count.
  const float f = count_ > 0 ? scale / static_cast<float>(count_) : 0.0f;
#pragma omp parallel for schedule(static) if (n * V > (1 << 15))
  for (int64_t r = 0; r < n; ++r) {
    float* drow = dp + r * V;
    if (t[r] == ignore_index_) {
      for (int64_t v = 0; v < V; ++v) drow[v] = 0.0f;
      continue;
    }
    const float* row = l + r * V;
    for (int64_t v = 0; v < V; ++v) drow[v] = f * std::exp(row[v] - lp[r]);
    drow[t[r]] -= f;
  }
  return d;
}

float MSELoss::forward_loss(const Tensor& predictions, const Tensor& targets) {
  if (!host_of(predictions, DSPP_F32) || !host_of(targets, DSPP_F32) ||
      predictions.shape() != targets.shape()) {
    fail("MSELoss", "predictions and targets must be f32 cpu tensors of one shape, got " +
                        predictions.describe() + " and " + targets.describe());
  }
  const int64_t n = predictions.numel();
  const float* p = predictions.data<float>();
  const float* t = targets.data<float>();
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double e = static_cast<double>(p[i]) - t[i];
    sum += e * e;
  }
  predictions_ = predictions;
  targets_ = targets;
  return n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
}

Tensor MSELoss::backward_loss(float scale) {
  if (!predictions_.defined()) fail("MSELoss", "backward_loss called before forward_loss");
  const int64_t n = predictions_.numel();
  Tensor d = Tensor::empty(predictions_.shape());
  const float* p = predictions_.data<float>();
  const float* t = targets_.data<float>();
  float* dp = d.data<float>();
  const float f = n > 0 ? 2.0f * scale / static_cast<float>(n) : 0.0f;
  for (int64_t i = 0; i < n; ++i) dp[i] = f * (p[i] - t[i]);
  return d;
}

}  // namespace dspp
