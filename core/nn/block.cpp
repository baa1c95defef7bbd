// GPT-2's pre-LN transformer block. Its backward is its children's: the residual sums pass dy
// through unchanged and add the branch's input gradient.
#include <dspp/nn.h>

#include "nn/check.h"
#include "nn/ops.h"

namespace dspp {

TransformerBlock::TransformerBlock(int64_t n_embd, int64_t n_head, Rng& rng, float proj_std) {
  // Registered (and so initialised from rng) in GPT-2's parameter order.
  ln_1_ = &register_module("ln_1", std::make_shared<LayerNorm>(n_embd));
  attn_ = &register_module("attn",
                           std::make_shared<CausalSelfAttention>(n_embd, n_head, rng, proj_std));
  ln_2_ = &register_module("ln_2", std::make_shared<LayerNorm>(n_embd));
  mlp_ = &register_module("mlp", std::make_shared<Sequential>());
  mlp_->add(std::make_shared<Linear>(n_embd, 4 * n_embd, true, rng), "c_fc");
  mlp_->add(std::make_shared<GELU>(), "act");
  mlp_->add(std::make_shared<Linear>(4 * n_embd, n_embd, true, rng, proj_std), "c_proj");
}

Tensor TransformerBlock::forward(const Tensor& x) {
  Tensor a = forward_child(*attn_, forward_child(*ln_1_, x));
  Tensor r = nn::add(x, a);
  Tensor m = forward_child(*mlp_, forward_child(*ln_2_, r));
  return nn::add(r, m);
}

Tensor TransformerBlock::backward_input(const Tensor& dy) {
  Tensor dr = nn::add(dy, backward_child(*ln_2_, backward_child(*mlp_, dy)));
  return nn::add(dr, backward_child(*ln_1_, backward_child(*attn_, dr)));
}

}  // namespace dspp
