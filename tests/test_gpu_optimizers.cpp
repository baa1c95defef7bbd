// The optimizers' device steps (device/cuda, DeviceKernels version 3) against their CPU path on
// the same segments, groups, values and gradients: Muon (wide, tall, square and batched matrices,
// "gram" and "standard" Newton-Schulz, a non-finite gradient) with its AdamW half, and SGD.
// Elementwise results bit for bit; Muon's matrices within the bound that
// optimizer_device_scenario.h derives (its GEMMs sum in cuBLASLt's order, the CPU's in
// OpenBLAS's).
// test_zero_device_fake runs the same scenario on a host-memory stand-in for the device. Skipped
// (exit 77) without a GPU; see tests/gpu_main.cpp. DSPP_KERNEL_TEST_VERBOSE=1 prints the measured
// differences.
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <memory>

#include "catch.h"
#include "optimizer_device_scenario.h"

namespace {

struct Gpu {
  dspp::PluginRegistry registry;  // outlives dev (declared first)
  std::shared_ptr<dspp::Device> dev;
  Gpu() {
    registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
    dev = registry.create<dspp::Device>("device", "cuda", nullptr);
    zdev::check(dev->set_current(0), "set_current(0)");
    dspp::DeviceKernels* k = dev->kernels();
    REQUIRE(k != nullptr);
    REQUIRE(k->version() >= 3);  // the optimizer kernels
  }
  ~Gpu() { (void)dev->synchronize(nullptr); }
};

}  // namespace

TEST_CASE("muon on the GPU equals the CPU's: elementwise bit for bit, Newton-Schulz within bound",
          "[gpu][optimizer][muon]") {
  Gpu gpu;
  for (const odev::OptCase& c : odev::muon_cases()) odev::compare_with_cpu(*gpu.dev, c);
}

TEST_CASE("sgd on the GPU equals the CPU's bit for bit", "[gpu][optimizer]") {
  Gpu gpu;
  for (const odev::OptCase& c : odev::sgd_cases()) odev::compare_with_cpu(*gpu.dev, c);
}
