// The GPU tests' device: device/cuda loaded from the build tree (DSPP_DEVICE_CUDA_PLUGIN), GPU 0
// chosen, its kernels at least `min_version`. Synchronised before it goes, so a failed check
// never leaves work running into the next test case.
#pragma once

#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <cstdint>
#include <memory>

#include "catch.h"
#include "zero_device_scenario.h"

struct GpuDevice {
  dspp::PluginRegistry registry;  // outlives dev (declared first)
  std::shared_ptr<dspp::Device> dev;
  explicit GpuDevice(uint32_t min_version) {
    registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
    dev = registry.create<dspp::Device>("device", "cuda", nullptr);
    zdev::check(dev->set_current(0), "set_current(0)");
    dspp::DeviceKernels* k = dev->kernels();
    REQUIRE(k != nullptr);
    REQUIRE(k->version() >= min_version);
  }
  ~GpuDevice() { (void)dev->synchronize(nullptr); }
  GpuDevice(const GpuDevice&) = delete;
  GpuDevice& operator=(const GpuDevice&) = delete;
};
