// example_step_decay: a learning-rate scheduler plugin built outside the dspp tree.
//
//   lr(step) = base_lr * gamma ^ floor(step / step_size)      (PyTorch's StepLR)
//
// Config:  "scheduler": {"type": "example_step_decay", "params": {"step_size": 100, "gamma": 0.5}}
//
// Everything crossing the boundary is plain C: the host calls noexcept virtuals with pointers and
// counts, failures return a status and leave their message with the host (set_error). The
// plugin.h helpers turn the C++ exceptions thrown below into such statuses.
#include <dspp/kinds/scheduler.h>
#include <dspp/plugin.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

class StepDecay final : public dspp::Scheduler {
 public:
  StepDecay(const dspp_host_api* host, const dspp::plugin::ConfigReader& config)
      : host_(host),
        step_size_(config.get_int("step_size", 10)),
        gamma_(config.get_double("gamma", 0.5)) {
    // The config registry already checks the declared ranges; a plugin checks what it relies on
    // anyway, since a host may create it with a config view of its own.
    if (step_size_ < 1)
      throw std::invalid_argument("step_size must be >= 1, got " + std::to_string(step_size_));
    if (gamma_ <= 0)
      throw std::invalid_argument("gamma must be > 0, got " + std::to_string(gamma_));
    dspp::plugin::log(
        host_, DSPP_LOG_DEBUG, "example_step_decay",
        "step_size " + std::to_string(step_size_) + ", gamma " + std::to_string(gamma_));
  }

  dspp_status init(const double* base_lrs, int32_t num_groups) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (num_groups < 1 || !base_lrs) throw std::invalid_argument("init needs >= 1 base lr");
      base_lrs_.assign(base_lrs, base_lrs + num_groups);
    });
  }

  dspp_status lr_at(int64_t step, double* lrs_out) const noexcept override {
    if (base_lrs_.empty()) return fail(DSPP_ERR_INVALID_ARGUMENT, "lr_at before init");
    if (step < 0 || !lrs_out) return fail(DSPP_ERR_INVALID_ARGUMENT, "lr_at needs step >= 0");
    const double factor = std::pow(gamma_, static_cast<double>(step / step_size_));
    for (size_t g = 0; g < base_lrs_.size(); ++g) lrs_out[g] = base_lrs_[g] * factor;
    return DSPP_OK;
  }

  // StepLR leaves momentum alone.
  dspp_status momentum_at(int64_t, double*) const noexcept override {
    return fail(DSPP_ERR_NOT_SUPPORTED, "example_step_decay does not schedule momentum");
  }

 private:
  dspp_status fail(dspp_status code, const char* message) const noexcept {
    return host_->set_error(host_->self, code, message);
  }

  const dspp_host_api* host_;
  int64_t step_size_;
  double gamma_;
  std::vector<double> base_lrs_;
};

// The schema the config registry validates (`ds-plugins list --verbose` prints it).
const dspp_option_desc kOptions[] = {
    {"step_size", DSPP_VALUE_INT, "10", "Scheduler steps between two decays.", DSPP_OPTION_HAS_MIN,
     1.0, 0.0, nullptr},
    {"gamma", DSPP_VALUE_FLOAT, "0.5", "Factor applied to the learning rate at each decay.",
     DSPP_OPTION_HAS_MIN, 0.0, 0.0, nullptr},
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::Scheduler, StepDecay>(
    DSPP_KIND_SCHEDULER, "example_step_decay", "1.0.0",
    "Step decay: lr = base * gamma^(step // step_size) (an out-of-tree example).", kOptions)};

}  // namespace

DSPP_PLUGIN_LIBRARY("example_step_decay", kPlugins)
