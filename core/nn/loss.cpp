// The losses. Row losses are computed in parallel and summed in row order in double, so the
// mean is the same whatever the thread count.
#include <dspp/error.h>
#include <dspp/nn.h>

#include <cmath>
#include <vector>

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
  count_ = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (t[r] == ignore_index_) continue;
    if (t[r] < 0 || t[r] >= V) {
      fail("CrossEntropyLoss", "target " + std::to_string(t[r]) + " at position " +
                                   std::to_string(r) + " is outside [0, " + std::to_string(V) +
                                   ") and is not ignore_index " + std::to_string(ignore_index_));
    }
    ++count_;
  }
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

Tensor CrossEntropyLoss::backward_loss(float scale) {
  if (!logits_.defined()) fail("CrossEntropyLoss", "backward_loss called before forward_loss");
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
