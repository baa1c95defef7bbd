// A v1 library whose descriptor is wrong in one way, chosen by TEST_CASE_ID at build time:
//   1 descriptor ABI major 2 inside a v1 library    2 descriptor ABI minor newer than the host's
//   3 unknown kind                                 4 no destroy function
//   5 a zero plugin built for ABI 1.0 (the zero kind changed in 1.1)
#include <dspp/kinds/scheduler.h>
#include <dspp/plugin.h>

namespace {

class Nothing final : public dspp::Scheduler {
 public:
  Nothing(const dspp_host_api*, const dspp::plugin::ConfigReader&) {}
  dspp_status init(const double*, int32_t) noexcept override { return DSPP_OK; }
  dspp_status lr_at(int64_t, double*) const noexcept override { return DSPP_OK; }
  dspp_status momentum_at(int64_t, double*) const noexcept override {
    return DSPP_ERR_NOT_SUPPORTED;
  }
};

constexpr dspp_plugin_desc make() {
  dspp_plugin_desc d = dspp::plugin::describe<dspp::Scheduler, Nothing>(
      DSPP_KIND_SCHEDULER, "testbad", "1.0.0", "A broken descriptor (test).");
#if TEST_CASE_ID == 1
  d.abi_major = 2;
#elif TEST_CASE_ID == 2
  d.abi_minor = DSPP_ABI_MINOR + 1;
#elif TEST_CASE_ID == 3
  d.kind = "optimiser";
#elif TEST_CASE_ID == 4
  d.destroy = nullptr;
#elif TEST_CASE_ID == 5
  d.kind = DSPP_KIND_ZERO;
  d.abi_minor = 0;
#endif
  return d;
}

const dspp_plugin_desc kPlugins[] = {make()};

}  // namespace

DSPP_PLUGIN_LIBRARY("test_bad_descriptor", kPlugins)
