// A well-formed plugin that needs another shared library (libdspp_tp_dep.so, found next to it
// through $ORIGIN/lib), like comm/nccl needs libnccl.so.2: the tests remove the dependency to check
// that a scan skips the plugin with a warning instead of failing every run.
#include <dspp/kinds/scheduler.h>
#include <dspp/plugin.h>

#include <vector>

extern "C" double dspp_tp_dep_factor();

namespace {

class NeedsDep final : public dspp::Scheduler {
 public:
  NeedsDep(const dspp_host_api* host, const dspp::plugin::ConfigReader&) : host_(host) {}
  dspp_status init(const double* base_lrs, int32_t num_groups) noexcept override {
    return dspp::plugin::guard(host_, [&] { base_.assign(base_lrs, base_lrs + num_groups); });
  }
  dspp_status lr_at(int64_t, double* lrs_out) const noexcept override {
    for (size_t g = 0; g < base_.size(); ++g) lrs_out[g] = base_[g] * dspp_tp_dep_factor();
    return DSPP_OK;
  }
  dspp_status momentum_at(int64_t, double*) const noexcept override {
    return DSPP_ERR_NOT_SUPPORTED;
  }

 private:
  const dspp_host_api* host_;
  std::vector<double> base_;
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::Scheduler, NeedsDep>(
    DSPP_KIND_SCHEDULER, "needsdep", "1.0.0", "Needs libdspp_tp_dep.so.")};

}  // namespace

DSPP_PLUGIN_LIBRARY("test_needs_dep", kPlugins)
