// ZeRO stage 0 and AdamW with the engine's flat buffers in GPU memory (device/cuda), against
// float64 references: the squared gradient norm, the overflow flag, the fp32 master and the
// rounded working copy after AdamW steps, in f32, bf16 and f16 working dtypes; and what refuses
// the GPU (AMSGrad). The scenario and its bounds are in zero_device_scenario.h
// (test_zero_device_fake runs the same on a host-memory stand-in for the device;
// test_gpu_zero_stages runs it through stages 1-3). Skipped (exit 77) without a GPU; see
// tests/gpu_main.cpp.
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <memory>

#include "catch.h"
#include "gpu_device_fixture.h"
#include "zero_device_scenario.h"

namespace {

// Kernels version 2: sum_squares, adam_step.
struct Gpu : GpuDevice {
  Gpu() : GpuDevice(2) {}
};

}  // namespace

TEST_CASE("zero/stage0 + adamw on the GPU in fp32: norm and overflow and master after 4 steps",
          "[gpu][zero]") {
  Gpu gpu;
  zdev::stage0_adamw(*gpu.dev, DSPP_F32);
}

TEST_CASE("zero/stage0 + adamw on the GPU with bf16 storage: fp32 master and rounded working copy",
          "[gpu][zero]") {
  Gpu gpu;
  zdev::stage0_adamw(*gpu.dev, DSPP_BF16);
}

TEST_CASE("zero/stage0 + adamw on the GPU with f16 storage: fp32 master and overflow past 65504",
          "[gpu][zero]") {
  Gpu gpu;
  zdev::stage0_adamw(*gpu.dev, DSPP_F16);
}

TEST_CASE("on the GPU: amsgrad refuses clearly", "[gpu][zero]") {
  Gpu gpu;
  zdev::device_refusals(*gpu.dev);
}
