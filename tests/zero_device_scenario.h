// ZeRO stages 0-3 and AdamW on device memory (the engine's flat buffers on a GPU), shared
// by test_gpu_zero_stage0.cpp and test_gpu_zero_stages.cpp (device/cuda on a real GPU) and
// test_zero_device_fake.cpp (a fake device in host memory, so the plumbing runs on every
// machine). Both give a dspp::Device; the checks are the same.
//
// The plugins are created through their descriptors with a copy of dspp::host_api() whose
// `device` callback returns that Device (PluginLib below: a test-only loader, the registry's
// create() always passes the process's own host services). The data-parallel group is a world of
// one (LocalComm), which no stage calls: every collective of it fails.
//
// Layout (64 elements, as the engine pads the flat buffers): mlp.weight [5, 7] at 0 (group 0,
// decayed), mlp.bias [13] at 35 (group 0, DSPP_PARAM_NO_DECAY), embed.frozen [3, 3] at 48 (group
// -1: not trained), zero padding from 57. AdamW (lr from the step's lrs, betas 0.9/0.999, eps
// 1e-8, weight decay 0.1) steps 4 times with a different lr and gradient scale each step; the
// reference is the same update in float64 from the same (rounded) gradients. Stages 1 and 2 run
// at world 1 too (one partition: the whole buffer); stage 2 gets its gradients through the
// engine's backward protocol (backward_stage2: several buckets, one grown, a tied parameter) and
// also accumulates two micro-batches; at world 1 stages 0-2 end bit-equal (stages_agree).
//
// Bounds:
//  - squared norm: relative 1e-12 (the squares of f32 values are exact in f64; the kernel sums
//    48 of them in f64, 48 roundings of 2^-53);
//  - the local gradient after reduce_gradients: exactly the f32 gradient rounded to the working
//    dtype (round to nearest even), and after step() exactly that times the scale in f32;
//  - master (f32) after 4 steps: |got - ref| <= 1e-6 + 2e-6 |ref|. Per step the fp32 kernel makes
//    ~10 roundings (unit roundoff 6e-8) on terms of size |p| (decay) and lr (the update, whose
//    factor m / sqrt(v) is O(1)); 4 steps give ~5e-7 |p| + 1e-7. A slip in the math (a lost
//    weight decay is lr * 0.1 * |p| = 5e-4 |p| and more, a wrong bias correction moves p by O(lr))
//    is far outside;
//  - moments: m within 1e-6 + 1e-6 |ref| (beta1 m and (1 - beta1) g cancel, so its error is
//    relative to those terms, |g| < 2, not to m: ~1e-7), v within 1e-9 + 1e-6 |ref| (positive
//    terms: a few fp32 roundings each step);
//  - working copy: exactly the downloaded master rounded to the working dtype, and within half an
//    ulp of the dtype (2^-8 |ref| for bf16's 8 significant bits, 2^-11 for f16's 11) plus the
//    master's bound of the reference;
//  - the untrained parameter and the padding: bit-identical to their initial values; their
//    moments exactly 0.
#pragma once

#include <dlfcn.h>
#include <dspp/config.h>
#include <dspp/error.h>
#include <dspp/kinds/comm.h>
#include <dspp/kinds/device.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/kinds/zero.h>
#include <dspp/plugins.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "half_bits.h"
#include "test_util.h"

namespace zdev {

// ---- 16-bit values on the host (round to nearest even), independent of the code under test ----

using half_bits::bf16_bits;
using half_bits::bf16_value;
using half_bits::bits_of;
using half_bits::f16_bits;
using half_bits::f16_value;
using half_bits::float_of;

inline float round_to(int32_t dtype, float f) {
  if (dtype == DSPP_BF16) return bf16_value(bf16_bits(f));
  if (dtype == DSPP_F16) return f16_value(f16_bits(f));
  return f;
}
inline size_t dtype_bytes(int32_t dtype) {
  return dtype == DSPP_BF16 || dtype == DSPP_F16 ? 2 : dtype == DSPP_F64 ? 8 : 4;
}
inline const char* dtype_name(int32_t dtype) {
  return dtype == DSPP_BF16 ? "bf16" : dtype == DSPP_F16 ? "f16" : "f32";
}

// Floats in `dtype`'s storage and back.
inline std::vector<unsigned char> encode(int32_t dtype, const std::vector<float>& v) {
  std::vector<unsigned char> out(v.size() * dtype_bytes(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DSPP_F32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t h = dtype == DSPP_BF16 ? bf16_bits(v[i]) : f16_bits(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}
inline std::vector<float> decode(int32_t dtype, const std::vector<unsigned char>& b) {
  std::vector<float> out(b.size() / dtype_bytes(dtype));
  for (size_t i = 0; i < out.size(); ++i) {
    if (dtype == DSPP_F32) {
      std::memcpy(&out[i], &b[4 * i], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &b[2 * i], 2);
      out[i] = dtype == DSPP_BF16 ? bf16_value(h) : f16_value(h);
    }
  }
  return out;
}

inline void check(dspp_status st, const std::string& what) {
  dspp::check_plugin(st, what);
}

inline int64_t numel(const dspp_tensor_view& v) {
  int64_t n = 1;
  for (int32_t d = 0; d < v.ndim; ++d) n *= v.shape[d];
  return n;
}

// The values of a device view (any float dtype), after the legacy stream's work so far.
// (A view of host memory, such as what ZeRO-Offload keeps there, is read directly.)
inline std::vector<float> download(dspp::Device& dev, const dspp_tensor_view& v) {
  std::vector<unsigned char> host(static_cast<size_t>(numel(v)) * dtype_bytes(v.dtype));
  if (v.device.type == DSPP_DEVICE_CPU) {
    if (!host.empty()) std::memcpy(host.data(), v.data, host.size());
    return decode(v.dtype, host);
  }
  if (!host.empty()) check(dev.copy(host.data(), v.data, host.size(), nullptr), "copy d2h");
  check(dev.synchronize(nullptr), "synchronize");
  return decode(v.dtype, host);
}
// Writes values (rounded to the view's dtype) into a device view (or a host view, directly).
inline void upload(dspp::Device& dev, const dspp_tensor_view& v, const std::vector<float>& values) {
  REQUIRE(static_cast<int64_t>(values.size()) == numel(v));
  const std::vector<unsigned char> host = encode(v.dtype, values);
  if (v.device.type == DSPP_DEVICE_CPU) {
    if (!host.empty()) std::memcpy(v.data, host.data(), host.size());
    return;
  }
  if (!host.empty()) check(dev.copy(v.data, host.data(), host.size(), nullptr), "copy h2d");
  check(dev.synchronize(nullptr), "synchronize");
}

// Device memory of one 1-d view, freed at the end of the scope.
class DeviceTensor {
 public:
  DeviceTensor(dspp::Device& dev, int32_t dtype, int64_t n) : dev_(dev) {
    view_.dtype = dtype;
    view_.ndim = 1;
    view_.shape[0] = n;
    view_.device = dspp_device{DSPP_DEVICE_CUDA, 0};
    check(dev.alloc(static_cast<size_t>(n) * dtype_bytes(dtype), nullptr, &view_.data), "alloc");
  }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;
  ~DeviceTensor() {
    if (view_.data) (void)dev_.free(view_.data, nullptr);
  }
  const dspp_tensor_view& view() const { return view_; }
  dspp_tensor_view slice(int64_t off, int64_t n) const {
    dspp_tensor_view s = view_;
    s.data = static_cast<char*>(view_.data) + off * static_cast<int64_t>(dtype_bytes(view_.dtype));
    s.shape[0] = n;
    return s;
  }
  std::vector<float> get() const { return download(dev_, view_); }
  void put(const std::vector<float>& v) const { upload(dev_, view_, v); }

 private:
  dspp::Device& dev_;
  dspp_tensor_view view_{};
};

// ---- plugins created with a host whose compute device is the test's ----------------------

// The device the host services below report (one at a time: tests in one process run in turn).
inline dspp::Device*& host_device_slot() {
  static dspp::Device* d = nullptr;
  return d;
}
inline void* host_device_cb(void*) {
  return host_device_slot();
}
inline int32_t memory_category_cb(void*, int32_t category) {
  dspp::Device* d = host_device_slot();
  return d ? d->set_memory_category(category) : DSPP_MEM_OTHER;
}
// dspp::host_api() (its logger, errors and memory) with `device` returning `dev` and
// `memory_category` setting its category.
inline const dspp_host_api* host_with_device(dspp::Device* dev) {
  static dspp_host_api host = [] {
    dspp_host_api h = *dspp::host_api();
    h.device = &host_device_cb;
    h.memory_category = &memory_category_cb;
    return h;
  }();
  host_device_slot() = dev;
  return &host;
}

// Test-only loader: one plugin library by path, its objects created with any host services.
// (The library stays loaded for the process: objects may outlive this handle.)
class PluginLib {
 public:
  explicit PluginLib(const std::string& path) : path_(path) {
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    INFO(path << ": " << (h ? "" : dlerror()));
    REQUIRE(h != nullptr);
    auto entry = reinterpret_cast<dspp_plugin_entry_fn>(dlsym(h, DSPP_PLUGIN_ENTRY_SYMBOL));
    REQUIRE(entry != nullptr);
    lib_ = entry();
    REQUIRE(lib_ != nullptr);
  }

  // The object, or the dspp::Error check_plugin makes of a failed create.
  template <class T>
  std::shared_ptr<T> create(const char* kind, const char* name, const dspp_host_api* host,
                            const dspp_config_view* config) const {
    for (uint32_t i = 0; i < lib_->num_plugins; ++i) {
      const dspp_plugin_desc& d = lib_->plugins[i];
      if (std::strcmp(d.kind, kind) != 0 || std::strcmp(d.name, name) != 0) continue;
      void* obj = nullptr;
      check(d.create(host, config, &obj), std::string("create ") + kind + "/" + name);
      REQUIRE(obj != nullptr);
      void (*destroy)(void*) = d.destroy;
      return std::shared_ptr<T>(static_cast<T*>(obj), [destroy](T* p) { destroy(p); });
    }
    FAIL(path_ << " has no plugin " << kind << "/" << name);
    return nullptr;
  }

 private:
  std::string path_;
  const dspp_plugin_library* lib_ = nullptr;
};

// A data-parallel group of one that must never be asked to communicate.
class LocalComm final : public dspp::Communicator {
 public:
  int32_t rank() const noexcept override { return 0; }
  int32_t size() const noexcept override { return 1; }
  dspp_status split(const int32_t*, int32_t, const char*, Communicator**) noexcept override {
    return refuse();
  }
  void release() noexcept override {}
  dspp_status all_reduce(dspp_tensor_view, int32_t, dspp::CommWork**) noexcept override {
    return refuse();
  }
  dspp_status reduce_scatter(dspp_tensor_view, dspp_tensor_view, int32_t,
                             dspp::CommWork**) noexcept override {
    return refuse();
  }
  dspp_status all_gather(dspp_tensor_view, dspp_tensor_view, dspp::CommWork**) noexcept override {
    return refuse();
  }
  dspp_status broadcast(dspp_tensor_view, int32_t, dspp::CommWork**) noexcept override {
    return refuse();
  }
  dspp_status send(dspp_tensor_view, int32_t, int32_t, dspp::CommWork**) noexcept override {
    return refuse();
  }
  dspp_status recv(dspp_tensor_view, int32_t, int32_t, dspp::CommWork**) noexcept override {
    return refuse();
  }
  dspp_status barrier() noexcept override { return refuse(); }

 private:
  static dspp_status refuse() noexcept {
    const dspp_host_api* h = dspp::host_api();
    return h->set_error(h->self, DSPP_ERR_RUNTIME,
                        "LocalComm: a world of one has no peers; a stage must not communicate");
  }
};

// ---- the layout -----------------------------------------------------------------------------

constexpr int64_t kFlat = 64;
constexpr int64_t kDecayEnd = 35;    // [0, 35): mlp.weight, decayed
constexpr int64_t kTrainedEnd = 48;  // [35, 48): mlp.bias, no decay
constexpr int64_t kFrozenEnd = 57;   // [48, 57): embed.frozen, untrained; then padding

// The three parameters as the engine describes them, with views into the flat buffers.
inline std::vector<dspp::ZeroParam> layout(const DeviceTensor& params, const DeviceTensor& grads) {
  struct Def {
    const char* name;
    int32_t ndim;
    int64_t d0, d1;
    int64_t offset;
    uint32_t flags;
    int32_t group;
  };
  const Def defs[] = {{"mlp.weight", 2, 5, 7, 0, 0u, 0},
                      {"mlp.bias", 1, 13, 1, kDecayEnd, DSPP_PARAM_NO_DECAY, 0},
                      {"embed.frozen", 2, 3, 3, kTrainedEnd, 0u, -1}};
  std::vector<dspp::ZeroParam> out;
  for (const Def& d : defs) {
    dspp::ZeroParam p{};
    p.name = d.name;
    p.ndim = d.ndim;
    p.shape[0] = d.d0;
    p.shape[1] = d.d1;
    p.numel = d.ndim == 1 ? d.d0 : d.d0 * d.d1;
    p.offset_in_flat = d.offset;
    p.value = params.slice(d.offset, p.numel);
    p.value.ndim = d.ndim;
    p.value.shape[0] = d.d0;
    p.value.shape[1] = d.ndim == 2 ? d.d1 : 0;
    p.grad = grads.slice(d.offset, p.numel);
    p.grad.ndim = d.ndim;
    p.grad.shape[0] = d.d0;
    p.grad.shape[1] = d.ndim == 2 ? d.d1 : 0;
    p.flags = d.flags;
    p.group = d.group;
    out.push_back(p);
  }
  return out;
}

// `offload`: zero_optimization.offload_optimizer JSON ("" for none).
inline dspp::Config test_config(const std::string& adam_params = "",
                                const std::string& offload = "") {
  dspp::LoadOptions opts;
  opts.on_warning = [](const dspp::ConfigMessage&) {};
  const std::string params =
      adam_params.empty()
          ? R"({"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.1})"
          : adam_params;
  return dspp::Config::from_string(
      R"({"train_micro_batch_size_per_gpu": 1,
          "optimizer": {"type": "AdamW", "params": )" +
          params + R"(},
          "zero_optimization": {"stage": 0, "reduce_bucket_size": 20,
                                "stage3_param_persistence_threshold": 10)" +
          (offload.empty() ? std::string() : R"(, "offload_optimizer": )" + offload) + R"(}})",
      opts);
}

// |got[i] - ref[i]| <= atol + rtol |ref[i]| for i in [lo, hi); the worst element is reported.
inline void expect_close(const std::string& what, const std::vector<float>& got,
                         const std::vector<double>& ref, int64_t lo, int64_t hi, double atol,
                         double rtol) {
  int64_t bad = 0, worst = lo;
  double worst_ratio = -1.0;
  for (int64_t i = lo; i < hi; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double ratio = std::isnan(err) ? INFINITY : err / (atol + rtol * std::fabs(ref[i]));
    if (ratio > 1.0) ++bad;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst = i;
    }
  }
  std::ostringstream os;
  os.precision(9);
  os << what << ": " << bad << " of " << hi - lo << " elements outside the bound; worst at "
     << worst << ": got " << got[worst] << ", ref " << ref[worst] << " (ratio " << worst_ratio
     << ")";
  if (const char* e = std::getenv("DSPP_KERNEL_TEST_VERBOSE"); e && *e && std::strcmp(e, "0") != 0)
    std::printf("%s\n", os.str().c_str());
  INFO(os.str());
  CHECK(bad == 0);
}

// Bit-identical (NaN compares by bits too).
inline void expect_bits(const std::string& what, const std::vector<float>& got,
                        const std::vector<float>& want, int64_t lo, int64_t hi) {
  int64_t bad = 0, first = -1;
  for (int64_t i = lo; i < hi; ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) {
      ++bad;
      if (first < 0) first = i;
    }
  }
  INFO(what << ": " << bad << " elements differ; first at " << first << ": got "
            << (first >= 0 ? got[first] : 0.f) << ", want " << (first >= 0 ? want[first] : 0.f));
  CHECK(bad == 0);
}

// ---- the scenario ---------------------------------------------------------------------------

// What a run leaves after its 4 steps (downloaded): the f32 values the optimizer stepped (the
// master, or the working copy in fp32 training), the working copy, and the two moments. Stages 0-2
// at world 1 do the same arithmetic in the same order, so their outcomes are bit-equal.
struct Outcome {
  std::vector<float> master, working, exp_avg, exp_avg_sq;
};

// Stages 2 and 3 own gradient memory: one backward of the gradient `g` (the whole flat layout)
// through the engine's protocol. begin_backward, then the modules in backward order (the reverse of
// the flat order): embed.frozen, mlp.bias, then mlp.weight together with mlp.bias again (`tied`:
// mlp.bias is DSPP_PARAM_SHARED, read by two modules, as a tied embedding is), each with
// before_backward (the stage hands out zeroed f32 device views; the test writes the module's
// gradient there, as the layers would), after_backward, and end_backward. With reduce_bucket_size
// 20 the 9 elements of embed.frozen fill part of a bucket, mlp.weight's 35 do not fit in what is
// left (that bucket is reduced while the other one grows to hold them), and mlp.bias lives in the
// tied slots reduced at the end.
// Stage 3 (`values_dtype` the working dtype, -1 for stage 2) also hands out each module's values.
inline void backward_stage2(dspp::Device& dev, dspp::ZeroStage& stage,
                            const std::vector<dspp::ZeroParam>& zp, const std::vector<float>& g,
                            int32_t values_dtype = -1) {
  check(stage.begin_backward(), "begin_backward");
  const std::vector<std::vector<int32_t>> modules = {{2}, {1}, {0, 1}};
  std::vector<bool> written(zp.size(), false);
  for (const std::vector<int32_t>& idx : modules) {
    const int32_t n = static_cast<int32_t>(idx.size());
    std::vector<dspp_tensor_view> values(idx.size()), views(idx.size());
    check(stage.before_backward(idx.data(), n, values.data(), views.data()), "before_backward");
    for (size_t i = 0; i < idx.size(); ++i) {
      const dspp::ZeroParam& p = zp[static_cast<size_t>(idx[i])];
      if (values_dtype >= 0) {
        // Stage 3: the value gathered for the module, on the device in the working dtype.
        INFO("value of " << p.name << " in backward");
        REQUIRE(values[i].device.type == DSPP_DEVICE_CUDA);
        REQUIRE(values[i].dtype == values_dtype);
        REQUIRE(numel(values[i]) == p.numel);
        REQUIRE(values[i].ndim == p.ndim);
      }
      INFO("gradient view of " << p.name);
      REQUIRE(views[i].device.type == DSPP_DEVICE_CUDA);
      REQUIRE(views[i].dtype == DSPP_F32);
      REQUIRE(numel(views[i]) == p.numel);
      const std::vector<float> mine(g.begin() + p.offset_in_flat,
                                    g.begin() + p.offset_in_flat + p.numel);
      if (written[static_cast<size_t>(idx[i])]) {
        // A tied parameter's second module: the same slot, still holding what the first wrote
        // (the layers accumulate into it).
        expect_bits("a tied gradient across modules", download(dev, views[i]), mine, 0, p.numel);
        continue;
      }
      expect_bits("a gradient view as handed out", download(dev, views[i]),
                  std::vector<float>(static_cast<size_t>(p.numel), 0.f), 0, p.numel);
      upload(dev, views[i], mine);
      written[static_cast<size_t>(idx[i])] = true;
    }
    check(stage.after_backward(idx.data(), n), "after_backward");
  }
  check(stage.end_backward(), "end_backward");
}

// AdamW through ZeRO stage `stage` (0-3) at world 1 on `dev`'s memory with the working copy in
// `dtype` (f32, bf16, f16). Stages 1-3 partition over one rank: the partition is the whole flat
// buffer. Stage 2's and 3's gradients go through backward_stage2 (their own device memory); stages
// 0 and 1 read the engine's flat_grads, written by the test. Stage 3 gets no flat_params memory
// (the layout's length, dtype and device only) and the initial values as fp32 host tensors, as
// the engine gives them; its working copy is read by gathering every parameter (before_forward),
// so the padding, which no parameter covers, is invisible there; mlp.weight and mlp.bias are
// gathered per use (stage3_param_persistence_threshold 10) and embed.frozen stays gathered.
// `offload`: the JSON of zero_optimization.offload_optimizer with device "cpu" (ZeRO-Offload: the
// master and the optimizer's states in host memory, the optimizer stepping on the CPU), or "" for
// none.
inline Outcome zero_adamw(dspp::Device& dev, int32_t dtype, int stage_no,
                          const std::string& offload = "") {
  INFO("zero stage " << stage_no << ", working dtype " << dtype_name(dtype)
                     << (offload.empty() ? "" : ", offload_optimizer " + offload));
  const bool mixed = dtype != DSPP_F32;
  const bool owns_grads = stage_no >= 2;
  const bool owns_params = stage_no == 3;
  // The part of the flat layout the working copy shows: stage 3's gathers cover the parameters.
  const int64_t visible = owns_params ? kFrozenEnd : kFlat;
  const bool offloaded = !offload.empty();
  const dspp_device states_on{offloaded ? DSPP_DEVICE_CPU : DSPP_DEVICE_CUDA, 0};
  const dspp_host_api* host = host_with_device(&dev);
  const dspp::Config cfg = test_config("", offload);
  const PluginLib adam_lib(DSPP_OPTIMIZER_ADAM_PATH);
  const char* paths[] = {DSPP_ZERO_STAGE0_PATH, DSPP_ZERO_STAGE1_PATH, DSPP_ZERO_STAGE2_PATH,
                         DSPP_ZERO_STAGE3_PATH};
  REQUIRE((stage_no >= 0 && stage_no <= 3));
  const PluginLib zero_lib(paths[stage_no]);
  const std::string stage_name = "stage" + std::to_string(stage_no);
  Outcome out;

  DeviceTensor params(dev, dtype, kFlat);
  DeviceTensor grads(dev, DSPP_F32, kFlat);
  std::mt19937_64 rng(20261129);
  std::uniform_real_distribution<float> u1(-1.f, 1.f), u2(-2.f, 2.f);
  std::vector<float> p0(kFlat, 0.f);
  for (int64_t i = 0; i < kFrozenEnd; ++i) p0[i] = round_to(dtype, u1(rng));
  params.put(p0);
  grads.put(std::vector<float>(kFlat, 0.f));

  {  // the optimizer and the stage die before the buffers
    auto opt =
        adam_lib.create<dspp::Optimizer>("optimizer", "adamw", host, cfg.view("optimizer.params"));
    auto stage = zero_lib.create<dspp::ZeroStage>("zero", stage_name.c_str(), host,
                                                  cfg.view("zero_optimization"));
    std::vector<dspp::ZeroParam> zp = layout(params, grads);
    if (owns_grads) {
      // As the engine describes them to a stage that manages gradients: no gradient views; the
      // bias is tied (read by two modules).
      for (dspp::ZeroParam& p : zp) p.grad = dspp_tensor_view{};
      zp[1].flags |= DSPP_PARAM_SHARED;
    }
    // Stage 3: each value an fp32 host tensor (the engine builds the model on the host); the
    // flat layout has no memory.
    std::vector<float> p0_host = p0;
    dspp_tensor_view flat_params = params.view();
    if (owns_params) {
      for (dspp::ZeroParam& p : zp) {
        p.value.data = p0_host.data() + p.offset_in_flat;
        p.value.dtype = DSPP_F32;
        p.value.device = dspp_device{DSPP_DEVICE_CPU, 0};
      }
      flat_params.data = nullptr;
    }
    const dspp::ParamGroupSetup group{std::numeric_limits<double>::quiet_NaN(),
                                      std::numeric_limits<double>::quiet_NaN(), nullptr};
    LocalComm comm;
    const dspp_device cuda{DSPP_DEVICE_CUDA, 0};
    const dspp::ZeroSetup setup{zp.data(),   static_cast<int32_t>(zp.size()),
                                flat_params, owns_grads ? dspp_tensor_view{} : grads.view(),
                                &comm,       opt.get(),
                                &group,      1,
                                cuda,        1,
                                1.0,         dtype};
    check(stage->init(&setup), stage_name + " init");
    CHECK(stage->capabilities() == (owns_params ? DSPP_ZERO_MANAGES_GRADS | DSPP_ZERO_MANAGES_PARAMS
                                    : owns_grads ? DSPP_ZERO_MANAGES_GRADS
                                                 : 0u));
    // Puts one micro-batch's gradient where the stage reads it.
    auto backward = [&](const std::vector<float>& g) {
      if (owns_grads) {
        backward_stage2(dev, *stage, zp, g, owns_params ? dtype : -1);
      } else {
        grads.put(g);
      }
    };
    const std::vector<int32_t> all = {0, 1, 2};
    // Stage 3: every parameter gathered (before_forward), `fn` given the views, then released.
    auto gathered = [&](auto&& fn) {
      std::vector<dspp_tensor_view> views(all.size());
      check(stage->before_forward(all.data(), 3, views.data()), "before_forward");
      for (size_t i = 0; i < all.size(); ++i) {
        INFO("value of " << zp[i].name);
        REQUIRE(views[i].device.type == DSPP_DEVICE_CUDA);
        REQUIRE(views[i].dtype == dtype);
        REQUIRE(numel(views[i]) == zp[i].numel);
      }
      fn(views);
      check(stage->after_forward(all.data(), 3), "after_forward");
    };
    // The working copy (stage 3: the gathered values, zero where no parameter lies).
    auto working = [&]() {
      if (!owns_params) return params.get();
      std::vector<float> w(kFlat, 0.f);
      gathered([&](const std::vector<dspp_tensor_view>& views) {
        for (size_t i = 0; i < all.size(); ++i) {
          const std::vector<float> v = download(dev, views[i]);
          std::copy(v.begin(), v.end(), w.begin() + zp[i].offset_in_flat);
        }
      });
      return w;
    };

    // The optimizer's states live on the device (in host memory under offload), zero-initialised.
    REQUIRE(opt->num_states() == 2);
    dspp_tensor_view mv{}, vv{};
    const char* name = nullptr;
    check(opt->state(0, &name, &mv), "state 0");
    CHECK(std::string(name) == "exp_avg");
    check(opt->state(1, &name, &vv), "state 1");
    CHECK(std::string(name) == "exp_avg_sq");
    CHECK(mv.device.type == states_on.type);
    CHECK(vv.device.type == states_on.type);
    CHECK(numel(mv) == kFlat);
    expect_bits("exp_avg at init", download(dev, mv), std::vector<float>(kFlat, 0.f), 0, kFlat);

    dspp::ZeroShard shard{};
    check(stage->shard(&shard), "shard");
    CHECK(shard.begin == 0);
    CHECK(shard.end == kFlat);
    CHECK(shard.optimizer_begin == 0);
    CHECK(shard.values.device.type == states_on.type);  // offload: the master in host memory
    CHECK(shard.values.dtype == DSPP_F32);
    CHECK(numel(shard.values) == kFlat);
    // fp32 without offload: the values are the master.
    if (!mixed && !offloaded && !owns_params) CHECK(shard.values.data == params.view().data);
    expect_bits("master at init", download(dev, shard.values), p0, 0, kFlat);

    dspp::MemoryBreakdown mem{};
    check(stage->memory(&mem), "memory");
    // Stage 3: its partition and the persistent embed.frozen (9 elements), gathered since init.
    CHECK(mem.param_bytes ==
          (kFlat + (owns_params ? kFrozenEnd - kTrainedEnd : 0)) * int64_t(dtype_bytes(dtype)));
    expect_bits("working copy at init", working(), p0, 0, kFlat);
    CHECK(mem.grad_bytes == kFlat * 4);  // stage 2: its partition's accumulator, the whole here
    CHECK(mem.master_bytes == (mixed || offloaded ? kFlat * 4 : 0));
    CHECK(mem.optimizer_state_bytes == 2 * kFlat * 4);
    if (owns_grads) CHECK(mem.buffer_bytes >= (2 * 20 + 13) * 4);  // two buckets, the tied slots
    if (offloaded) CHECK(mem.buffer_bytes >= kFlat * 4);           // the host gradient
    {
      // The allocator's categories (as asked) agree with the stage's own accounting. The test's
      // flat buffers are untagged (other); the stage tags its partition and gathers (stage 3),
      // its gradient accumulator (stages 2-3), the master and the optimizer's states, and its
      // reduction buffers (all of buffer_bytes but the f64 norm accumulator).
      dspp::DeviceMemoryStats st{};
      st.struct_size = sizeof st;
      check(dev.memory_stats(&st), "memory_stats");
      const auto cat = [&](int c) { return static_cast<int64_t>(st.category_requested[c]); };
      CHECK(cat(DSPP_MEM_PARAMETERS) == (owns_params ? mem.param_bytes : 0));
      CHECK(cat(DSPP_MEM_GRADIENTS) == (owns_grads ? mem.grad_bytes : 0));
      CHECK(cat(DSPP_MEM_OPTIMIZER_STATE) ==
            (offloaded ? 0 : mem.optimizer_state_bytes + mem.master_bytes));
      if (owns_grads && !offloaded) CHECK(cat(DSPP_MEM_COMM_BUFFERS) == mem.buffer_bytes - 8);
      CHECK(cat(DSPP_MEM_ACTIVATIONS) == 0);
    }

    // The float64 reference.
    std::vector<double> master(p0.begin(), p0.end()), m(kFlat, 0.0), v(kFlat, 0.0);
    const double lrs[] = {0.01, 0.02, 0.015, 0.005};
    const double scales[] = {1.0, 0.5, 0.25, 0.8};
    for (int64_t t = 1; t <= 4; ++t) {
      INFO("step " << t);
      std::vector<float> g(kFlat, 0.f);
      for (int64_t i = 0; i < kFrozenEnd; ++i) g[i] = u2(rng);
      backward(g);
      double sq = -1.0;
      int32_t overflow = -1;
      check(stage->reduce_gradients(&sq, &overflow), "reduce_gradients");
      std::vector<float> rg(kFlat);
      for (int64_t i = 0; i < kFlat; ++i) rg[i] = round_to(dtype, g[i]);
      if (!owns_grads) {
        expect_bits("the local gradient rounded to the working dtype", grads.get(), rg, 0, kFlat);
      }
      double sq_ref = 0.0;
      for (int64_t i = 0; i < kTrainedEnd; ++i) sq_ref += static_cast<double>(rg[i]) * rg[i];
      CHECK(overflow == 0);
      CHECK(std::fabs(sq - sq_ref) <= 1e-12 * sq_ref);

      dspp::StepArgs a{};
      a.lrs = &lrs[t - 1];
      a.step = t;
      const float c = static_cast<float>(scales[t - 1]);
      check(stage->step(&a, scales[t - 1]), "step");
      std::vector<float> sg = rg;  // trained ranges scaled in f32, the rest as it was
      for (int64_t i = 0; i < kTrainedEnd; ++i) sg[i] = rg[i] * c;
      if (!owns_grads) {
        expect_bits("the gradient scaled by grad_scale", grads.get(), sg, 0, kFlat);
      }
      check(stage->zero_grad(), "zero_grad");
      if (!owns_grads) {
        expect_bits("the gradient after zero_grad", grads.get(), std::vector<float>(kFlat, 0.f), 0,
                    kFlat);
      }

      const double lr = lrs[t - 1], b1 = 0.9, b2 = 0.999, eps = 1e-8;
      const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
      const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
      for (int64_t i = 0; i < kTrainedEnd; ++i) {
        const double gi = sg[i];
        const double wd = i < kDecayEnd ? 0.1 : 0.0;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        master[i] = master[i] * (1 - lr * wd) - lr / bc1 * m[i] / (std::sqrt(v[i] / bc2) + eps);
      }

      const std::vector<float> got = download(dev, shard.values);
      expect_close("master", got, master, 0, kTrainedEnd, 1e-6, 2e-6);
      expect_bits("master of the untrained parameter and the padding", got, p0, kTrainedEnd, kFlat);
      const std::vector<float> gm = download(dev, mv), gv = download(dev, vv);
      expect_close("exp_avg", gm, m, 0, kTrainedEnd, 1e-6, 1e-6);
      expect_close("exp_avg_sq", gv, v, 0, kTrainedEnd, 1e-9, 1e-6);
      expect_bits("moments outside the trained segments", gm, std::vector<float>(kFlat, 0.f),
                  kTrainedEnd, kFlat);
      expect_bits("moments outside the trained segments", gv, std::vector<float>(kFlat, 0.f),
                  kTrainedEnd, kFlat);
      // The working copy: the master rounded (exactly), so within half an ulp of the reference.
      const std::vector<float> w = working();
      std::vector<float> want(kFlat);
      for (int64_t i = 0; i < kFlat; ++i) want[i] = round_to(dtype, got[i]);
      expect_bits("working copy = the master rounded", w, want, 0, visible);
      const double half_ulp = dtype == DSPP_BF16 ? 0x1p-8 : dtype == DSPP_F16 ? 0x1p-11 : 0.0;
      expect_close("working copy", w, master, 0, kTrainedEnd, 1e-6 + 6e-8, 2e-6 + half_ulp);
      if (t == 4) out = Outcome{got, w, gm, gv};
    }

    if (owns_grads) {
      // Gradient accumulation: two micro-batches' backwards add up in the partition's
      // accumulator (each rounded to the working dtype first, the sum in f32), until zero_grad.
      std::vector<float> ga(kFlat, 0.f), gb(kFlat, 0.f);
      for (int64_t i = 0; i < kFrozenEnd; ++i) ga[i] = u2(rng);
      for (int64_t i = 0; i < kFrozenEnd; ++i) gb[i] = u2(rng);
      backward(ga);
      backward(gb);
      double sq = -1.0;
      int32_t overflow = -1;
      check(stage->reduce_gradients(&sq, &overflow), "reduce_gradients");
      double sq_ref = 0.0;
      for (int64_t i = 0; i < kTrainedEnd; ++i) {
        const float sf = round_to(dtype, ga[i]) + round_to(dtype, gb[i]);  // the f32 sum
        sq_ref += static_cast<double>(sf) * sf;
      }
      CHECK(overflow == 0);
      CHECK(std::fabs(sq - sq_ref) <= 1e-12 * sq_ref);
      check(stage->zero_grad(), "zero_grad");
      std::vector<float> g(kFlat, 0.f);
      for (int64_t i = 0; i < kFrozenEnd; ++i) g[i] = u2(rng);
      backward(g);
      check(stage->reduce_gradients(&sq, &overflow), "reduce_gradients");
      sq_ref = 0.0;
      for (int64_t i = 0; i < kTrainedEnd; ++i) {
        const double r = round_to(dtype, g[i]);
        sq_ref += r * r;
      }
      CHECK(std::fabs(sq - sq_ref) <= 1e-12 * sq_ref);  // zero_grad emptied the accumulator
      check(stage->zero_grad(), "zero_grad");
    }

    // Overflow: a non-finite gradient in a trained segment (on the local gradient, before
    // anything is reduced) is reported; one in the untrained parameter is not counted (as on the
    // CPU, the norm covers the trained segments only). fp16 also overflows past 65504.
    struct Case {
      int64_t at;
      float value;
      int32_t overflow;
    };
    const float inf = std::numeric_limits<float>::infinity();
    const Case cases[] = {{40, inf, 1},
                          {3, -inf, 1},
                          {20, std::numeric_limits<float>::quiet_NaN(), 1},
                          {50, inf, 0},
                          {10, 70000.f, dtype == DSPP_F16 ? 1 : 0}};
    const std::vector<float> before = download(dev, shard.values);
    for (const Case& k : cases) {
      INFO("gradient " << k.value << " at " << k.at);
      std::vector<float> g(kFlat, 0.f);
      for (int64_t i = 0; i < kFrozenEnd; ++i) g[i] = u2(rng);
      g[k.at] = k.value;
      backward(g);
      double sq = -1.0;
      int32_t overflow = -1;
      check(stage->reduce_gradients(&sq, &overflow), "reduce_gradients");
      CHECK(overflow == k.overflow);
      CHECK(std::isfinite(sq) == (k.overflow == 0));
      if (k.overflow == 0) {
        double sq_ref = 0.0;
        for (int64_t i = 0; i < kTrainedEnd; ++i) {
          const double r = round_to(dtype, g[i]);
          sq_ref += r * r;
        }
        CHECK(std::fabs(sq - sq_ref) <= 1e-12 * sq_ref);
      }
      check(stage->zero_grad(), "zero_grad");  // the engine skips the step and zeroes
      if (!owns_grads) {
        expect_bits("the gradient after zero_grad", grads.get(), std::vector<float>(kFlat, 0.f), 0,
                    kFlat);
      }
    }
    expect_bits("master after skipped steps", download(dev, shard.values), before, 0, kFlat);

    // write_back: GatheredParameters changed mlp.weight's working copy; the master takes it.
    // (Stage 3: into the gathered value, while gathered.)
    {
      std::vector<float> w = working();
      for (int64_t i = 0; i < kDecayEnd; ++i) w[i] = round_to(dtype, u1(rng));
      const int32_t which = 0;
      std::vector<float> want = before;
      for (int64_t i = 0; i < kDecayEnd; ++i) want[i] = w[i];
      if (owns_params) {
        const std::string e = error_of([&] { check(stage->write_back(&which, 1), "write_back"); });
        CHECK(contains(e, "zero/stage3: write_back of 'mlp.weight', which is not gathered"));
        gathered([&](const std::vector<dspp_tensor_view>& views) {
          upload(dev, views[0], std::vector<float>(w.begin(), w.begin() + kDecayEnd));
          check(stage->write_back(&which, 1), "write_back");
          expect_bits("master after write_back", download(dev, shard.values), want, 0, kFlat);
        });
      } else {
        params.put(w);
        check(stage->write_back(&which, 1), "write_back");
        expect_bits("master after write_back", download(dev, shard.values), want, 0, kFlat);
      }
      expect_bits("working copy after write_back", working(), w, 0, visible);
    }

    // after_load: a checkpoint wrote new fp32 values into the shard; the working copy is their
    // rounding.
    {
      std::vector<float> loaded(kFlat);
      for (int64_t i = 0; i < kFlat; ++i) loaded[i] = u1(rng);
      upload(dev, shard.values, loaded);
      check(stage->after_load(), "after_load");
      expect_bits("master after after_load", download(dev, shard.values), loaded, 0, kFlat);
      std::vector<float> want(kFlat);
      for (int64_t i = 0; i < kFlat; ++i) want[i] = round_to(dtype, loaded[i]);
      expect_bits("working copy after after_load", working(), want, 0, visible);
    }

    // The optimizer takes views of its own device only (host memory under offload).
    if (!offloaded) {
      std::vector<float> host_buf(kFlat, 0.f);
      dspp::StepArgs a{};
      a.params = shard.values;
      a.grads = grads.view();
      a.grads.data = host_buf.data();
      a.grads.device = dspp_device{DSPP_DEVICE_CPU, 0};
      a.step = 1;
      const std::string e = error_of([&] { check(opt->step(&a), "adamw step"); });
      CHECK(contains(e, "adamw: grads must be memory of cuda:0"));
    } else {
      dspp::StepArgs a{};
      a.params = shard.values;
      a.grads = grads.view();
      a.step = 1;
      const std::string e = error_of([&] { check(opt->step(&a), "adamw step"); });
      CHECK(contains(e, "adamw: grads must be host memory"));
    }
  }
  host_with_device(nullptr);
  return out;
}

// AdamW through ZeRO stage 0 (the first GPU path's scenario).
inline void stage0_adamw(dspp::Device& dev, int32_t dtype) {
  (void)zero_adamw(dev, dtype, 0);
}

// ZeRO-Offload against the same stage without it: the CPU optimizer and the device's adam_step
// compute the same fp32 formula, so master and moments agree to 1e-6 (and each run meets the
// float64 reference's bounds by itself).
inline void offload_agrees(dspp::Device& dev, int32_t dtype, int stage_no,
                           const std::string& offload) {
  const Outcome base = zero_adamw(dev, dtype, stage_no);
  const Outcome off = zero_adamw(dev, dtype, stage_no, offload);
  INFO("stage " << stage_no << ", " << dtype_name(dtype) << ": offload_optimizer " << offload
                << " vs none");
  REQUIRE(off.master.size() == static_cast<size_t>(kFlat));
  auto as_double = [](const std::vector<float>& v) {
    return std::vector<double>(v.begin(), v.end());
  };
  expect_close("master", off.master, as_double(base.master), 0, kFlat, 1e-6, 0.0);
  expect_close("exp_avg", off.exp_avg, as_double(base.exp_avg), 0, kFlat, 1e-6, 0.0);
  expect_close("exp_avg_sq", off.exp_avg_sq, as_double(base.exp_avg_sq), 0, kFlat, 1e-6, 0.0);
  // The working copies are each their master rounded (checked in the runs): within 1e-6 plus an
  // ulp of the working dtype where the masters straddle a rounding boundary.
  const double ulp = dtype == DSPP_BF16 ? 0x1p-7 : dtype == DSPP_F16 ? 0x1p-10 : 0.0;
  expect_close("working copy", off.working, as_double(base.working), 0, kFlat, 1e-6, ulp);
}

// Stages 1-3 against stage 0 at world 1: the same arithmetic in the same order, so the same bits
// (master, working copy, moments after 4 steps), besides each run's own reference checks.
inline void stages_agree(dspp::Device& dev, int32_t dtype) {
  const Outcome s0 = zero_adamw(dev, dtype, 0);
  for (int n = 1; n <= 3; ++n) {
    INFO("stage " << n << " vs stage 0, " << dtype_name(dtype));
    const Outcome s = zero_adamw(dev, dtype, n);
    REQUIRE(s.master.size() == static_cast<size_t>(kFlat));
    expect_bits("master", s.master, s0.master, 0, kFlat);
    expect_bits("working copy", s.working, s0.working, 0, kFlat);
    expect_bits("exp_avg", s.exp_avg, s0.exp_avg, 0, kFlat);
    expect_bits("exp_avg_sq", s.exp_avg_sq, s0.exp_avg_sq, 0, kFlat);
  }
}

// One 4 x 4 matrix "w" in group 0, flagged for Muon: the segment of the refusal checks.
inline dspp::ParamSegment muon_matrix_segment() {
  dspp::ParamSegment seg{};
  seg.name = "w";
  seg.group = 0;
  seg.ndim = 2;
  seg.shape[0] = 4;
  seg.shape[1] = 4;
  seg.numel = 16;
  seg.flags = DSPP_PARAM_USE_MUON;
  return seg;
}

// What refuses the GPU, with `dev` as the host's device: AdamW's AMSGrad (before allocating
// anything). (Every built-in optimizer has a device step; their comparisons with the CPU are
// optimizer_device_scenario.h's.)
inline void device_refusals(dspp::Device& dev) {
  const dspp_host_api* host = host_with_device(&dev);
  const dspp_device cuda{DSPP_DEVICE_CUDA, 0};
  const dspp::ParamSegment seg = muon_matrix_segment();
  const dspp::ParamGroupSetup group{0.01, 0.0, nullptr};
  const dspp::OptimizerSetup os{&seg, 1, &group, 1, 16, cuda};

  {
    const dspp::Config cfg = test_config(R"({"torch_adam": true, "amsgrad": true})");
    const PluginLib lib(DSPP_OPTIMIZER_ADAM_PATH);
    auto opt =
        lib.create<dspp::Optimizer>("optimizer", "adamw", host, cfg.view("optimizer.params"));
    const std::string e = error_of([&] { check(opt->init(&os), "init"); });
    CHECK(contains(e, "adamw: optimizer.params.amsgrad is not supported on the GPU"));
    CHECK(opt->num_states() == 0);
  }

  host_with_device(nullptr);
}

}  // namespace zdev
