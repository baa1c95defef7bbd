// The optimizers' GPU path against their CPU path, shared by test_gpu_optimizers.cpp (device/cuda
// on a real GPU) and test_zero_device_fake.cpp (a fake device in host memory, so the plumbing runs
// on every machine). The same plugin library makes two optimizers from the same config: one with
// its buffers in host memory (OptimizerSetup::device CPU), one with them in the device's memory
// (CUDA, the host's compute device the test's Device; see zero_device_scenario.h). Both get the
// same segments, groups, initial values and gradients for a few steps, with a different lr every
// step; after each step the parameters and every state are compared.
//
// Layout (flat, gaps of 3 elements between segments and 5 after the last, holding 7.0 in the
// parameters and NaN in the gradients, so a kernel that strays into them shows): a wide [24, 40]
// and a tall [72, 40] matrix (group 0, decayed), a 1-d bias [37] (group 0, DSPP_PARAM_NO_DECAY), a
// square [48, 48] matrix (group 1, no weight decay), a 1-d [50] (group 1) and a 3-d batch
// [2, 12, 20] (group 0). The matrices carry DSPP_PARAM_USE_MUON (only Muon reads it: it takes
// them, and AdamW the 1-d ones). Group 0 has weight decay 0.1, group 1 none.
//
// What must match:
//  - elementwise steps (Adam/AdamW, SGD, Lion, Adagrad, Muon's momentum and AdamW half, LAMB's
//    moments): bit for bit, every element of the flat buffers and of every state (NaN compares
//    as NaN). The device kernels evaluate the CPU kernels' fp32 expressions in their order, with
//    the constants from the same code.
//  - LAMB's parameters: within 2 t ulp after step t. Its trust ratio divides two norms that the
//    CPU sums with a SIMD reduction and the device with its fixed tree, so the ratio may differ in
//    its last double bits and the fp32 scale, rarely, by an ulp; p then moves by about an ulp
//    more or less. (The moments do not depend on p: bit for bit.)
//  - Muon's matrices: the Newton-Schulz GEMMs sum in another order (cuBLASLt, or the fake's
//    plain loops, against OpenBLAS), so the orthogonalised update O differs by fp32 rounding
//    that the iteration amplifies a little. The momentum, and so the input of NS, stays bit-equal
//    (it does not depend on p), and p = p decay - lr scale O feeds nothing back into NS, so the
//    parameters' difference only accumulates the steps' own: after step t, per parameter,
//    max |p_dev - p_cpu| <= sum over steps s <= t of (kMuonRelTol move_s + 2 ulp(max |p_s|)),
//    with move_s the step's largest change of an element (on the CPU) and the ulp term for the
//    final rounding of p, which may go either way when the update differs in its last bits.
//    kMuonRelTol = 1e-4 is the bound on the update's relative difference; measured here: see
//    DSPP_KERNEL_TEST_VERBOSE=1's "worst" lines (the fake reaches ~1e-6, the GPU is printed).
//    A slip (a GEMM transposed the wrong way, a lost copy or restart, the wrong eps) moves the
//    update by O(1) of itself.
//  - a non-finite gradient in a Muon matrix (step 3 of the Muon cases, +inf in the tall one):
//    the CPU rule (momentum kept, p = p decay - lr g) is elementwise, so bit-equal.
#pragma once

#include <dspp/config.h>
#include <dspp/kinds/device.h>
#include <dspp/kinds/optimizer.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"
#include "zero_device_scenario.h"

namespace odev {

using zdev::bits_of;
using zdev::check;
using zdev::DeviceTensor;
using zdev::PluginLib;

constexpr double kMuonRelTol = 1e-4;

struct SegDef {
  const char* name;
  int32_t ndim;
  int64_t d0, d1, d2;
  int32_t group;
  uint32_t flags;
};

// clang-format off
const SegDef kSegs[] = {
    {"h.0.wide.weight",   2, 24, 40, 0,  0, DSPP_PARAM_USE_MUON},
    {"h.0.tall.weight",   2, 72, 40, 0,  0, DSPP_PARAM_USE_MUON},
    {"h.0.bias",          1, 37, 0,  0,  0, DSPP_PARAM_NO_DECAY},
    {"h.1.square.weight", 2, 48, 48, 0,  1, DSPP_PARAM_USE_MUON},
    {"h.1.ln.weight",     1, 50, 0,  0,  1, 0u},
    {"experts.weight",    3, 2,  12, 20, 0, DSPP_PARAM_USE_MUON},
};
// clang-format on
constexpr int kTall = 1;  // the segment that gets an infinite gradient element
constexpr int64_t kGap = 3, kTail = 5;
constexpr float kGapValue = 7.0f;

struct Layout {
  std::vector<dspp::ParamSegment> segs;
  int64_t flat = 0;
  std::vector<bool> in_segment;  // per flat element
};

inline Layout layout() {
  Layout l;
  int64_t at = 0;
  for (const SegDef& d : kSegs) {
    dspp::ParamSegment s{};
    s.name = d.name;
    s.group = d.group;
    s.flags = d.flags;
    s.ndim = d.ndim;
    s.shape[0] = d.d0;
    s.shape[1] = d.d1;
    s.shape[2] = d.d2;
    s.numel = d.d0 * (d.ndim >= 2 ? d.d1 : 1) * (d.ndim >= 3 ? d.d2 : 1);
    s.offset_in_param = 0;
    s.offset_in_flat = at;
    at += s.numel + kGap;
    l.segs.push_back(s);
  }
  l.flat = at - kGap + kTail;
  l.in_segment.assign(l.flat, false);
  for (const dspp::ParamSegment& s : l.segs)
    for (int64_t i = 0; i < s.numel; ++i) l.in_segment[s.offset_in_flat + i] = true;
  return l;
}

// One comparison: an optimizer plugin and its options.
struct OptCase {
  const char* label;
  const char* path;  // the plugin library
  const char* name;  // the plugin
  const char* type;  // optimizer.type of the config
  std::string params;
  bool muon = false;  // Muon's bound on the USE_MUON segments, and the non-finite step
  bool lamb = false;  // LAMB's bound on the parameters
  int64_t steps = 4;
  std::vector<double> betas1;  // StepArgs::betas1 from step 2 on (per group), when not empty
};

inline dspp::Config case_config(const OptCase& c) {
  dspp::LoadOptions opts;
  opts.on_warning = [](const dspp::ConfigMessage&) {};
  return dspp::Config::from_string(
      std::string(R"({"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": ")") + c.type +
          R"(", "params": )" + c.params + "}}",
      opts);
}

inline bool same_bits(float a, float b) {
  return bits_of(a) == bits_of(b) || (std::isnan(a) && std::isnan(b));
}

// Every element bit for bit (NaN as NaN); the first difference is reported.
inline void expect_same(const std::string& what, const std::vector<float>& got,
                        const std::vector<float>& want, const std::vector<bool>& skip = {}) {
  REQUIRE(got.size() == want.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!skip.empty() && skip[i]) continue;
    if (!same_bits(got[i], want[i]) && bad++ == 0) first = static_cast<int64_t>(i);
  }
  std::ostringstream os;
  os.precision(9);
  os << what << ": " << bad << " elements differ";
  if (first >= 0)
    os << "; first at " << first << ": got " << got[first] << " (0x" << std::hex
       << bits_of(got[first]) << "), cpu " << want[first] << " (0x" << bits_of(want[first]) << ")";
  INFO(os.str());
  CHECK(bad == 0);
}

inline double ulp_of(double x) {
  const float f = static_cast<float>(std::fabs(x));
  return static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity())) - f;
}

inline bool verbose() {
  const char* e = std::getenv("DSPP_KERNEL_TEST_VERBOSE");
  return e && *e && std::strcmp(e, "0") != 0;
}

// The state views of an optimizer, by index (names checked equal between the two).
inline std::vector<float> state_values(dspp::Device* dev, dspp::Optimizer& opt, int32_t i,
                                       std::string* name) {
  const char* nm = nullptr;
  dspp_tensor_view v{};
  check(opt.state(i, &nm, &v), "state");
  *name = nm ? nm : "";
  if (v.device.type == DSPP_DEVICE_CUDA) return zdev::download(*dev, v);
  const float* f = static_cast<const float*>(v.data);
  return std::vector<float>(f, f + zdev::numel(v));
}

// Steps the CPU and the device optimizer of case `c` side by side and compares them.
inline void compare_with_cpu(dspp::Device& dev, const OptCase& c) {
  INFO(c.label);
  const Layout lay = layout();
  const int64_t flat = lay.flat;
  const dspp::Config cfg = case_config(c);
  const PluginLib lib(c.path);
  const dspp_host_api* dev_host = zdev::host_with_device(&dev);
  {
    auto cpu = lib.create<dspp::Optimizer>("optimizer", c.name, dspp::host_api(),
                                           cfg.view("optimizer.params"));
    auto gpu =
        lib.create<dspp::Optimizer>("optimizer", c.name, dev_host, cfg.view("optimizer.params"));
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const dspp::ParamGroupSetup groups[2] = {{nan, 0.1, nullptr}, {nan, 0.0, nullptr}};
    const dspp::OptimizerSetup cpu_setup{lay.segs.data(),
                                         static_cast<int32_t>(lay.segs.size()),
                                         groups,
                                         2,
                                         flat,
                                         dspp_device{DSPP_DEVICE_CPU, 0}};
    dspp::OptimizerSetup gpu_setup = cpu_setup;
    gpu_setup.device = dspp_device{DSPP_DEVICE_CUDA, 0};
    check(cpu->init(&cpu_setup), std::string(c.name) + " init on the cpu");
    check(gpu->init(&gpu_setup), std::string(c.name) + " init on the device");
    REQUIRE(gpu->num_states() == cpu->num_states());

    std::mt19937_64 rng(20261201);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> p(flat, kGapValue);
    for (int64_t i = 0; i < flat; ++i)
      if (lay.in_segment[i]) p[i] = 0.02f * normal(rng);
    DeviceTensor dp(dev, DSPP_F32, flat), dg(dev, DSPP_F32, flat);
    dp.put(p);
    std::vector<float> cpu_p = p;

    // Muon's bound, per segment: the accumulated budget.
    std::vector<double> budget(lay.segs.size(), 0.0), worst_ratio(lay.segs.size(), 0.0);
    for (int64_t t = 1; t <= c.steps; ++t) {
      INFO("step " << t);
      std::vector<float> g(flat, std::numeric_limits<float>::quiet_NaN());
      for (int64_t i = 0; i < flat; ++i)
        if (lay.in_segment[i]) g[i] = 0.3f * normal(rng);
      if (c.muon && t == 3)
        g[lay.segs[kTall].offset_in_flat + 17] = std::numeric_limits<float>::infinity();
      dg.put(g);
      const double lrs[2] = {0.02 * (1.0 + 0.25 * static_cast<double>(t)),
                             0.01 / static_cast<double>(t)};
      const bool with_betas1 = !c.betas1.empty() && t >= 2;

      const std::vector<float> before = cpu_p;
      dspp::StepArgs a{};
      a.params = dp.view();
      a.params.device = dspp_device{DSPP_DEVICE_CPU, 0};
      a.params.data = cpu_p.data();
      a.grads = a.params;
      a.grads.data = g.data();
      a.lrs = lrs;
      a.betas1 = with_betas1 ? c.betas1.data() : nullptr;
      a.step = t;
      check(cpu->step(&a), std::string(c.name) + " step on the cpu");
      a.params = dp.view();
      a.grads = dg.view();
      check(gpu->step(&a), std::string(c.name) + " step on the device");

      const std::vector<float> got = dp.get();
      // Outside the segments: untouched.
      expect_same("the gaps", got, std::vector<float>(flat, kGapValue),
                  std::vector<bool>(lay.in_segment.begin(), lay.in_segment.end()));
      if (c.lamb) {
        // The trust ratios come from norms summed in another order: p within 2 t ulp.
        int64_t bad = 0, differ = 0, worst = 0;
        for (int64_t i = 0; i < flat; ++i) {
          if (same_bits(got[i], cpu_p[i])) continue;
          ++differ;
          const double e = std::fabs(double(got[i]) - cpu_p[i]);
          if (!(e <= 2.0 * static_cast<double>(t) * ulp_of(cpu_p[i]))) {
            if (bad++ == 0) worst = i;
          }
        }
        std::ostringstream os;
        os.precision(9);
        os << c.label << " step " << t << ": " << differ << " of " << flat
           << " parameters differ from the cpu's, " << bad << " by more than " << 2 * t
           << " ulp (first: got " << got[worst] << ", cpu " << cpu_p[worst] << ")";
        if (verbose()) std::printf("%s\n", os.str().c_str());
        INFO(os.str());
        CHECK(bad == 0);
      } else if (!c.muon) {
        expect_same("params", got, cpu_p);
      } else {
        std::vector<bool> muon_elem(flat, false);
        for (size_t s = 0; s < lay.segs.size(); ++s) {
          const dspp::ParamSegment& seg = lay.segs[s];
          if (!(seg.flags & DSPP_PARAM_USE_MUON)) continue;
          double move = 0.0, pmax = 0.0, diff = 0.0;
          for (int64_t i = seg.offset_in_flat; i < seg.offset_in_flat + seg.numel; ++i) {
            muon_elem[i] = true;
            const double d = static_cast<double>(cpu_p[i]) - before[i];
            if (std::isfinite(d)) move = std::max(move, std::fabs(d));
            if (std::isfinite(cpu_p[i])) pmax = std::max(pmax, std::fabs(double(cpu_p[i])));
            const double e = got[i] == cpu_p[i] ? 0.0 : std::fabs(double(got[i]) - cpu_p[i]);
            diff = std::max(diff, std::isnan(e) ? std::numeric_limits<double>::infinity() : e);
          }
          budget[s] += kMuonRelTol * move + 2 * ulp_of(pmax);
          const double ratio = diff / budget[s];
          worst_ratio[s] = std::max(worst_ratio[s], ratio);
          std::ostringstream os;
          os.precision(3);
          os << c.label << ": " << seg.name << " step " << t << ": max |p_dev - p_cpu| " << diff
             << " (" << diff / std::max(move, 1e-300) << " of the step's largest move " << move
             << "), bound " << budget[s] << " (ratio " << ratio << ")";
          if (verbose()) std::printf("%s\n", os.str().c_str());
          INFO(os.str());
          CHECK(ratio <= 1.0);
        }
        // Everything else (the AdamW half, the gaps) bit for bit.
        expect_same("params outside the Muon matrices", got, cpu_p, muon_elem);
      }
      for (int32_t i = 0; i < cpu->num_states(); ++i) {
        std::string cname, gname;
        const std::vector<float> cs = state_values(&dev, *cpu, i, &cname);
        const std::vector<float> gs = state_values(&dev, *gpu, i, &gname);
        CHECK(gname == cname);
        expect_same("state " + cname, gs, cs);
      }
    }
  }
  zdev::host_with_device(nullptr);
}

// ---- the cases --------------------------------------------------------------------------------

// Muon with its AdamW half: "gram" (the default) and "standard" Newton-Schulz, decoupled and L2
// AdamW. Group 0 holds both halves (its AdamW lr follows the scheduler's ratio).
inline std::vector<OptCase> muon_cases() {
  std::vector<OptCase> out;
  OptCase c;
  c.path = DSPP_OPTIMIZER_MUON_PATH;
  c.name = "muon";
  c.type = "Muon";
  c.muon = true;
  c.label = "muon, ns gram, AdamW half decoupled";
  c.params = R"({"lr": 0.02, "momentum": 0.9, "ns_method": "gram", "adam_lr": 0.003,
                 "betas": [0.9, 0.95], "eps": 1e-10})";
  out.push_back(c);
  c.label = "muon, ns standard, AdamW half L2";
  c.params = R"({"lr": 0.02, "momentum": 0.95, "ns_method": "standard", "adam_lr": 0.003,
                 "adam_w_mode": false})";
  out.push_back(c);
  return out;
}

// SGD (torch.optim.SGD): Nesterov, dampened momentum, plain with maximize, and momentum turned on
// by the scheduler at step 2 (the buffer starts then, as d).
inline std::vector<OptCase> sgd_cases() {
  std::vector<OptCase> out;
  OptCase c;
  c.path = DSPP_OPTIMIZER_SGD_PATH;
  c.name = "sgd";
  c.type = "SGD";
  c.label = "sgd, nesterov";
  c.params = R"({"lr": 0.01, "momentum": 0.9, "nesterov": true})";
  out.push_back(c);
  c.label = "sgd, momentum with dampening";
  c.params = R"({"lr": 0.01, "momentum": 0.9, "dampening": 0.1})";
  out.push_back(c);
  c.label = "sgd, plain, maximize";
  c.params = R"({"lr": 0.01, "maximize": true})";
  out.push_back(c);
  c.label = "sgd, momentum from the scheduler at step 2";
  c.params = R"({"lr": 0.01})";
  c.betas1 = {0.9, 0.8};
  out.push_back(c);
  return out;
}

// Lion, with its configured betas and with beta1 from the scheduler.
inline std::vector<OptCase> lion_cases() {
  std::vector<OptCase> out;
  OptCase c;
  c.path = DSPP_OPTIMIZER_LION_PATH;
  c.name = "lion";
  c.type = "Lion";
  c.label = "lion";
  c.params = R"({"lr": 0.001, "betas": [0.9, 0.99]})";
  out.push_back(c);
  c.label = "lion, beta1 from the scheduler";
  c.betas1 = {0.85, 0.95};
  out.push_back(c);
  return out;
}

// Adagrad: lr_decay and a starting accumulator; maximize.
inline std::vector<OptCase> adagrad_cases() {
  std::vector<OptCase> out;
  OptCase c;
  c.path = DSPP_OPTIMIZER_ADAGRAD_PATH;
  c.name = "adagrad";
  c.type = "Adagrad";
  c.label = "adagrad, lr_decay, initial_accumulator_value";
  c.params = R"({"lr": 0.01, "lr_decay": 0.01, "initial_accumulator_value": 0.1})";
  out.push_back(c);
  c.label = "adagrad, maximize";
  c.params = R"({"lr": 0.01, "eps": 1e-8, "maximize": true})";
  out.push_back(c);
  return out;
}

// LAMB: the defaults (bias correction, trust ratio clamped to [0.01, 10]) and eps inside the
// square root without bias correction.
inline std::vector<OptCase> lamb_cases() {
  std::vector<OptCase> out;
  OptCase c;
  c.path = DSPP_OPTIMIZER_LAMB_PATH;
  c.name = "lamb";
  c.type = "Lamb";
  c.lamb = true;
  c.label = "lamb";
  c.params = R"({"lr": 0.001})";
  out.push_back(c);
  c.label = "lamb, eps inside sqrt, no bias correction, beta1 from the scheduler";
  c.params = R"({"lr": 0.001, "eps_inside_sqrt": true, "bias_correction": false, "eps": 1e-6})";
  c.betas1 = {0.8, 0.85};
  out.push_back(c);
  return out;
}

// Adam and AdamW (version 2's adam_step) in the same scenario: L2 and decoupled.
inline std::vector<OptCase> adam_cases() {
  std::vector<OptCase> out;
  OptCase c;
  c.path = DSPP_OPTIMIZER_ADAM_PATH;
  c.name = "adamw";
  c.type = "AdamW";
  c.label = "adamw";
  c.params = R"({"lr": 0.001, "betas": [0.9, 0.95]})";
  out.push_back(c);
  c.name = "adam";
  c.type = "Adam";
  c.label = "adam, L2 (adam_w_mode false)";
  c.params = R"({"lr": 0.001, "adam_w_mode": false})";
  out.push_back(c);
  return out;
}

}  // namespace odev
