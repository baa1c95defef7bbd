// Training on the GPU against the same training on the CPU (whose layers are checked against
// float64 references in test_nn_layers and whose engine against one process in test_dist_train).
//
// 1. A small GPT's loss and every parameter's gradient, GPU vs CPU, one forward and backward:
//    f32 (cuBLASLt without TF32, fp32 kernels): within 1e-4 of each gradient tensor's largest
//    element (the sums run in another order; measured ~1e-6), loss within 1e-5 relative.
//    bf16 (parameters and activations stored in bf16, f32 gradients, vs the f32 CPU run): bf16
//    keeps 8 significant bits (2^-9 = 0.2% per rounding) and every layer rounds its output once,
//    so over 2 blocks the gradients may move by a few percent: within 6% of each tensor's largest
//    element, loss within 1% relative.
// 3. A checkpoint of GPU training (bf16: fp32 master weights and Adam states copied off the GPU)
//    resumed on the GPU continues exactly: our kernels are deterministic, so steps 16-30 of the
//    resumed run equal the uninterrupted run's within 1e-6 relative.
// 2. ds-train as a user runs it, --device cuda vs --device cpu (embedded addition task, ZeRO
//    stage 0, 1, 2 and 3 (buckets of 20000 elements, GA 2), AdamW with warmup + cosine, clipping,
//    NCCL at world 1): every step's loss within
//    1e-3 relative in fp32, and the final parameters within 1e-3 in relative L2 norm. bf16 on the
//    GPU vs fp32 on the CPU: every step's loss within 3% and the loss falls at least 80% as far;
//    fp16 (dynamic loss scale, so early steps may be skipped): the fall and the last loss (5%).
//
// Skipped (exit 77) without a GPU; see tests/gpu_main.cpp.
#include <dspp/device.h>
#include <dspp/models.h>
#include <dspp/nn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"

namespace {

const char* kDsTrain = DSPP_BINARY_DIR "/bin/ds-train";

dspp::GPTConfig small_gpt() {
  dspp::GPTConfig c;
  c.vocab_size = 96;
  c.block_size = 32;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 64;
  return c;
}

dspp::Batch random_batch(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  dspp::Rng rng(seed);
  dspp::Batch b;
  b.inputs = dspp::Tensor::empty({B, T}, DSPP_I32);
  b.targets = dspp::Tensor::empty({B, T}, DSPP_I32);
  for (int64_t i = 0; i < B * T; ++i) {
    b.inputs.data<int32_t>()[i] = static_cast<int32_t>(rng.next_u64() % V);
    b.targets.data<int32_t>()[i] = static_cast<int32_t>(rng.next_u64() % V);
  }
  return b;
}

// Moves a model's parameters onto the GPU: values in `dtype`, gradients f32 zeros (what the
// engine does with its flat buffers).
void to_gpu(dspp::Module& m, dspp_dtype dtype) {
  const dspp_device dev = dspp::current_device();
  for (dspp::Parameter* p : m.parameters()) {
    p->value = p->value.to(dev, dtype);
    p->grad = dspp::Tensor::zeros(p->shape, DSPP_F32, dev);
  }
}

std::vector<float> host_floats(const dspp::Tensor& t) {
  const dspp::Tensor h = t.to(dspp::cpu_device(), DSPP_F32);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

void compare_gradients(dspp_dtype dtype, double grad_bound, double loss_bound) {
  dspp::use_device("cuda");
  const dspp::GPTConfig c = small_gpt();
  dspp::GPT cpu(c, 7), gpu(c, 7);
  to_gpu(gpu, dtype);
  const dspp::Batch batch = random_batch(3, 29, c.vocab_size, 11);  // T < block_size, odd
  const float lc = cpu.forward_loss(batch);
  cpu.backward_loss(1.0f);
  const float lg = gpu.forward_loss(batch);
  gpu.backward_loss(1.0f);
  INFO("loss cpu " << lc << " gpu " << lg);
  CHECK(std::fabs(lg - lc) <= loss_bound * std::fabs(lc));
  const std::vector<dspp::Parameter*> pc = cpu.parameters(), pg = gpu.parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    const std::vector<float> a = host_floats(pc[i]->grad), b = host_floats(pg[i]->grad);
    REQUIRE(a.size() == b.size());
    double largest = 0.0, worst = 0.0;
    size_t at = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      largest = std::max(largest, std::fabs(static_cast<double>(a[k])));
      const double e = std::fabs(static_cast<double>(a[k]) - b[k]);
      if (e > worst || !std::isfinite(e)) {
        worst = e;
        at = k;
      }
    }
    INFO(pc[i]->name << ": worst |gpu - cpu| " << worst << " at " << at << " (cpu " << a[at]
                     << ", gpu " << b[at] << "), largest |cpu| " << largest);
    CHECK(std::isfinite(worst));
    CHECK(worst <= grad_bound * largest);
    CHECK(largest > 0.0);  // every parameter gets a gradient
  }
}

struct Run {
  std::vector<int64_t> steps;
  std::vector<double> losses;
  std::vector<float> params;
  std::string out;
};

Run ds_train(const std::string& device, const std::string& extra, const std::string& tag) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("dspp_gpu_train_" + std::to_string(::getpid()) + "_" + tag);
  std::filesystem::create_directories(dir);
  const std::string csv = (dir / "run.csv").string(), dump = (dir / "params.bin").string();
  const std::string args = "--device " + device +
                           " --steps 30 --n-layer 2 --n-embd 64 --n-head 4 --eval-batches 1 "
                           "--seed 3 --csv '" +
                           csv + "' --dump-params '" + dump + "' " + extra;
  const ToolRun r = run_tool(kDsTrain, args);
  INFO("ds-train " << args << "\n" << r.out << r.err);
  REQUIRE(r.rc == 0);
  Run run;
  run.out = r.out;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string step, loss;
    std::getline(f, step, ',');
    std::getline(f, loss, ',');
    run.steps.push_back(std::stoll(step));
    run.losses.push_back(std::stod(loss));
  }
  std::ifstream bin(dump, std::ios::binary);
  const auto bytes = std::filesystem::file_size(dump);
  run.params.resize(bytes / 4);
  bin.read(reinterpret_cast<char*>(run.params.data()), static_cast<std::streamsize>(bytes));
  std::filesystem::remove_all(dir);
  return run;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("GPT gradients on the GPU equal the CPU's in f32") {
  compare_gradients(DSPP_F32, 1e-4, 1e-5);
}

TEST_CASE("GPT gradients on the GPU in bf16 stay near the f32 CPU's") {
  compare_gradients(DSPP_BF16, 6e-2, 1e-2);
}

// fp32 on the GPU against fp32 on the CPU, the same run: every step's loss and the final
// parameters.
void fp32_equals_cpu(const std::string& extra, const std::string& tag, double bound = 1e-3) {
  const Run cpu = ds_train("cpu", extra, "cpu_" + tag);
  const Run gpu = ds_train("cuda", extra, "cuda_" + tag);
  CHECK(gpu.out.find("ds-train: device cuda:0") != std::string::npos);
  REQUIRE(cpu.losses.size() == 30);
  REQUIRE(gpu.losses.size() == cpu.losses.size());
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    INFO("step " << i + 1 << " cpu " << cpu.losses[i] << " gpu " << gpu.losses[i]);
    CHECK(std::fabs(gpu.losses[i] - cpu.losses[i]) <= bound * std::fabs(cpu.losses[i]));
  }
  REQUIRE(gpu.params.size() == cpu.params.size());
  const double d = relative_l2(cpu.params, gpu.params);
  INFO("relative L2 distance of the final parameters " << d);
  CHECK(d <= bound);
}

TEST_CASE("ds-train on the GPU trains as on the CPU (ZeRO 0 AdamW fp32 world 1)") {
  fp32_equals_cpu("", "plain");
}

TEST_CASE("ds-train on the GPU trains as on the CPU at ZeRO 1") {
  fp32_equals_cpu("--set zero_optimization.stage=1", "z1");
}

TEST_CASE("ds-train on the GPU trains as on the CPU at ZeRO 2 with several reduce buckets") {
  fp32_equals_cpu(
      "--set zero_optimization.stage=2 --set zero_optimization.reduce_bucket_size=20000 "
      "--set gradient_accumulation_steps=2 --set train_micro_batch_size_per_gpu=16",
      "z2");
}

TEST_CASE("ds-train with Muon on the GPU trains as on the CPU (ZeRO 1)") {
  // Newton-Schulz's GEMMs sum in another order on the GPU (cuBLASLt vs OpenBLAS, both fp32): a
  // looser bound than AdamW's, 5e-3.
  fp32_equals_cpu("--set optimizer.type=Muon --set zero_optimization.stage=1", "muon", 5e-3);
}

TEST_CASE("ds-train on the GPU trains as on the CPU at ZeRO 3 (every parameter gathered per use)") {
  // Persistence threshold 0: every module's parameters are gathered into device memory before its
  // forward and its backward and freed after; gradients go through 20000-element buckets. The
  // final parameters come from GatheredParameters (--dump-params) on the GPU.
  fp32_equals_cpu(
      "--set zero_optimization.stage=3 --set zero_optimization.reduce_bucket_size=20000 "
      "--set zero_optimization.stage3_param_persistence_threshold=0",
      "z3");
}

TEST_CASE("ds-train on the GPU trains as on the CPU with gradient accumulation 2") {
  fp32_equals_cpu("--set gradient_accumulation_steps=2 --set train_micro_batch_size_per_gpu=16",
                  "ga2");
}

// 16-bit training on the GPU against fp32 on the CPU: `per_step` bounds every step's relative loss
// difference (0 skips the per-step check: fp16's first steps may be skipped on overflow while the
// loss scale settles), and the loss must fall at least 80% as far.
void sixteen_bit_follows_fp32(const std::string& key, double per_step, double final_bound) {
  const Run cpu = ds_train("cpu", "", "cpu32_" + key);
  const Run gpu = ds_train("cuda", "--set " + key + ".enabled=true", key);
  REQUIRE(gpu.losses.size() == cpu.losses.size());
  for (size_t i = 0; per_step > 0 && i < cpu.losses.size(); ++i) {
    INFO("step " << i + 1 << " cpu fp32 " << cpu.losses[i] << " gpu " << key << " "
                 << gpu.losses[i]);
    CHECK(std::fabs(gpu.losses[i] - cpu.losses[i]) <= per_step * std::fabs(cpu.losses[i]));
  }
  const double fall_cpu = cpu.losses.front() - cpu.losses.back();
  const double fall_gpu = gpu.losses.front() - gpu.losses.back();
  INFO("loss fell by " << fall_cpu << " (cpu fp32) and " << fall_gpu << " (gpu " << key << ")");
  CHECK(fall_cpu > 0.0);
  CHECK(fall_gpu >= 0.8 * fall_cpu);
  CHECK(std::fabs(gpu.losses.back() - cpu.losses.back()) <= final_bound * cpu.losses.back());
}

TEST_CASE("ds-train in bf16 on the GPU follows the fp32 CPU run") {
  sixteen_bit_follows_fp32("bf16", 3e-2, 3e-2);
}

TEST_CASE("ds-train in fp16 on the GPU follows the fp32 CPU run") {
  sixteen_bit_follows_fp32("fp16", 0.0, 5e-2);
}

TEST_CASE("ZeRO-Offload on the GPU trains as without it (bf16 ZeRO 2)") {
  // The fp32 master and AdamW's states on the host, stepped by the CPU Adam, against the same run
  // with everything on the GPU: the same fp32 formula on both sides, so the runs agree to rounding.
  const std::string common = "--set bf16.enabled=true --set zero_optimization.stage=2 ";
  const Run gpu = ds_train("cuda", common, "z2_gpu");
  const Run off =
      ds_train("cuda", common + "--set zero_optimization.offload_optimizer.device=cpu", "z2_off");
  REQUIRE(off.losses.size() == gpu.losses.size());
  for (size_t i = 0; i < gpu.losses.size(); ++i) {
    INFO("step " << i + 1 << " on the GPU " << gpu.losses[i] << " offloaded " << off.losses[i]);
    CHECK(std::fabs(off.losses[i] - gpu.losses[i]) <= 1e-5 * std::fabs(gpu.losses[i]));
  }
}

TEST_CASE("ZeRO 3 on the GPU in bf16 trains as ZeRO 0, and with ZeRO-Offload as without it") {
  // At world 1 stage 3 does stage 0's arithmetic (the gathers copy bf16 values, the gradients are
  // rounded to bf16 in buckets instead of in one pass): the same losses to rounding, 1e-5. Offload
  // steps the same fp32 formula on the CPU: 1e-5 again.
  const std::string bf16 = "--set bf16.enabled=true ";
  const std::string z3 = bf16 +
                         "--set zero_optimization.stage=3 "
                         "--set zero_optimization.stage3_param_persistence_threshold=0 ";
  const Run z0 = ds_train("cuda", bf16, "z0_bf16");
  const Run s3 = ds_train("cuda", z3, "z3_bf16");
  const Run off =
      ds_train("cuda", z3 + "--set zero_optimization.offload_optimizer.device=cpu", "z3_off");
  REQUIRE(s3.losses.size() == z0.losses.size());
  REQUIRE(off.losses.size() == z0.losses.size());
  for (size_t i = 0; i < z0.losses.size(); ++i) {
    INFO("step " << i + 1 << " ZeRO 0 " << z0.losses[i] << " ZeRO 3 " << s3.losses[i]
                 << " ZeRO 3 offloaded " << off.losses[i]);
    CHECK(std::fabs(s3.losses[i] - z0.losses[i]) <= 1e-5 * std::fabs(z0.losses[i]));
    CHECK(std::fabs(off.losses[i] - s3.losses[i]) <= 1e-5 * std::fabs(s3.losses[i]));
  }
}

TEST_CASE("a GPU checkpoint resumes on the GPU where it left off (bf16)") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("dspp_gpu_ckpt_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::string common = "--set bf16.enabled=true --save '" + dir.string() + "' ";
  const Run whole = ds_train("cuda", common + "--save-every 15", "whole");
  REQUIRE(std::filesystem::exists(dir / "global_step15"));
  {
    std::ofstream latest(dir / "latest", std::ios::trunc);  // resume from step 15, not 30
    latest << "global_step15";
  }
  const Run resumed = ds_train("cuda", common + "--resume '" + dir.string() + "'", "resumed");
  CHECK(resumed.out.find("resumed from") != std::string::npos);
  REQUIRE(resumed.steps.size() == 15);
  for (size_t i = 0; i < resumed.steps.size(); ++i) {
    const size_t k = static_cast<size_t>(resumed.steps[i] - 1);
    INFO("step " << resumed.steps[i] << " whole " << whole.losses[k] << " resumed "
                 << resumed.losses[i]);
    CHECK(std::fabs(resumed.losses[i] - whole.losses[k]) <= 1e-6 * std::fabs(whole.losses[k]));
  }
  std::filesystem::remove_all(dir);
}
