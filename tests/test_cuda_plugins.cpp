// The CUDA plugins load on any machine they were built for, GPU or not: cudart is linked
// statically, so without a driver device/cuda loads and reports no device instead of failing
// the plugin scan (a failed load would stop initialize() for every run).
#include <dspp/error.h>
#include <dspp/kinds/comm.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include "catch.h"
#include "test_util.h"

TEST_CASE("device/cuda loads and counts GPUs, also where there are none", "[cuda]") {
  dspp::PluginRegistry registry;
  registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
  auto dev = registry.create<dspp::Device>("device", "cuda", nullptr);
  const int n = dev->count();
  CHECK(n >= 0);
  dspp::DeviceMemoryStats s{};
  s.struct_size = sizeof s;
  CHECK(dev->memory_stats(&s) == DSPP_OK);
  CHECK(s.allocated == 0);
  if (n == 0) {
    CHECK(dev->set_current(0) == DSPP_ERR_NOT_SUPPORTED);
    CHECK(contains(dspp::last_plugin_error(), "no CUDA device"));
  } else {
    CHECK(dev->set_current(n) == DSPP_ERR_INVALID_ARGUMENT);
  }
}

#ifdef DSPP_COMM_NCCL_PLUGIN
TEST_CASE("comm/nccl loads and refuses bad init arguments with a message", "[cuda]") {
  dspp::PluginRegistry registry;
  registry.load_library(DSPP_COMM_NCCL_PLUGIN);
  auto backend = registry.create<dspp::CommBackend>("comm", "nccl", nullptr);
  dspp::CommInitArgs args{};
  dspp::Communicator* c = nullptr;
  CHECK(backend->init_world(&args, &c) == DSPP_ERR_INVALID_ARGUMENT);
  CHECK(contains(dspp::last_plugin_error(), "no key-value store"));
  CHECK(c == nullptr);
}
#endif
