// optimizer/lion: Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") over
// flat fp32 buffers, with DeepSpeed's FusedLion/DeepSpeedCPULion names and defaults. Per element:
//   c = beta1 m + (1 - beta1) g
//   p = p (1 - lr wd) - lr sign(c)          (decoupled weight decay)
//   m = beta2 m + (1 - beta2) g
// sign(0) is 0, as in the paper and torch.sign. DeepSpeed's two kernels differ from each other
// there (FusedLion moves p by +lr when c == 0, DeepSpeedCPULion by -lr for c == +0), which makes a
// parameter whose gradient and momentum are exactly zero drift; we do not reproduce that.
//
// On a GPU (OptimizerSetup::device CUDA) the step is DeviceKernels::lion_step (version 3), one
// launch per run of adjacent segments sharing their constants, with the CPU path's constants.
#include "../common/flat_optimizer.h"

namespace {

using dspp::optim::ConfigReader;
using dspp::optim::FlatOptimizer;
using dspp::optim::GroupStep;
using dspp::optim::OptionReader;

struct LionHyper {
  double lr = 1e-3;
  std::array<double, 2> betas{0.9, 0.999};  // FusedLion's and DeepSpeedCPULion's default
  double weight_decay = 0.0;
};

struct LionConsts {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, lr, decay;
};

void lion_kernel(float* __restrict p, const float* __restrict g, float* __restrict m, int64_t n,
                 const LionConsts& k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i];
    const float c = k.beta1 * mi + k.one_minus_beta1 * gi;
    const float sign = (c > 0.0f ? 1.0f : 0.0f) - (c < 0.0f ? 1.0f : 0.0f);  // if-converts to SIMD
    p[i] = p[i] * k.decay - k.lr * sign;
    m[i] = k.beta2 * mi + k.one_minus_beta2 * gi;
  }
}

const char* const kGroupKeys[] = {"lr", "betas", "weight_decay"};

class Lion final : public FlatOptimizer {
 public:
  Lion(const dspp_host_api* host, ConfigReader cfg) : FlatOptimizer(host, "lion") {
    OptionReader o("lion", cfg, "optimizer.params.");
    dspp::optim::refuse_max_grad_norm(o);
    base_.lr = o.non_negative("lr", base_.lr);
    base_.betas = o.betas("betas", base_.betas);
    base_.weight_decay = o.non_negative("weight_decay", base_.weight_decay);
    o.flag("set_grad_none", true);  // FusedLion's zero_grad() detail; nothing to do here
    if (!o.flag("fp32_optimizer_states", true))
      log(DSPP_LOG_WARNING,
          "fp32_optimizer_states=false (bf16 momentum under CPU offload) is not supported; "
          "the momentum stays fp32");
  }

 protected:
  void configure(const dspp::OptimizerSetup& setup) override {
    groups_.assign(setup.num_groups, base_);
    std::vector<double> lrs(setup.num_groups);
    for (int32_t g = 0; g < setup.num_groups; ++g) {
      const dspp::ParamGroupSetup& sg = setup.groups[g];
      GroupOptions go(plugin_name(), sg, g, {std::begin(kGroupKeys), std::end(kGroupKeys)});
      warn_unknown(go, g);
      LionHyper& h = groups_[g];
      h.lr = group_value(sg.lr, go.reader, "lr", base_.lr);
      h.weight_decay = group_value(sg.weight_decay, go.reader, "weight_decay", base_.weight_decay);
      h.betas = go.reader.betas("betas", base_.betas);
      lrs[g] = h.lr;
    }
    set_setup_lrs(std::move(lrs));
    m_ = add_state("exp_avg", 0.0f);
  }

  void run_step(float* params, const float* grads, int64_t,
                const std::vector<GroupStep>& gs) override {
    const std::vector<LionConsts> k = slot_consts(gs);
    float* m = m_;
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t) {
      lion_kernel(params + c.begin, grads + c.begin, m + c.begin, c.end - c.begin, k[c.slot]);
    });
  }

  bool runs_on_device() const override { return true; }
  dspp::optim::DeviceKernelsNeed device_kernels_need() const override { return {3, "lion_step"}; }

  void run_step_device(float* params, const float* grads, int64_t,
                       const std::vector<GroupStep>& gs) override {
    const std::vector<LionConsts> k = slot_consts(gs);
    for (const dspp::optim::DeviceRun& r : device_runs()) {
      const LionConsts& c = k[r.slot];
      const dspp::DeviceLionConsts dk{c.beta1, c.one_minus_beta1, c.beta2, c.one_minus_beta2, c.lr,
                                      c.decay};
      const int64_t n = r.end - r.begin;
      const dspp_tensor_view p = device_view(params + r.begin, n);
      const dspp_tensor_view g = device_view(grads + r.begin, n);
      const dspp_tensor_view m = device_view(m_ + r.begin, n);
      dspp::plugin::pass_through(device_kernels()->lion_step(&p, &g, &m, &dk, nullptr));
    }
  }

 private:
  // The constants of every slot (Chunk::slot) for this step, both paths'.
  std::vector<LionConsts> slot_consts(const std::vector<GroupStep>& gs) const {
    std::vector<LionConsts> k(num_slots());
    for (int32_t s = 0; s < num_slots(); ++s) {
      const int32_t g = slot_group(s);
      const LionHyper& h = groups_[g];
      const double wd = slot_no_decay(s) ? 0.0 : h.weight_decay;
      const double b1 = std::isnan(gs[g].beta1) ? h.betas[0] : gs[g].beta1;
      k[s] = LionConsts{static_cast<float>(b1),         static_cast<float>(1.0 - b1),
                        static_cast<float>(h.betas[1]), static_cast<float>(1.0 - h.betas[1]),
                        static_cast<float>(gs[g].lr),   static_cast<float>(1.0 - gs[g].lr * wd)};
    }
    return k;
  }

  LionHyper base_;
  std::vector<LionHyper> groups_;
  float* m_ = nullptr;
};

using dspp::optim::kNonNegativeAuto;
using dspp::optim::option;

const dspp_option_desc kOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "0.001", "Learning rate.", kNonNegativeAuto),
    option("betas", DSPP_VALUE_ARRAY, "[0.9, 0.999]",
           "beta1 interpolates the update direction, beta2 the momentum; each in [0, 1).",
           DSPP_OPTION_ALLOW_AUTO),
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0", "Decoupled weight decay.", kNonNegativeAuto),
    option("set_grad_none", DSPP_VALUE_BOOL, "true", "FusedLion's zero_grad() detail; no effect."),
    option("fp32_optimizer_states", DSPP_VALUE_BOOL, "true",
           "Momentum in fp32 (false: bf16 under CPU offload, not supported: a warning)."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Optimizer, Lion>(
        DSPP_KIND_OPTIMIZER, "lion", "1.0.0",
        "Lion (sign of interpolated momentum, decoupled weight decay) over flat fp32 buffers "
        "(DeepSpeed's FusedLion/DeepSpeedCPULion).",
        kOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_optimizer_lion", kPlugins)
