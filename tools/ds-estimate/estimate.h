// The memory formulas ds-estimate prints: DeepSpeed's estimators of model-state memory for ZeRO
// (runtime/zero/stage_1_and_2.py and stage3.py), the ZeRO paper's per-GPU model-state formula for
// mixed precision, and what dspp holds when it trains in fp32 with Adam. Also the GPT-2 parameter
// count of dspp::GPT. Pure functions: no I/O.
#ifndef DSPP_TOOLS_DS_ESTIMATE_ESTIMATE_H
#define DSPP_TOOLS_DS_ESTIMATE_ESTIMATE_H

#include <cstdint>
#include <string>
#include <vector>

namespace dspp::estimate {

// The setup: Ψ parameters on nodes x gpus_per_node data-parallel ranks.
struct Setup {
  int64_t params = 0;
  int64_t largest_layer_params = -1;  // -1: unknown (DeepSpeed's stage-3 estimate needs it)
  int64_t gpus_per_node = 1;
  int64_t nodes = 1;
  double additional_buffer_factor = 1.5;  // DeepSpeed's default
};

// One row of DeepSpeed's table. Bytes are truncated to integers as DeepSpeed's int() does.
struct DeepSpeedRow {
  bool offload_optimizer = false;
  bool offload_param = false;  // stage 3 only
  bool zero_init = false;      // stage 3 only
  int64_t cpu_bytes = 0;
  int64_t gpu_bytes = 0;
};

// estimate_zero2_model_states_mem_needs_all_cold: rows offload_optimizer=cpu, then none.
std::vector<DeepSpeedRow> deepspeed_zero2(const Setup& s);
// estimate_zero3_model_states_mem_needs_all_cold: rows in DeepSpeed's order (optimizer offload
// cpu then none; param offload cpu then none, skipped when the optimizer is not offloaded;
// zero_init 1 then 0). Needs s.largest_layer_params >= 0.
std::vector<DeepSpeedRow> deepspeed_zero3(const Setup& s);

// Per-GPU bytes of the model states by kind, for one stage.
struct ModelStates {
  double params = 0;
  double grads = 0;
  double optimizer = 0;
  double total() const { return params + grads + optimizer; }
};

// The ZeRO paper (Rajbhandari et al. 2020, fig. 1), mixed precision with Adam, K = 12: fp16
// params 2Ψ, fp16 grads 2Ψ, optimizer states (fp32 params, momentum, variance) KΨ; stage 1
// partitions the optimizer states over Nd ranks, stage 2 also the grads, stage 3 also the params.
ModelStates zero_paper_mixed_precision(int stage, const Setup& s);
// dspp training in fp32 with Adam: params 4Ψ, grads 4Ψ, Adam's exp_avg and exp_avg_sq 8Ψ,
// partitioned by stage as above.
ModelStates dspp_fp32_adam(int stage, const Setup& s);

// The formulas above as text, for the tables ("2Ψ + 14Ψ/Nd").
std::string zero_paper_formula(int stage);
std::string dspp_fp32_formula(int stage);

// dspp::GPT's parameters (GPT-2 layout, lm_head tied to wte, so counted once).
struct GPTShape {
  int64_t n_layer = 0;
  int64_t n_embd = 0;
  int64_t vocab = 0;
  int64_t context = 0;  // block_size: rows of wpe
};
int64_t gpt_params(const GPTShape& g);
// The largest number of parameters one module owns directly (DeepSpeed's largest_layer_params,
// which ZeRO-3 gathers at once): wte [V, E] (also read by the tied lm_head), wpe [T, E], or a
// block's mlp.c_fc (4E x E + 4E).
int64_t gpt_largest_layer(const GPTShape& g);

}  // namespace dspp::estimate

#endif  // DSPP_TOOLS_DS_ESTIMATE_ESTIMATE_H
