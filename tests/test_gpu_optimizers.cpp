// The optimizers' device steps (device/cuda, DeviceKernels version 3) against their CPU path on
// the same segments, groups, values and gradients: Muon (wide, tall, square and batched matrices,
// "gram" and "standard" Newton-Schulz, a non-finite gradient) with its AdamW half, SGD, Lion,
// Adagrad, LAMB, and Adam/AdamW. Elementwise results bit for bit; Muon's matrices and LAMB's
// parameters within the bounds that optimizer_device_scenario.h derives (Muon's GEMMs sum in
// cuBLASLt's order, the CPU's in OpenBLAS's; LAMB's norms in another order).
// test_zero_device_fake runs the same scenario on a host-memory stand-in for the device. Skipped
// (exit 77) without a GPU; see tests/gpu_main.cpp. DSPP_KERNEL_TEST_VERBOSE=1 prints the measured
// differences.
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <memory>

#include "catch.h"
#include "gpu_device_fixture.h"
#include "optimizer_device_scenario.h"

namespace {

// Kernels version 3: the optimizer kernels.
struct Gpu : GpuDevice {
  Gpu() : GpuDevice(3) {}
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

TEST_CASE("lion on the GPU equals the CPU's bit for bit", "[gpu][optimizer]") {
  Gpu gpu;
  for (const odev::OptCase& c : odev::lion_cases()) odev::compare_with_cpu(*gpu.dev, c);
}

TEST_CASE("adagrad on the GPU equals the CPU's bit for bit", "[gpu][optimizer]") {
  Gpu gpu;
  for (const odev::OptCase& c : odev::adagrad_cases()) odev::compare_with_cpu(*gpu.dev, c);
}

TEST_CASE("lamb on the GPU: moments bit for bit, parameters within 2 t ulp", "[gpu][optimizer]") {
  Gpu gpu;
  for (const odev::OptCase& c : odev::lamb_cases()) odev::compare_with_cpu(*gpu.dev, c);
}

TEST_CASE("adam and adamw on the GPU equal the CPU's bit for bit", "[gpu][optimizer]") {
  Gpu gpu;
  for (const odev::OptCase& c : odev::adam_cases()) odev::compare_with_cpu(*gpu.dev, c);
}
