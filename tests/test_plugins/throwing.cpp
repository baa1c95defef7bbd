// A plugin whose constructor always throws: the host must get the message as a dspp::Error.
#include <dspp/kinds/optimizer.h>
#include <dspp/plugin.h>

#include <stdexcept>

namespace {

class Broken final : public dspp::Optimizer {
 public:
  Broken(const dspp_host_api*, const dspp::plugin::ConfigReader&) {
    throw std::runtime_error("testbroken cannot start: no flux capacitor");
  }
  dspp_status init(const dspp::OptimizerSetup*) noexcept override { return DSPP_OK; }
  dspp_status step(const dspp::StepArgs*) noexcept override { return DSPP_OK; }
  int32_t needs_whole_params() const noexcept override { return 0; }
  int32_t num_states() const noexcept override { return 0; }
  dspp_status state(int32_t, const char**, dspp_tensor_view*) noexcept override {
    return DSPP_ERR_NOT_SUPPORTED;
  }
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::Optimizer, Broken>(
    DSPP_KIND_OPTIMIZER, "testbroken", "1.0.0", "Always fails to create (test).")};

}  // namespace

DSPP_PLUGIN_LIBRARY("test_throwing", kPlugins)
