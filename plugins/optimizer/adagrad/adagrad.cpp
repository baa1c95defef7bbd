// optimizer/adagrad: Adagrad over flat fp32 buffers. DeepSpeed builds torch.optim.Adagrad, or
// DeepSpeedCPUAdagrad under CPU offload; both compute, per element,
//   g = g (negated when maximize) + wd * p                   (L2 weight decay)
//   sum = sum + g^2
//   p = p - clr * g / (sqrt(sum) + eps),   clr = lr / (1 + (t - 1) lr_decay)
// with sum starting at initial_accumulator_value (lr_decay, initial_accumulator_value and maximize
// are torch.optim.Adagrad's; DeepSpeedCPUAdagrad has them fixed at 0, 0 and false).
//
// On a GPU (OptimizerSetup::device CUDA) the step is DeviceKernels::adagrad_step (version 3), one
// launch per run of adjacent segments sharing their constants, with the CPU path's constants; the
// accumulator of each segment starts at initial_accumulator_value there too (fill).
#include "../common/flat_optimizer.h"

namespace {

using dspp::optim::ConfigReader;
using dspp::optim::FlatOptimizer;
using dspp::optim::GroupStep;
using dspp::optim::OptionReader;

struct AdagradHyper {
  double lr = 1e-2;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double eps = 1e-10;
  bool maximize = false;
};

struct AdagradConsts {
  float clr, wd, eps, sign;  // sign: -1 when maximize
};

void adagrad_kernel(float* __restrict p, const float* __restrict g, float* __restrict sum,
                    int64_t n, const AdagradConsts& k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float pi = p[i];
    const float gi = k.sign * g[i] + k.wd * pi;
    const float s = sum[i] + gi * gi;
    sum[i] = s;
    p[i] = pi - k.clr * (gi / (std::sqrt(s) + k.eps));
  }
}

// torch.optim.Adagrad fills the accumulator from its constructor argument, never from a group, so
// initial_accumulator_value is not a group key.
const char* const kGroupKeys[] = {"lr", "lr_decay", "weight_decay", "eps", "maximize"};

class Adagrad final : public FlatOptimizer {
 public:
  Adagrad(const dspp_host_api* host, ConfigReader cfg) : FlatOptimizer(host, "adagrad") {
    OptionReader o("adagrad", cfg, "optimizer.params.");
    dspp::optim::refuse_max_grad_norm(o);
    base_ = read(o, AdagradHyper{});
    initial_accumulator_value_ = o.non_negative("initial_accumulator_value", 0.0);
    if (o.flag("amsgrad", false))
      log(DSPP_LOG_WARNING,
          "amsgrad=true has no effect on Adagrad (DeepSpeedCPUAdagrad accepts and ignores it)");
    if (!o.flag("fp32_optimizer_states", true))
      log(DSPP_LOG_WARNING,
          "fp32_optimizer_states=false (bf16 state under CPU offload) is not supported; "
          "the sum stays fp32");
  }

 protected:
  void configure(const dspp::OptimizerSetup& setup) override {
    groups_.assign(setup.num_groups, base_);
    std::vector<double> lrs(setup.num_groups);
    for (int32_t g = 0; g < setup.num_groups; ++g) {
      const dspp::ParamGroupSetup& sg = setup.groups[g];
      GroupOptions go(plugin_name(), sg, g, {std::begin(kGroupKeys), std::end(kGroupKeys)});
      warn_unknown(go, g);
      AdagradHyper h = read(go.reader, base_);
      h.lr = group_value(sg.lr, go.reader, "lr", h.lr);
      h.weight_decay = group_value(sg.weight_decay, go.reader, "weight_decay", h.weight_decay);
      groups_[g] = h;
      lrs[g] = h.lr;
    }
    set_setup_lrs(std::move(lrs));
    sum_ = add_state("sum", 0.0f);
    // The accumulator of every segment starts at initial_accumulator_value (padding stays 0).
    const float init = static_cast<float>(initial_accumulator_value_);
    for (int32_t s = 0; s < num_segments(); ++s) {
      if (!on_device()) {
        std::fill(sum_ + segment_begin(s), sum_ + segment_end(s), init);
      } else if (init != 0.0f && segment_end(s) > segment_begin(s)) {
        const dspp_tensor_view v =
            device_view(sum_ + segment_begin(s), segment_end(s) - segment_begin(s));
        dspp::plugin::pass_through(device_kernels()->fill(&v, init, nullptr));
      }
    }
  }

  void run_step(float* params, const float* grads, int64_t step,
                const std::vector<GroupStep>& gs) override {
    const std::vector<AdagradConsts> k = slot_consts(step, gs);
    float* sum = sum_;
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t) {
      adagrad_kernel(params + c.begin, grads + c.begin, sum + c.begin, c.end - c.begin, k[c.slot]);
    });
  }

  bool runs_on_device() const override { return true; }
  dspp::optim::DeviceKernelsNeed device_kernels_need() const override {
    return {3, "adagrad_step"};
  }

  void run_step_device(float* params, const float* grads, int64_t step,
                       const std::vector<GroupStep>& gs) override {
    const std::vector<AdagradConsts> k = slot_consts(step, gs);
    for (const dspp::optim::DeviceRun& r : device_runs()) {
      const AdagradConsts& c = k[r.slot];
      const dspp::DeviceAdagradConsts dk{c.clr, c.wd, c.eps, c.sign};
      const int64_t n = r.end - r.begin;
      const dspp_tensor_view p = device_view(params + r.begin, n);
      const dspp_tensor_view g = device_view(grads + r.begin, n);
      const dspp_tensor_view sum = device_view(sum_ + r.begin, n);
      dspp::plugin::pass_through(device_kernels()->adagrad_step(&p, &g, &sum, &dk, nullptr));
    }
  }

 private:
  // The constants of every slot (Chunk::slot) for this step, both paths'.
  std::vector<AdagradConsts> slot_consts(int64_t step, const std::vector<GroupStep>& gs) const {
    std::vector<AdagradConsts> k(num_slots());
    for (int32_t s = 0; s < num_slots(); ++s) {
      const int32_t g = slot_group(s);
      const AdagradHyper& h = groups_[g];
      const double wd = slot_no_decay(s) ? 0.0 : h.weight_decay;
      const double clr = gs[g].lr / (1.0 + static_cast<double>(step - 1) * h.lr_decay);
      k[s] = AdagradConsts{static_cast<float>(clr), static_cast<float>(wd),
                           static_cast<float>(h.eps), h.maximize ? -1.0f : 1.0f};
    }
    return k;
  }

  static AdagradHyper read(const OptionReader& o, const AdagradHyper& d) {
    AdagradHyper h;
    h.lr = o.non_negative("lr", d.lr);
    h.lr_decay = o.non_negative("lr_decay", d.lr_decay);
    h.weight_decay = o.non_negative("weight_decay", d.weight_decay);
    h.eps = o.non_negative("eps", d.eps);
    h.maximize = o.flag("maximize", d.maximize);
    return h;
  }

  AdagradHyper base_;
  double initial_accumulator_value_ = 0.0;
  std::vector<AdagradHyper> groups_;
  float* sum_ = nullptr;
};

using dspp::optim::kNonNegativeAuto;
using dspp::optim::option;

const dspp_option_desc kOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "0.01", "Learning rate.", kNonNegativeAuto),
    option("lr_decay", DSPP_VALUE_FLOAT, "0.0", "lr / (1 + (t - 1) lr_decay) at step t.",
           DSPP_OPTION_HAS_MIN),
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0", "L2 penalty added to the gradient.",
           kNonNegativeAuto),
    option("initial_accumulator_value", DSPP_VALUE_FLOAT, "0.0",
           "Starting value of the squared sum.", DSPP_OPTION_HAS_MIN),
    option("eps", DSPP_VALUE_FLOAT, "1e-10", "Added to the denominator for numerical stability.",
           kNonNegativeAuto),
    option("maximize", DSPP_VALUE_BOOL, "false",
           "Maximise the objective instead of minimising it."),
    option("amsgrad", DSPP_VALUE_BOOL, "false",
           "Accepted and ignored, as DeepSpeedCPUAdagrad does (a warning when true)."),
    option("fp32_optimizer_states", DSPP_VALUE_BOOL, "true",
           "State in fp32 (false: bf16 under CPU offload, not supported: a warning)."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Optimizer, Adagrad>(
        DSPP_KIND_OPTIMIZER, "adagrad", "1.0.0",
        "Adagrad over flat fp32 buffers (torch.optim.Adagrad / DeepSpeedCPUAdagrad).", kOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_optimizer_adagrad", kPlugins)
