// The layer library: CPU layers with hand-written backward (OpenBLAS GEMMs, loops the compiler
// vectorises, OpenMP over rows and heads), the losses, and the seeded RNG that initialises them.
//
// Layers take and return f32 tensors on the CPU, row-major, with the feature dimension last
// ([..., C]); token ids are i32. A layer keeps a reference to its input for backward: do not
// write into a tensor after handing it to forward(). Results are bitwise reproducible run to run
// and do not depend on the number of OpenMP threads (every reduction has a fixed order).
#ifndef DSPP_NN_H
#define DSPP_NN_H

#include <dspp/module.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace dspp {

// splitmix64 with Box-Muller normals: a small generator whose stream is the same on every compiler
// and platform (std::normal_distribution's is not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next_u64();
  double uniform();                              // [0, 1), 53 random bits
  double normal();                               // standard normal
  void fill_normal(const Tensor& t, float std);  // f32 host tensor, mean 0

 private:
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// y = x W^T + b, W [out, in] as PyTorch. Weights ~ N(0, init_std^2), bias zero.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng, float init_std = 0.02f);
  // Reads a weight [out, in] that another module owns (tied weights: GPT's lm_head reads wte);
  // no bias. The weight gradient accumulates into the owner's parameter.
  explicit Linear(Parameter& tied_weight);
  std::string type_name() const override { return "Linear"; }

  Tensor forward(const Tensor& x) override;  // [..., in] -> [..., out]
  Tensor backward_input(const Tensor& dy) override;
  void backward_weight(const Tensor& dy) override;

  Parameter& weight() { return *weight_; }
  Parameter* bias() { return has_bias_ ? &bias_ : nullptr; }
  int64_t in_features() const { return weight_->shape[1]; }
  int64_t out_features() const { return weight_->shape[0]; }

 private:
  Parameter own_weight_;
  Parameter bias_;
  Parameter* weight_ = &own_weight_;
  bool has_bias_ = false;
  Tensor x_;
};

// out[..., :] = weight[ids[...], :]. ids i32. No input gradient (backward_input returns an
// undefined tensor).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, Rng& rng, float init_std = 0.02f);
  std::string type_name() const override { return "Embedding"; }

  Tensor forward(const Tensor& ids) override;  // i32 [...] -> f32 [..., dim]
  Tensor backward_input(const Tensor& dy) override;
  void backward_weight(const Tensor& dy) override;

  Parameter& weight() { return weight_; }

 private:
  void check_ids(const Tensor& ids) const;  // host ids in [0, num_embeddings)
  Parameter weight_;
  Tensor ids_;
};

// Over the last dimension: (x - mean) / sqrt(var + eps) * weight + bias; weight 1, bias 0.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, float eps = 1e-5f);
  std::string type_name() const override { return "LayerNorm"; }

  Tensor forward(const Tensor& x) override;
  Tensor backward_input(const Tensor& dy) override;
  void backward_weight(const Tensor& dy) override;

  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }

 private:
  Parameter weight_;
  Parameter bias_;
  float eps_;
  Tensor x_;
  Tensor mean_;  // [rows]
  Tensor rstd_;  // [rows]
};

// GELU, tanh approximation (GPT-2's "gelu_new").
class GELU : public Module {
 public:
  std::string type_name() const override { return "GELU"; }
  Tensor forward(const Tensor& x) override;
  Tensor backward_input(const Tensor& dy) override;

 private:
  Tensor x_;
};

// Runs its children in order; backward in reverse.
class Sequential : public Module {
 public:
  std::string type_name() const override { return "Sequential"; }
  // Appends a layer, named by its position ("0", "1", ...) when no name is given.
  template <class M>
  M& add(std::shared_ptr<M> layer, std::string name = "") {
    if (name.empty()) name = std::to_string(children().size());
    return register_module(std::move(name), std::move(layer));
  }
  Tensor forward(const Tensor& x) override;
  Tensor backward_input(const Tensor& dy) override;
};

// GPT-2's causal self-attention: c_attn (fused q, k, v projection, [3C, C]), softmax(q k^T /
// sqrt(head_dim)) under a causal mask per head, c_proj ([C, C], init std `proj_std`).
// Input [B, T, C].
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t n_embd, int64_t n_head, Rng& rng, float proj_std);
  std::string type_name() const override { return "CausalSelfAttention"; }

  Tensor forward(const Tensor& x) override;
  Tensor backward_input(const Tensor& dy) override;

  Linear& c_attn() { return *c_attn_; }
  Linear& c_proj() { return *c_proj_; }

 private:
  int64_t n_head_;
  Linear* c_attn_;
  Linear* c_proj_;
  Tensor qkv_;  // c_attn's output [B, T, 3C]
  Tensor att_;  // CPU: softmax probabilities [B, n_head, T, T] (zero above the diagonal)
  Tensor y_;    // GPU: the attention output [B, T, C] and each row's log-sum-exp [B, n_head, T]
  Tensor lse_;  // (flash-style: the probabilities are recomputed in backward)
};

// GPT-2's pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with mlp = c_fc [4C, C], GELU,
// c_proj [C, 4C] (init std `proj_std`). Children: ln_1, attn, ln_2, mlp (c_fc, act, c_proj).
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t n_embd, int64_t n_head, Rng& rng, float proj_std);
  std::string type_name() const override { return "TransformerBlock"; }

  Tensor forward(const Tensor& x) override;  // [B, T, C] -> [B, T, C]
  Tensor backward_input(const Tensor& dy) override;

 private:
  LayerNorm* ln_1_;
  CausalSelfAttention* attn_;
  LayerNorm* ln_2_;
  Sequential* mlp_;
};

// Softmax cross-entropy over the last dimension, mean over the targets that are not
// `ignore_index`. logits f32 [..., V], targets i32 [...]. Not a Module: it has no parameters.
class CrossEntropyLoss {
 public:
  explicit CrossEntropyLoss(int64_t ignore_index = -100) : ignore_index_(ignore_index) {}
  float forward_loss(const Tensor& logits,
                     const Tensor& targets);  // 0 when every target is ignored
  // d(scale * loss)/d(logits) for the last forward_loss, shaped like the logits.
  Tensor backward_loss(float scale);
  int64_t num_targets() const { return count_; }  // targets counted in the last mean

 private:
  int64_t count_targets(const Tensor& host_targets, int64_t V) const;  // checks each target
  float forward_loss_gpu(const Tensor& logits, const Tensor& targets);
  int64_t ignore_index_;
  Tensor logits_;
  Tensor targets_;
  Tensor lse_;      // log-sum-exp per row
  Tensor dlogits_;  // GPU: d(loss)/d(logits) for scale 1, computed with the loss in one pass
  int64_t count_ = 0;
};

// Mean squared error over all elements; predictions and targets f32 of one shape.
class MSELoss {
 public:
  float forward_loss(const Tensor& predictions, const Tensor& targets);
  Tensor backward_loss(float scale);

 private:
  Tensor predictions_;
  Tensor targets_;
};

// The finite-difference check for a new leaf layer: compares `module`'s backward (dx when x is
// f32, and every parameter's grad) with central differences of its own fp32 forward on
// L = sum(forward(x) * r), r random from `seed`, L summed in double. Step `step` on O(1) values
// keeps the truncation error ~step^2 and the fp32 rounding ~1e-7/step; a tensor passes when
// max|analytic - numeric| <= tolerance * max|numeric|. Costs two forwards per element: use small
// shapes. Overwrites the module's grads (zeroed first); restores its parameter values.
struct GradCheckReport {
  bool ok = true;
  double worst_error = 0.0;  // max|a - n| / max|n| of the worst tensor
  std::string worst;         // "dx" or the parameter's name, with the worst element
};
GradCheckReport gradcheck(Module& module, const Tensor& x, uint64_t seed = 0, double step = 1e-2,
                          double tolerance = 1e-2);

}  // namespace dspp

#endif  // DSPP_NN_H
