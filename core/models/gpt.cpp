// GPT-2 (llm.c's gpt2_forward/gpt2_backward, as a tree of modules): embeddings, n_layer pre-LN
// blocks, ln_f, and an lm_head that reads the token embedding.
#include <dspp/error.h>
#include <dspp/models.h>

#include <cmath>

#include "nn/check.h"
#include "nn/device_ops.h"
#include "nn/ops.h"

namespace dspp {

GPTTransformer::GPTTransformer(const GPTConfig& config, Rng& rng) : block_size_(config.block_size) {
  if (config.vocab_size <= 0 || config.block_size <= 0 || config.n_layer <= 0 ||
      config.n_head <= 0 || config.n_embd <= 0 || config.n_embd % config.n_head != 0) {
    nn::fail(*this,
             "GPTConfig needs positive sizes and n_embd a multiple of n_head; got vocab_size " +
                 std::to_string(config.vocab_size) + ", block_size " +
                 std::to_string(config.block_size) + ", n_layer " + std::to_string(config.n_layer) +
                 ", n_head " + std::to_string(config.n_head) + ", n_embd " +
                 std::to_string(config.n_embd));
  }
  // GPT-2's scaled init of the projections that write into the residual stream.
  const float proj_std = 0.02f / std::sqrt(2.0f * static_cast<float>(config.n_layer));
  wte_ =
      &register_module("wte", std::make_shared<Embedding>(config.vocab_size, config.n_embd, rng));
  wpe_ =
      &register_module("wpe", std::make_shared<Embedding>(config.block_size, config.n_embd, rng));
  h_ = &register_module("h", std::make_shared<Sequential>());
  for (int64_t l = 0; l < config.n_layer; ++l) {
    h_->add(std::make_shared<TransformerBlock>(config.n_embd, config.n_head, rng, proj_std));
  }
  ln_f_ = &register_module("ln_f", std::make_shared<LayerNorm>(config.n_embd));
  positions_ = Tensor::empty({config.block_size}, DSPP_I32);
  for (int64_t t = 0; t < config.block_size; ++t) {
    positions_.data<int32_t>()[t] = static_cast<int32_t>(t);
  }
}

Tensor GPTTransformer::forward(const Tensor& tokens) {
  if (!tokens.defined() || tokens.dtype() != DSPP_I32 || tokens.dim() != 2 ||
      tokens.size(1) > block_size_) {
    nn::fail(*this, "tokens must be i32 [B, T] with T <= block_size " +
                        std::to_string(block_size_) + ", got " + tokens.describe());
  }
  const int64_t B = tokens.size(0), T = tokens.size(1);
  Tensor tok = forward_child(*wte_, tokens);  // [B, T, C]
  if (nn::gpu::on_gpu(tok)) {
    // On the GPU the positions are looked up as [B, T] ids, so the sum is one elementwise add
    // and wpe's backward sums the batch in its deterministic scatter-add.
    if (!nn::gpu::on_gpu(positions_bt_) || positions_bt_.size(0) != B ||
        positions_bt_.size(1) != T) {
      Tensor host = Tensor::empty({B, T}, DSPP_I32);
      for (int64_t i = 0; i < B * T; ++i) host.data<int32_t>()[i] = static_cast<int32_t>(i % T);
      positions_bt_ = host.to(tok.device());
    }
    Tensor pos = forward_child(*wpe_, positions_bt_);  // [B, T, C]
    return forward_child(*ln_f_, forward_child(*h_, nn::add(tok, pos)));
  }
  nn::require_host(*this, "tokens", tokens, DSPP_I32);
  Tensor pos = forward_child(*wpe_, positions_.slice(0, {T}));  // [T, C]
  const int64_t C = tok.size(2);
  Tensor x = Tensor::empty({B, T, C});
  const float* tp = tok.data<float>();
  const float* pp = pos.data<float>();
  float* xp = x.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < T * C; ++i) xp[b * T * C + i] = tp[b * T * C + i] + pp[i];
  }
  return forward_child(*ln_f_, forward_child(*h_, x));
}

Tensor GPTTransformer::backward_input(const Tensor& dy) {
  Tensor d = backward_child(*h_, backward_child(*ln_f_, dy));
  if (nn::gpu::on_gpu(d)) {
    backward_child(*wpe_, d);
    backward_child(*wte_, d);
    return Tensor();
  }
  // x = tok + pos broadcast over the batch: pos gets the batch sum, in batch order.
  const int64_t B = d.size(0), T = d.size(1), C = d.size(2);
  Tensor dpos = Tensor::zeros({T, C});
  const float* dp = d.data<float>();
  float* pp = dpos.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < T * C; ++i) pp[i] += dp[b * T * C + i];
  }
  backward_child(*wpe_, dpos);
  backward_child(*wte_, d);
  return Tensor();
}

GPT::GPT(const GPTConfig& config, uint64_t seed) : config_(config) {
  Rng rng(seed);
  transformer_ = &register_module("transformer", std::make_shared<GPTTransformer>(config, rng));
  lm_head_ = &register_module("lm_head", std::make_shared<Linear>(transformer_->wte().weight()));
}

Tensor GPT::forward(const Tensor& tokens) {
  logits_ = forward_child(*lm_head_, forward_child(*transformer_, tokens));
  return logits_;
}

Tensor GPT::backward_input(const Tensor& dlogits) {
  return backward_child(*transformer_, backward_child(*lm_head_, dlogits));
}

float GPT::forward_loss(const Batch& batch) {
  if (batch.targets.shape() != batch.inputs.shape()) {
    throw Error(Errc::kInvalidArgument, "GPT: targets must be shaped like the inputs [B, T], got " +
                                            batch.targets.describe() + " for inputs " +
                                            batch.inputs.describe());
  }
  return loss_.forward_loss(forward(batch.inputs), batch.targets);
}

void GPT::backward_loss(float scale) {
  backward(loss_.backward_loss(scale));
}

}  // namespace dspp
