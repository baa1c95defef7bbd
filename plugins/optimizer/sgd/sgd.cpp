// optimizer/sgd: torch.optim.SGD over flat fp32 buffers. DeepSpeed has no SGD of its own: a config
// type it does not know ("SGD") is looked up in torch.optim, so these are torch's names, defaults
// and rules. Per element:
//   d = g (negated when maximize) + wd * p
//   momentum != 0:  buf = d on the first step, else buf = momentum * buf + (1 - dampening) * d
//                   d = nesterov ? d + momentum * buf : buf
//   p = p - lr * d
// A scheduler that cycles momentum (OneCycle) passes it as StepArgs::betas1.
//
// On a GPU (OptimizerSetup::device CUDA) the step is DeviceKernels::sgd_step (version 3), one
// launch per run of adjacent segments sharing their constants, with the CPU path's constants and
// its first-step rule; the buffer starts on the device the same way (zeros, or d on the first
// step that uses it).
#include "../common/flat_optimizer.h"

namespace {

using dspp::optim::ConfigReader;
using dspp::optim::fail;
using dspp::optim::FlatOptimizer;
using dspp::optim::GroupStep;
using dspp::optim::OptionReader;

struct SgdHyper {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
};

struct SgdConsts {
  float lr, wd, momentum, one_minus_dampening, sign;  // sign: -1 when maximize
};

void sgd_plain(float* __restrict p, const float* __restrict g, int64_t n, const SgdConsts& k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float d = k.sign * g[i] + k.wd * p[i];
    p[i] = p[i] - k.lr * d;
  }
}

// kFirst: the buffer starts as d (torch clones the first gradient instead of damping it).
template <bool kFirst, bool kNesterov>
void sgd_momentum(float* __restrict p, const float* __restrict g, float* __restrict buf, int64_t n,
                  const SgdConsts& k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float d = k.sign * g[i] + k.wd * p[i];
    float b;
    if constexpr (kFirst) {
      b = d;
    } else {
      b = k.momentum * buf[i] + k.one_minus_dampening * d;
    }
    buf[i] = b;
    const float u = kNesterov ? d + k.momentum * b : b;
    p[i] = p[i] - k.lr * u;
  }
}

const char* const kGroupKeys[] = {"lr",           "momentum", "dampening",
                                  "weight_decay", "nesterov", "maximize"};

class Sgd final : public FlatOptimizer {
 public:
  Sgd(const dspp_host_api* host, ConfigReader cfg) : FlatOptimizer(host, "sgd") {
    OptionReader o("sgd", cfg, "optimizer.params.");
    dspp::optim::refuse_max_grad_norm(o);
    base_ = read(o, SgdHyper{});
  }

 protected:
  void configure(const dspp::OptimizerSetup& setup) override {
    groups_.assign(setup.num_groups, base_);
    std::vector<double> lrs(setup.num_groups);
    bool any_momentum = false;
    for (int32_t g = 0; g < setup.num_groups; ++g) {
      const dspp::ParamGroupSetup& sg = setup.groups[g];
      GroupOptions go(plugin_name(), sg, g, {std::begin(kGroupKeys), std::end(kGroupKeys)});
      warn_unknown(go, g);
      SgdHyper h = read(go.reader, base_);
      h.lr = group_value(sg.lr, go.reader, "lr", h.lr);
      h.weight_decay = group_value(sg.weight_decay, go.reader, "weight_decay", h.weight_decay);
      groups_[g] = h;
      any_momentum = any_momentum || h.momentum != 0.0;
      lrs[g] = h.lr;
    }
    set_setup_lrs(std::move(lrs));
    buf_ = any_momentum ? add_state("momentum_buffer", 0.0f) : nullptr;
  }

  void run_step(float* params, const float* grads, int64_t step,
                const std::vector<GroupStep>& gs) override {
    bool first = false;
    const std::vector<SgdConsts> k = slot_consts(step, gs, &first);
    float* buf = buf_;
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t) {
      const SgdConsts& kc = k[c.slot];
      const int64_t b = c.begin, n = c.end - c.begin;
      const bool nesterov = groups_[c.group].nesterov;
      if (kc.momentum == 0.0f) {
        sgd_plain(params + b, grads + b, n, kc);
      } else if (first) {
        if (nesterov) {
          sgd_momentum<true, true>(params + b, grads + b, buf + b, n, kc);
        } else {
          sgd_momentum<true, false>(params + b, grads + b, buf + b, n, kc);
        }
      } else if (nesterov) {
        sgd_momentum<false, true>(params + b, grads + b, buf + b, n, kc);
      } else {
        sgd_momentum<false, false>(params + b, grads + b, buf + b, n, kc);
      }
    });
  }

 protected:
  bool runs_on_device() const override { return true; }
  dspp::optim::DeviceKernelsNeed device_kernels_need() const override { return {3, "sgd_step"}; }

  void run_step_device(float* params, const float* grads, int64_t step,
                       const std::vector<GroupStep>& gs) override {
    bool first = false;
    const std::vector<SgdConsts> k = slot_consts(step, gs, &first);
    for (const dspp::optim::DeviceRun& r : device_runs()) {
      const SgdConsts& c = k[r.slot];
      const dspp::DeviceSgdConsts dk{c.lr,
                                     c.wd,
                                     c.momentum,
                                     c.one_minus_dampening,
                                     c.sign,
                                     first ? 1 : 0,
                                     groups_[slot_group(r.slot)].nesterov};
      const int64_t n = r.end - r.begin;
      const dspp_tensor_view p = device_view(params + r.begin, n);
      const dspp_tensor_view g = device_view(grads + r.begin, n);
      const dspp_tensor_view b = buf_ ? device_view(buf_ + r.begin, n) : dspp_tensor_view{};
      dspp::plugin::pass_through(
          device_kernels()->sgd_step(&p, &g, c.momentum != 0.0f ? &b : nullptr, &dk, nullptr));
    }
  }

 private:
  // The constants of every slot (Chunk::slot) for this step, both paths'. Starts the momentum
  // buffer when a scheduler turns momentum on for the first time; *first says whether the
  // buffer starts as d in this step.
  std::vector<SgdConsts> slot_consts(int64_t step, const std::vector<GroupStep>& gs, bool* first) {
    std::vector<SgdConsts> k(num_slots());
    bool fresh = false;
    for (int32_t s = 0; s < num_slots(); ++s) {
      const int32_t g = slot_group(s);
      const SgdHyper& h = groups_[g];
      const double wd = slot_no_decay(s) ? 0.0 : h.weight_decay;
      const double mom = std::isnan(gs[g].beta1) ? h.momentum : gs[g].beta1;
      if (mom != 0.0 && !buf_) {
        // A scheduler turned momentum on for a group configured without it: the buffer starts
        // now, as torch starts it on the first step that uses it.
        buf_ = add_state("momentum_buffer", 0.0f);
        fresh = true;
      }
      k[s] =
          SgdConsts{static_cast<float>(gs[g].lr), static_cast<float>(wd), static_cast<float>(mom),
                    static_cast<float>(1.0 - h.dampening), h.maximize ? -1.0f : 1.0f};
    }
    *first = step == 1 || fresh;
    return k;
  }

  static SgdHyper read(const OptionReader& o, const SgdHyper& d) {
    SgdHyper h;
    h.lr = o.non_negative("lr", d.lr);
    h.momentum = o.non_negative("momentum", d.momentum);
    h.dampening = o.number("dampening", d.dampening, -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::infinity(), "a number");
    h.weight_decay = o.non_negative("weight_decay", d.weight_decay);
    h.nesterov = o.flag("nesterov", d.nesterov);
    h.maximize = o.flag("maximize", d.maximize);
    // torch.optim.SGD: "Nesterov momentum requires a momentum and zero dampening".
    if (h.nesterov && (h.momentum <= 0.0 || h.dampening != 0.0))
      fail("sgd: " + o.where() +
           "nesterov needs momentum > 0 and dampening 0 (as torch.optim.SGD), got momentum " +
           dspp::optim::fmt_double(h.momentum) + " and dampening " +
           dspp::optim::fmt_double(h.dampening));
    return h;
  }

  SgdHyper base_;
  std::vector<SgdHyper> groups_;
  float* buf_ = nullptr;
};

using dspp::optim::kNonNegativeAuto;
using dspp::optim::option;

const dspp_option_desc kOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "0.001", "Learning rate.", kNonNegativeAuto),
    option("momentum", DSPP_VALUE_FLOAT, "0.0", "Momentum factor (0: plain SGD, no buffer).",
           DSPP_OPTION_HAS_MIN),
    option("dampening", DSPP_VALUE_FLOAT, "0.0", "Dampening of the momentum's gradient term."),
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0", "L2 penalty added to the gradient.",
           kNonNegativeAuto),
    option("nesterov", DSPP_VALUE_BOOL, "false",
           "Nesterov momentum (needs momentum > 0, dampening 0)."),
    option("maximize", DSPP_VALUE_BOOL, "false",
           "Maximise the objective instead of minimising it."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Optimizer, Sgd>(
        DSPP_KIND_OPTIMIZER, "sgd", "1.0.0",
        "SGD with momentum, dampening and Nesterov over flat fp32 buffers (torch.optim.SGD).",
        kOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_optimizer_sgd", kPlugins)
