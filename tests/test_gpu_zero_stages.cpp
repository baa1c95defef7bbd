// ZeRO stages 1, 2 and 3 and AdamW with the engine's flat buffers in GPU memory (device/cuda), at
// world 1, against float64 references: the squared gradient norm, the overflow flag, the fp32
// master and the rounded working copy after AdamW steps, in f32, bf16 and f16 working dtypes;
// stages 2 and 3 through the engine's backward protocol (gradient views they hand out in device
// memory, several reduce buckets, a tied parameter, two accumulated micro-batches); stage 3 also
// through its gathers (values in device memory of the working dtype, write_back while gathered);
// all bit-equal to stage 0 (the same kernels in the same order); and ZeRO-Offload
// (offload_optimizer.device cpu: the master and AdamW's states in host memory, the CPU optimizer)
// at stages 0-3 against the same stage without it (to 1e-6). The scenario and its bounds are in
// zero_device_scenario.h (test_zero_device_fake runs the same on a host-memory stand-in for the
// device). Skipped (exit 77) without a GPU; see tests/gpu_main.cpp.
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

TEST_CASE("zero/stage1 + adamw on the GPU in fp32: norm and overflow and master after 4 steps",
          "[gpu][zero]") {
  Gpu gpu;
  (void)zdev::zero_adamw(*gpu.dev, DSPP_F32, 1);
}

TEST_CASE("zero/stage1 + adamw on the GPU with bf16 storage: fp32 master and rounded working copy",
          "[gpu][zero]") {
  Gpu gpu;
  (void)zdev::zero_adamw(*gpu.dev, DSPP_BF16, 1);
}

TEST_CASE("zero/stage1 + adamw on the GPU with f16 storage: overflow past 65504", "[gpu][zero]") {
  Gpu gpu;
  (void)zdev::zero_adamw(*gpu.dev, DSPP_F16, 1);
}

TEST_CASE("zero/stage2 + adamw on the GPU in fp32: gradients handed out in device buckets",
          "[gpu][zero]") {
  Gpu gpu;
  (void)zdev::zero_adamw(*gpu.dev, DSPP_F32, 2);
}

TEST_CASE("zero/stage2 + adamw on the GPU with bf16 storage: buckets rounded to bf16",
          "[gpu][zero]") {
  Gpu gpu;
  (void)zdev::zero_adamw(*gpu.dev, DSPP_BF16, 2);
}

TEST_CASE("zero/stage2 + adamw on the GPU with f16 storage: overflow past 65504", "[gpu][zero]") {
  Gpu gpu;
  (void)zdev::zero_adamw(*gpu.dev, DSPP_F16, 2);
}

TEST_CASE("zero/stage3 + adamw on the GPU: fp32, bf16 and f16 gathers and partitions",
          "[gpu][zero]") {
  Gpu gpu;
  for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16})
    (void)zdev::zero_adamw(*gpu.dev, dtype, 3);
}

TEST_CASE("zero stages 1-3 on the GPU equal stage 0 bit for bit at world 1", "[gpu][zero]") {
  Gpu gpu;
  for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) zdev::stages_agree(*gpu.dev, dtype);
}

TEST_CASE("zero-offload on the GPU: stages 0-3 with the master and adamw in pinned host memory",
          "[gpu][zero]") {
  Gpu gpu;
  for (int stage = 0; stage <= 3; ++stage) {
    for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
      zdev::offload_agrees(*gpu.dev, dtype, stage, R"({"device": "cpu"})");
    }
  }
}

TEST_CASE("zero-offload on the GPU with pin_memory false: pageable host memory", "[gpu][zero]") {
  Gpu gpu;
  for (int stage = 0; stage <= 3; ++stage) {
    zdev::offload_agrees(*gpu.dev, DSPP_BF16, stage, R"({"device": "cpu", "pin_memory": false})");
  }
}
