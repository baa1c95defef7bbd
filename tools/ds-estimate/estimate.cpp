#include "estimate.h"

#include <algorithm>
#include <stdexcept>

namespace dspp::estimate {

namespace {

// Python's int() of a non-negative float: truncation. The products below are evaluated in the
// same order as DeepSpeed's Python, in double, so the truncated results match its output exactly.
int64_t py_int(double x) {
  return static_cast<int64_t>(x);
}

double total_gpus(const Setup& s) {
  return static_cast<double>(s.nodes * s.gpus_per_node);
}

}  // namespace

std::vector<DeepSpeedRow> deepspeed_zero2(const Setup& s) {
  const double p = static_cast<double>(s.params);
  const double gpus = total_gpus(s);
  const double gpn = static_cast<double>(s.gpus_per_node);
  const double f = s.additional_buffer_factor;
  std::vector<DeepSpeedRow> rows;
  // Optimizer offloaded: the GPU keeps the 16-bit params; the CPU holds the fp32 params, grads
  // and Adam states (16 bytes), or the fp32 model each rank builds before partitioning.
  DeepSpeedRow off;
  off.offload_optimizer = true;
  off.gpu_bytes = py_int(2 * p);
  off.cpu_bytes = py_int(p * std::max(4 * gpus, 16.0) * f);
  rows.push_back(off);
  // No offload: 16-bit params whole, then 16-bit grads + fp32 grads + fp32 params + Adam states
  // (2 + 4 + 4 + 8 = 18 bytes) partitioned; the CPU only holds the fp32 model while it is built.
  DeepSpeedRow none;
  none.gpu_bytes = py_int(2 * p) + py_int(18 * p / gpus);
  none.cpu_bytes = py_int(p * 4 * gpn * f);
  rows.push_back(none);
  return rows;
}

std::vector<DeepSpeedRow> deepspeed_zero3(const Setup& s) {
  if (s.largest_layer_params < 0)
    throw std::invalid_argument("the ZeRO-3 estimate needs the largest layer's parameter count");
  const double p = static_cast<double>(s.params);
  const double ll = static_cast<double>(s.largest_layer_params);
  const double gpus = total_gpus(s);
  const double gpn = static_cast<double>(s.gpus_per_node);
  const double gpus_factor = 1.0 / static_cast<double>(s.nodes);  // this node's share
  const double f = s.additional_buffer_factor;
  // 16-bit params of the largest layer gathered plus its 16-bit grads: 4 bytes per parameter.
  const int64_t largest_layer_memory = 4 * s.largest_layer_params;
  std::vector<DeepSpeedRow> rows;
  for (bool offload_optimizer : {true, false}) {
    for (bool offload_param : {true, false}) {
      if (!offload_optimizer && offload_param) continue;  // DeepSpeed lists no such row
      for (bool zero_init : {true, false}) {
        DeepSpeedRow r;
        r.offload_optimizer = offload_optimizer;
        r.offload_param = offload_param;
        r.zero_init = zero_init;
        double cpu = 0;
        if (offload_optimizer && offload_param) {
          r.gpu_bytes = largest_layer_memory;
          // 18 = fp32 params, grads, momentum, variance (16) + 16-bit params (2).
          cpu = zero_init ? p * 18 * gpus_factor * f : p * std::max(4 * gpn, 18 * gpus_factor) * f;
        } else if (offload_optimizer) {
          r.gpu_bytes = largest_layer_memory + py_int(2 * p / gpus);
          cpu = zero_init ? p * 16 * gpus_factor * f : p * std::max(4 * gpn, 16 * gpus_factor) * f;
        } else {
          r.gpu_bytes = largest_layer_memory + py_int(18 * p / gpus);
          // With zero.Init only one layer at a time exists unpartitioned on the CPU.
          cpu = zero_init ? ll * 4 * gpn * f : p * 4 * gpn * f;
        }
        r.cpu_bytes = py_int(cpu);
        rows.push_back(r);
      }
    }
  }
  return rows;
}

namespace {

void check_stage(int stage) {
  if (stage < 0 || stage > 3) throw std::invalid_argument("ZeRO stage must be 0, 1, 2 or 3");
}

// Bytes per parameter of (params, grads, optimizer states), partitioned by stage over nd ranks.
ModelStates partitioned(int stage, const Setup& s, double param_bytes, double grad_bytes,
                        double optimizer_bytes) {
  check_stage(stage);
  const double psi = static_cast<double>(s.params);
  const double nd = total_gpus(s);
  ModelStates m;
  m.params = param_bytes * psi / (stage >= 3 ? nd : 1.0);
  m.grads = grad_bytes * psi / (stage >= 2 ? nd : 1.0);
  m.optimizer = optimizer_bytes * psi / (stage >= 1 ? nd : 1.0);
  return m;
}

}  // namespace

ModelStates zero_paper_mixed_precision(int stage, const Setup& s) {
  return partitioned(stage, s, 2, 2, 12);
}

ModelStates dspp_fp32_adam(int stage, const Setup& s) {
  return partitioned(stage, s, 4, 4, 8);
}

std::string zero_paper_formula(int stage) {
  check_stage(stage);
  const char* const f[] = {"(2 + 2 + K)Ψ = 16Ψ", "2Ψ + 2Ψ + KΨ/Nd = 4Ψ + 12Ψ/Nd",
                           "2Ψ + (2 + K)Ψ/Nd = 2Ψ + 14Ψ/Nd", "(2 + 2 + K)Ψ/Nd = 16Ψ/Nd"};
  return f[stage];
}

std::string dspp_fp32_formula(int stage) {
  check_stage(stage);
  const char* const f[] = {"4Ψ + 4Ψ + 8Ψ = 16Ψ", "4Ψ + 4Ψ + 8Ψ/Nd", "4Ψ + (4 + 8)Ψ/Nd",
                           "(4 + 4 + 8)Ψ/Nd = 16Ψ/Nd"};
  return f[stage];
}

int64_t gpt_params(const GPTShape& g) {
  const int64_t e = g.n_embd;
  const int64_t embeddings = g.vocab * e + g.context * e;  // wte, wpe
  const int64_t layer_norm = 2 * e;                        // weight + bias
  const int64_t c_attn = e * 3 * e + 3 * e;
  const int64_t attn_c_proj = e * e + e;
  const int64_t c_fc = e * 4 * e + 4 * e;
  const int64_t mlp_c_proj = 4 * e * e + e;
  const int64_t block = layer_norm + c_attn + attn_c_proj + layer_norm + c_fc + mlp_c_proj;
  return embeddings + g.n_layer * block + layer_norm;  // + ln_f; lm_head is wte
}

int64_t gpt_largest_layer(const GPTShape& g) {
  const int64_t e = g.n_embd;
  return std::max({g.vocab * e, g.context * e, e * 4 * e + 4 * e});
}

}  // namespace dspp::estimate
