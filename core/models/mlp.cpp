// MLP: Linear, GELU, Linear, ... with the loss its config names.
#include <dspp/error.h>
#include <dspp/models.h>

#include <cmath>

namespace dspp {

MLP::MLP(const MLPConfig& config, uint64_t seed) : config_(config) {
  if (config.sizes.size() < 2) {
    throw Error(Errc::kInvalidArgument, "MLPConfig.sizes needs an input and an output size");
  }
  Rng rng(seed);
  net_ = &register_module("net", std::make_shared<Sequential>());
  for (size_t i = 0; i + 1 < config.sizes.size(); ++i) {
    const int64_t in = config.sizes[i], out = config.sizes[i + 1];
    const float std = in > 0 ? 1.0f / std::sqrt(static_cast<float>(in)) : 0.0f;
    net_->add(std::make_shared<Linear>(in, out, true, rng, std));
    if (i + 2 < config.sizes.size()) net_->add(std::make_shared<GELU>());
  }
}

Tensor MLP::forward(const Tensor& x) {
  output_ = forward_child(*net_, x);
  return output_;
}

Tensor MLP::backward_input(const Tensor& dy) {
  return backward_child(*net_, dy);
}

float MLP::forward_loss(const Batch& batch) {
  Tensor out = forward(batch.inputs);
  if (config_.loss == MLPLoss::kCrossEntropy)
    return cross_entropy_.forward_loss(out, batch.targets);
  return mse_.forward_loss(out, batch.targets);
}

void MLP::backward_loss(float scale) {
  backward(config_.loss == MLPLoss::kCrossEntropy ? cross_entropy_.backward_loss(scale)
                                                  : mse_.backward_loss(scale));
}

}  // namespace dspp
