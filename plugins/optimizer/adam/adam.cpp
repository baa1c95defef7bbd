// optimizer/adam and optimizer/adamw: Adam over flat fp32 buffers with DeepSpeed's semantics.
//
// DeepSpeed builds FusedAdam (GPU) or DeepSpeedCPUAdam (offload) for both config names:
//   "Adam"  -> decoupled weight decay (AdamW) unless `adam_w_mode: false`, then L2 (g += wd * p);
//   "AdamW" -> always decoupled.
// Per element, with bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t (1 when
// bias_correction is false):
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)      (decoupled)
// `torch_adam: true` makes DeepSpeed use torch.optim.Adam/AdamW instead: same math, but it has
// AMSGrad (v_max = max(v_max, v) replaces v in the denominator) and torch.optim.AdamW's default
// weight_decay of 0.01.
//
// On a GPU (OptimizerSetup::device CUDA) the step is the device's DeviceKernels::adam_step, one
// launch per run of adjacent segments sharing their constants, with the very constants of the CPU
// path (computed in double, rounded once to float). AMSGrad has no device kernel: an error.
#include "../common/adam_kernel.h"
#include "../common/flat_optimizer.h"

namespace {

using dspp::optim::adam_consts;
using dspp::optim::adam_kernel;
using dspp::optim::AdamConsts;
using dspp::optim::ConfigReader;
using dspp::optim::fail;
using dspp::optim::FlatOptimizer;
using dspp::optim::GroupStep;
using dspp::optim::OptionReader;

struct AdamHyper {
  double lr = 1e-3;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bias_correction = true;
  bool amsgrad = false;
};

const char* const kGroupKeys[] = {"lr",           "betas",           "eps",
                                  "weight_decay", "bias_correction", "amsgrad"};

class Adam : public FlatOptimizer {
 public:
  Adam(const dspp_host_api* host, ConfigReader cfg) : Adam(host, cfg, "adam") {}

 protected:
  Adam(const dspp_host_api* host, ConfigReader cfg, const char* name) : FlatOptimizer(host, name) {
    const bool is_adamw = std::strcmp(name, "adamw") == 0;
    OptionReader o(name, cfg, "optimizer.params.");
    dspp::optim::refuse_max_grad_norm(o);
    torch_adam_ = o.flag("torch_adam", false);
    const bool adam_w_mode = o.flag("adam_w_mode", true);
    // DeepSpeed: effective_adam_w_mode = name == "adamw" or adam_w_mode.
    decoupled_ = is_adamw || adam_w_mode;
    if (is_adamw && !adam_w_mode)
      log(DSPP_LOG_WARNING, "adam_w_mode=false has no effect on AdamW (always decoupled)");
    base_.lr = o.non_negative("lr", 1e-3);
    base_.betas = o.betas("betas", {0.9, 0.999});
    base_.eps = o.non_negative("eps", 1e-8);
    // FusedAdam and DeepSpeedCPUAdam default to 0; torch.optim.AdamW (torch_adam) to 0.01.
    base_.weight_decay = o.non_negative("weight_decay", torch_adam_ && decoupled_ ? 0.01 : 0.0);
    if (torch_adam_ && o.has("bias_correction"))
      fail(std::string(name) +
           ": optimizer.params.bias_correction is not a parameter of torch.optim.Adam/AdamW, "
           "which DeepSpeed uses with torch_adam: true");
    base_.bias_correction = o.flag("bias_correction", true);
    base_.amsgrad = o.flag("amsgrad", false);
    check_amsgrad(base_.amsgrad, o.where());
    o.flag("set_grad_none", true);  // FusedAdam's zero_grad() detail; nothing to do here
    if (!o.flag("fp32_optimizer_states", true))
      log(DSPP_LOG_WARNING,
          "fp32_optimizer_states=false (bf16 moments under CPU offload) is not supported; "
          "the moments stay fp32");
  }

  void configure(const dspp::OptimizerSetup& setup) override {
    groups_.assign(setup.num_groups, base_);
    std::vector<double> lrs(setup.num_groups);
    bool any_amsgrad = false;
    for (int32_t g = 0; g < setup.num_groups; ++g) {
      const dspp::ParamGroupSetup& sg = setup.groups[g];
      GroupOptions go(plugin_name(), sg, g, {std::begin(kGroupKeys), std::end(kGroupKeys)});
      warn_unknown(go, g);
      const OptionReader& r = go.reader;
      AdamHyper& h = groups_[g];
      h.lr = group_value(sg.lr, r, "lr", base_.lr);
      h.weight_decay = group_value(sg.weight_decay, r, "weight_decay", base_.weight_decay);
      h.betas = r.betas("betas", base_.betas);
      h.eps = r.non_negative("eps", base_.eps);
      h.bias_correction = r.flag("bias_correction", base_.bias_correction);
      h.amsgrad = r.flag("amsgrad", base_.amsgrad);
      check_amsgrad(h.amsgrad, r.where());
      if (h.amsgrad && on_device())
        throw dspp::plugin::StatusError(
            DSPP_ERR_NOT_SUPPORTED,
            std::string(plugin_name()) + ": " +
                (r.has("amsgrad") ? r.where() : std::string("optimizer.params.")) +
                "amsgrad is not supported on the GPU (there is no CUDA AMSGrad kernel yet); set "
                "it to false or run with --device cpu");
      any_amsgrad = any_amsgrad || h.amsgrad;
      lrs[g] = h.lr;
    }
    set_setup_lrs(std::move(lrs));
    m_ = add_state("exp_avg", 0.0f);
    v_ = add_state("exp_avg_sq", 0.0f);
    vmax_ = any_amsgrad ? add_state("max_exp_avg_sq", 0.0f) : nullptr;
  }

  void run_step(float* params, const float* grads, int64_t step,
                const std::vector<GroupStep>& gs) override {
    const std::vector<AdamConsts> k = slot_consts(step, gs);
    float* m = m_;
    float* v = v_;
    float* vmax = vmax_;
    const bool l2 = !decoupled_;
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t) {
      const AdamConsts& kc = k[c.slot];
      const int64_t b = c.begin, n = c.end - c.begin;
      float* vm = vmax ? vmax + b : nullptr;
      const bool ams = groups_[c.group].amsgrad;
      if (l2 && ams) {
        adam_kernel<true, true>(params + b, grads + b, m + b, v + b, vm, n, kc);
      } else if (l2) {
        adam_kernel<true, false>(params + b, grads + b, m + b, v + b, vm, n, kc);
      } else if (ams) {
        adam_kernel<false, true>(params + b, grads + b, m + b, v + b, vm, n, kc);
      } else {
        adam_kernel<false, false>(params + b, grads + b, m + b, v + b, vm, n, kc);
      }
    });
  }

  bool runs_on_device() const override { return true; }

  // One adam_step per run of adjacent segments with the same constants, on the legacy default
  // stream (in order with the host's work; nothing waits here).
  void run_step_device(float* params, const float* grads, int64_t step,
                       const std::vector<GroupStep>& gs) override {
    const std::vector<AdamConsts> k = slot_consts(step, gs);
    dspp::DeviceKernels* kern = device_kernels();
    for (const dspp::optim::DeviceRun& r : device_runs()) {
      const dspp::DeviceAdamConsts dk = dspp::optim::device_adam_consts(k[r.slot]);
      const int64_t n = r.end - r.begin;
      const dspp_tensor_view p = device_view(params + r.begin, n);
      const dspp_tensor_view g = device_view(grads + r.begin, n);
      const dspp_tensor_view m = device_view(m_ + r.begin, n);
      const dspp_tensor_view v = device_view(v_ + r.begin, n);
      dspp::plugin::pass_through(kern->adam_step(&p, &g, &m, &v, &dk, nullptr));
    }
  }

 private:
  // The constants of every slot (Chunk::slot) for this step, in double, rounded once to float.
  std::vector<AdamConsts> slot_consts(int64_t step, const std::vector<GroupStep>& gs) const {
    std::vector<AdamConsts> k(num_slots());
    for (int32_t s = 0; s < num_slots(); ++s) {
      const int32_t g = slot_group(s);
      const AdamHyper& h = groups_[g];
      const double wd = slot_no_decay(s) ? 0.0 : h.weight_decay;
      const double lr = gs[g].lr;
      const double b1 = std::isnan(gs[g].beta1) ? h.betas[0] : gs[g].beta1;
      k[s] = adam_consts(lr, b1, h.betas[1], h.eps, wd, step, h.bias_correction, decoupled_);
    }
    return k;
  }

  void check_amsgrad(bool amsgrad, const std::string& where) const {
    if (amsgrad && !torch_adam_)
      fail(std::string(plugin_name()) + ": " + where +
           "amsgrad is not supported: DeepSpeed's FusedAdam and DeepSpeedCPUAdam refuse the "
           "AMSGrad variant (torch.optim.Adam has it: set torch_adam: true)");
  }

  bool torch_adam_ = false;
  bool decoupled_ = true;
  AdamHyper base_;
  std::vector<AdamHyper> groups_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  float* vmax_ = nullptr;
};

class AdamW final : public Adam {
 public:
  AdamW(const dspp_host_api* host, ConfigReader cfg) : Adam(host, cfg, "adamw") {}
};

using dspp::optim::kNonNegativeAuto;
using dspp::optim::option;

const dspp_option_desc kAdamOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "0.001", "Learning rate.", kNonNegativeAuto),
    option("betas", DSPP_VALUE_ARRAY, "[0.9, 0.999]",
           "Coefficients of the running averages of the gradient and its square, each in [0, 1).",
           DSPP_OPTION_ALLOW_AUTO),
    option("eps", DSPP_VALUE_FLOAT, "1e-08", "Added to the denominator for numerical stability.",
           kNonNegativeAuto),
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0",
           "Weight decay (0.01 when absent with torch_adam: true, torch.optim.AdamW's default).",
           kNonNegativeAuto),
    option("adam_w_mode", DSPP_VALUE_BOOL, "true",
           "Decoupled weight decay (AdamW); false: L2 regularisation added to the gradient."),
    option("bias_correction", DSPP_VALUE_BOOL, "true",
           "Divide the moments by (1 - beta^t) (FusedAdam/DeepSpeedCPUAdam)."),
    option("amsgrad", DSPP_VALUE_BOOL, "false",
           "AMSGrad variant; only with torch_adam: true (FusedAdam refuses it)."),
    option("torch_adam", DSPP_VALUE_BOOL, "false",
           "torch.optim.Adam/AdamW semantics (AMSGrad allowed, AdamW weight_decay default 0.01)."),
    option("set_grad_none", DSPP_VALUE_BOOL, "true", "FusedAdam's zero_grad() detail; no effect."),
    option("fp32_optimizer_states", DSPP_VALUE_BOOL, "true",
           "Moments in fp32 (false: bf16 moments under CPU offload, not supported: a warning)."),
    option("foreach", DSPP_VALUE_ANY, "null", "torch.optim's implementation choice; no effect."),
};
// The same options; adam_w_mode is accepted (DeepSpeed pops it) but AdamW always decouples.
const dspp_option_desc kAdamWOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "0.001", "Learning rate.", kNonNegativeAuto),
    option("betas", DSPP_VALUE_ARRAY, "[0.9, 0.999]",
           "Coefficients of the running averages of the gradient and its square, each in [0, 1).",
           DSPP_OPTION_ALLOW_AUTO),
    option("eps", DSPP_VALUE_FLOAT, "1e-08", "Added to the denominator for numerical stability.",
           kNonNegativeAuto),
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0",
           "Decoupled weight decay (0.01 when absent with torch_adam: true, torch.optim.AdamW's "
           "default).",
           kNonNegativeAuto),
    option("adam_w_mode", DSPP_VALUE_BOOL, "true", "No effect: AdamW always decouples."),
    option("bias_correction", DSPP_VALUE_BOOL, "true",
           "Divide the moments by (1 - beta^t) (FusedAdam/DeepSpeedCPUAdam)."),
    option("amsgrad", DSPP_VALUE_BOOL, "false",
           "AMSGrad variant; only with torch_adam: true (FusedAdam refuses it)."),
    option("torch_adam", DSPP_VALUE_BOOL, "false",
           "torch.optim.AdamW semantics (AMSGrad allowed, weight_decay default 0.01)."),
    option("set_grad_none", DSPP_VALUE_BOOL, "true", "FusedAdam's zero_grad() detail; no effect."),
    option("fp32_optimizer_states", DSPP_VALUE_BOOL, "true",
           "Moments in fp32 (false: bf16 moments under CPU offload, not supported: a warning)."),
    option("foreach", DSPP_VALUE_ANY, "null", "torch.optim's implementation choice; no effect."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Optimizer, Adam>(
        DSPP_KIND_OPTIMIZER, "adam", "1.0.0",
        "Adam over flat fp32 buffers; decoupled weight decay unless adam_w_mode is false "
        "(DeepSpeed's FusedAdam/DeepSpeedCPUAdam).",
        kAdamOptions),
    dspp::plugin::describe<dspp::Optimizer, AdamW>(
        DSPP_KIND_OPTIMIZER, "adamw", "1.0.0",
        "AdamW over flat fp32 buffers: Adam with decoupled weight decay (DeepSpeed's FusedAdam).",
        kAdamWOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_optimizer_adam", kPlugins)
