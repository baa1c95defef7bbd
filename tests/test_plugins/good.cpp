// A well-formed test plugin library with two schedulers, built the way real plugins are (plugin.h
// helpers only). "testconst" scales the base learning rates by its `factor` option; "testconst2"
// doubles them and has no options.
#include <dspp/kinds/scheduler.h>
#include <dspp/plugin.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace {

class TestConst final : public dspp::Scheduler {
 public:
  TestConst(const dspp_host_api* host, const dspp::plugin::ConfigReader& config)
      : host_(host),
        factor_(config.get_double("factor", 1.0)),
        mode_(config.get_string("mode", "keep")) {
    if (factor_ < 0)
      throw std::invalid_argument("factor must be >= 0, got " + std::to_string(factor_));
    if (mode_ == "half") factor_ *= 0.5;
  }

  dspp_status init(const double* base_lrs, int32_t num_groups) noexcept override {
    return dspp::plugin::guard(host_, [&] { base_.assign(base_lrs, base_lrs + num_groups); });
  }
  dspp_status lr_at(int64_t step, double* lrs_out) const noexcept override {
    if (step < 0) return host_->set_error(host_->self, DSPP_ERR_INVALID_ARGUMENT, "negative step");
    for (size_t g = 0; g < base_.size(); ++g) lrs_out[g] = base_[g] * factor_;
    return DSPP_OK;
  }
  dspp_status momentum_at(int64_t, double*) const noexcept override {
    return host_->set_error(host_->self, DSPP_ERR_NOT_SUPPORTED, "testconst has no momentum");
  }

 private:
  const dspp_host_api* host_;
  double factor_;
  std::string mode_;
  std::vector<double> base_;
};

class TestConst2 final : public dspp::Scheduler {
 public:
  TestConst2(const dspp_host_api* host, const dspp::plugin::ConfigReader&) : host_(host) {}

  dspp_status init(const double* base_lrs, int32_t num_groups) noexcept override {
    return dspp::plugin::guard(host_, [&] { base_.assign(base_lrs, base_lrs + num_groups); });
  }
  dspp_status lr_at(int64_t, double* lrs_out) const noexcept override {
    for (size_t g = 0; g < base_.size(); ++g) lrs_out[g] = base_[g] * 2;
    return DSPP_OK;
  }
  dspp_status momentum_at(int64_t, double*) const noexcept override {
    return DSPP_ERR_NOT_SUPPORTED;
  }

 private:
  const dspp_host_api* host_;
  std::vector<double> base_;
};

const dspp_option_desc kOptions[] = {
    {"factor", DSPP_VALUE_FLOAT, "1.0", "Multiplier applied to the base learning rates.",
     DSPP_OPTION_HAS_MIN, 0.0, 0.0, nullptr},
    {"mode", DSPP_VALUE_STRING, "\"keep\"", "keep the factor or halve it.", 0, 0.0, 0.0,
     "keep | half"},
    {"warmup", DSPP_VALUE_INT, "0", "Unused; exercises the auto flag and a range.",
     DSPP_OPTION_HAS_MIN | DSPP_OPTION_HAS_MAX | DSPP_OPTION_ALLOW_AUTO, 0.0, 100.0, nullptr},
    {"extra", DSPP_VALUE_OBJECT, nullptr, "No default.", 0, 0.0, 0.0, nullptr},
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Scheduler, TestConst>(DSPP_KIND_SCHEDULER, "testconst", "1.2.3",
                                                       "Constant factor (test).", kOptions),
    dspp::plugin::describe<dspp::Scheduler, TestConst2>(DSPP_KIND_SCHEDULER, "TestConst2", "0.1.0",
                                                        "Doubles the lr (test)."),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("test_good", kPlugins)
