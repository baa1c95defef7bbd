// Models built from the layer library: an MLP and a GPT (GPT-2 layout). Both are TrainableModels
// the engine can train directly.
#ifndef DSPP_MODELS_H
#define DSPP_MODELS_H

#include <dspp/module.h>
#include <dspp/nn.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dspp {

// ---- MLP
// -----------------------------------------------------------------------------------------
enum class MLPLoss {
  kCrossEntropy,  // classification: targets i32 [B], class ids
  kMSE,           // regression: targets f32 [B, out]
};

struct MLPConfig {
  std::vector<int64_t> sizes;  // input, hidden..., output: at least two
  MLPLoss loss = MLPLoss::kCrossEntropy;
};

// Linear layers with GELU between them (none after the last), as children "net.0", "net.1", ...
// Weights ~ N(0, 1/in_features), biases zero.
class MLP : public TrainableModel {
 public:
  MLP(const MLPConfig& config, uint64_t seed);
  std::string type_name() const override { return "MLP"; }

  Tensor forward(const Tensor& x) override;  // f32 [B, in] -> [B, out]
  Tensor backward_input(const Tensor& dy) override;
  float forward_loss(const Batch& batch) override;  // inputs f32 [B, in]
  void backward_loss(float scale) override;

  const MLPConfig& config() const { return config_; }
  const Tensor& output() const { return output_; }  // of the last forward

 private:
  MLPConfig config_;
  Sequential* net_;
  CrossEntropyLoss cross_entropy_;
  MSELoss mse_;
  Tensor output_;
};

// ---- GPT
// -----------------------------------------------------------------------------------------
struct GPTConfig {
  int64_t vocab_size = 50257;
  int64_t block_size = 1024;  // longest context
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
};

// Hugging Face's GPT2Model: token and position embeddings, the blocks, the final LayerNorm.
// Children: wte, wpe, h (h.0, h.1, ...), ln_f.
class GPTTransformer : public Module {
 public:
  GPTTransformer(const GPTConfig& config, Rng& rng);
  std::string type_name() const override { return "GPTTransformer"; }

  Tensor forward(const Tensor& tokens) override;     // i32 [B, T] -> f32 [B, T, n_embd]
  Tensor backward_input(const Tensor& dy) override;  // undefined: token ids have no gradient

  Embedding& wte() { return *wte_; }

 private:
  int64_t block_size_;
  Embedding* wte_;
  Embedding* wpe_;
  Sequential* h_;
  LayerNorm* ln_f_;
  Tensor positions_;     // i32 [block_size]: 0, 1, 2, ...
  Tensor positions_bt_;  // on the GPU: i32 [B, T] positions of the last batch shape
};

// GPT-2: transformer + lm_head tied to transformer.wte (one parameter, both gradients add into
// it). Parameter names follow Hugging Face's GPT2LMHeadModel: transformer.wte.weight,
// transformer.wpe.weight, transformer.h.<i>.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,
// mlp.c_proj}.{weight,bias}, transformer.ln_f.{weight,bias}; weights are [out, in] (HF's Conv1D
// stores [in, out]). lm_head.weight is not a separate parameter.
// Init as GPT-2: N(0, 0.02), residual projections (c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0,
// LayerNorm 1 and 0; drawn from Rng(seed) in parameter order.
class GPT : public TrainableModel {
 public:
  GPT(const GPTConfig& config, uint64_t seed);
  std::string type_name() const override { return "GPT"; }

  Tensor forward(const Tensor& tokens) override;  // i32 [B, T], T <= block_size -> f32 [B, T, V]
  Tensor backward_input(const Tensor& dlogits) override;  // undefined: token ids have no gradient
  // inputs and targets i32 [B, T]; targets equal to -100 are ignored.
  float forward_loss(const Batch& batch) override;
  void backward_loss(float scale) override;

  const GPTConfig& config() const { return config_; }
  const Tensor& logits() const { return logits_; }  // of the last forward

 private:
  GPTConfig config_;
  GPTTransformer* transformer_;
  Linear* lm_head_;
  CrossEntropyLoss loss_;
  Tensor logits_;
};

}  // namespace dspp

#endif  // DSPP_MODELS_H
