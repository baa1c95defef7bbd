// The CPU optimizer plugins (adam, adamw, sgd, lion, lamb, adagrad) against reference values.
//
// tests/data/optimizers.json comes from scripts/reference/optimizers.py: for each case (a config
// type, its optimizer.params, two parameter groups with their own lr / weight_decay / overrides)
// the parameters of four tensors of odd sizes after steps 1, 10, 50 and 120, computed in float64 by
// torch.optim where torch has the optimizer and otherwise by the float64 formula of DeepSpeed's
// kernel. The gradients come from an integer hash that is exact in float32, so this test feeds the
// plugins the very same gradients in fp32.
//
// Tolerance: err = max |x - ref| / (|ref| + 0.1) <= 2e-5 (relative, with an absolute floor at a
// tenth of the parameters' scale: they start in [-1, 1)). Each step rounds ~10 fp32 operations per
// element (unit roundoff 6e-8) and the error is carried through 120 steps; the script measures what
// torch.optim in fp32, and DeepSpeed's own CPU kernels, reach against the same float64 reference:
// up to 3e-6 and 1e-5. 2e-5 leaves a margin over both and still catches any slip in the math (a
// wrong bias correction, an eps in the wrong place or a lost weight decay moves the parameters by
// 1e-3 or more).
#include <dspp/config.h>
#include <dspp/error.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/plugins.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "optimizer_reference.h"
#include "test_util.h"

namespace {

using dspp::Optimizer;

constexpr double kTolerance = 2e-5;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- plugins and configs -----------------------------------------------------------------------

const dspp::PluginRegistry& registry() {
  static const std::unique_ptr<dspp::PluginRegistry> reg = [] {
    auto r = std::make_unique<dspp::PluginRegistry>();
    for (const char* path :
         {DSPP_OPTIMIZER_ADAM_PATH, DSPP_OPTIMIZER_SGD_PATH, DSPP_OPTIMIZER_LION_PATH,
          DSPP_OPTIMIZER_LAMB_PATH, DSPP_OPTIMIZER_ADAGRAD_PATH})
      r->load_library(path);
    return r;
  }();
  return *reg;
}

// A config whose optimizer section is validated against the plugins' published option schemas.
dspp::Config load_config(const std::string& type, const std::string& params_json,
                         bool validate = true) {
  dspp::LoadOptions opts;
  if (validate) {
    opts.plugin_options = [](std::string_view kind,
                             std::string_view name) -> const std::vector<dspp::KeySpec>* {
      const dspp::PluginInfo* info = registry().find(kind, name);
      return info ? &info->options : nullptr;
    };
  }
  opts.on_warning = [](const dspp::ConfigMessage&) {};
  const std::string text = R"({"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": ")" +
                           type + R"(", "params": )" + params_json + "}}";
  return dspp::Config::from_string(text, opts);
}

// An optimizer and the config its view points into (the view must outlive create()).
struct Made {
  dspp::Config config;
  std::shared_ptr<Optimizer> opt;
};

Made make(const std::string& type, const std::string& params_json, bool validate = true) {
  Made m{load_config(type, params_json, validate), nullptr};
  m.opt = registry().create<Optimizer>("optimizer", type, m.config.view("optimizer.params"));
  return m;
}

// ---- the reference data ------------------------------------------------------------------------

const rapidjson::Document& data() {
  static const rapidjson::Document doc = optimizer_reference::read_data("optimizers.json");
  return doc;
}

using optimizer_reference::grad_value;
using optimizer_reference::initial_value;
using optimizer_reference::to_json;

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  int32_t group;
  int64_t offset, numel;
  float grad_scale;
};

std::vector<Tensor> tensors() {
  std::vector<Tensor> out;
  for (const auto& t : data()["tensors"].GetArray()) {
    Tensor x{t["name"].GetString(),  {}, t["group"].GetInt(),
             t["offset"].GetInt64(), 1,  static_cast<float>(t["grad_scale"].GetDouble())};
    for (const auto& d : t["shape"].GetArray()) {
      x.shape.push_back(d.GetInt64());
      x.numel *= d.GetInt64();
    }
    out.push_back(x);
  }
  return out;
}

dspp::ParamSegment segment_of(const Tensor& t) {
  dspp::ParamSegment s{};
  s.name = t.name.c_str();
  s.group = t.group;
  s.ndim = static_cast<int32_t>(t.shape.size());
  for (size_t d = 0; d < t.shape.size(); ++d) s.shape[d] = t.shape[d];
  s.offset_in_param = 0;
  s.offset_in_flat = t.offset;
  s.numel = t.numel;
  return s;
}

dspp_tensor_view flat_view(std::vector<float>& v) {
  dspp_tensor_view t{};
  t.data = v.data();
  t.dtype = DSPP_F32;
  t.ndim = 1;
  t.shape[0] = static_cast<int64_t>(v.size());
  t.device = dspp_device{DSPP_DEVICE_CPU, 0};
  return t;
}

void check_ok(dspp_status s, const std::string& what) {
  dspp::check_plugin(s, what);
}

}  // namespace

TEST_CASE("optimizer plugins match the torch / DeepSpeed reference over 120 steps", "[optim]") {
  const rapidjson::Document& d = data();
  REQUIRE(d.IsObject());
  const uint32_t seed = d["seed"].GetUint();
  const int64_t steps = d["steps"].GetInt64();
  const int64_t flat_numel = d["flat_numel"].GetInt64();
  const float pad = static_cast<float>(d["pad_value"].GetDouble());
  const std::vector<Tensor> ts = tensors();
  std::vector<dspp::ParamSegment> segs;
  for (const Tensor& t : ts) segs.push_back(segment_of(t));
  std::vector<bool> is_pad(flat_numel, true);
  for (const Tensor& t : ts)
    for (int64_t i = 0; i < t.numel; ++i) is_pad[t.offset + i] = false;

  // The initial values in the file are the hash's: check we build the same ones.
  std::vector<float> init(flat_numel, pad);
  for (size_t t = 0; t < ts.size(); ++t)
    for (int64_t i = 0; i < ts[t].numel; ++i)
      init[ts[t].offset + i] =
          initial_value(seed, static_cast<uint32_t>(t), static_cast<uint32_t>(i));
  for (int64_t j = 0; j < flat_numel; ++j)
    REQUIRE(static_cast<double>(init[j]) ==
            d["initial"][static_cast<rapidjson::SizeType>(j)].GetDouble());

  for (const auto& c : d["cases"].GetArray()) {
    const std::string name = c["name"].GetString();
    const std::string type = c["type"].GetString();
    SECTION(name) {
      Made m = make(type, to_json(c["params"]));
      Optimizer& opt = *m.opt;

      const auto& groups = c["groups"].GetArray();
      std::vector<std::string> options;
      for (const auto& g : groups)
        options.push_back(g["options"].IsNull() ? std::string() : to_json(g["options"]));
      std::vector<dspp::ParamGroupSetup> gsetup;
      for (rapidjson::SizeType g = 0; g < groups.Size(); ++g) {
        const auto& gj = groups[g];
        gsetup.push_back(dspp::ParamGroupSetup{
            gj["lr"].IsNull() ? kNaN : gj["lr"].GetDouble(),
            gj["weight_decay"].IsNull() ? kNaN : gj["weight_decay"].GetDouble(),
            options[g].empty() ? nullptr : options[g].c_str()});
      }
      dspp::OptimizerSetup setup{segs.data(),   static_cast<int32_t>(segs.size()),
                                 gsetup.data(), static_cast<int32_t>(gsetup.size()),
                                 flat_numel,    dspp_device{DSPP_DEVICE_CPU, 0}};
      check_ok(opt.init(&setup), "init " + name);

      std::vector<double> base_lrs;
      for (const auto& v : c["base_lrs"].GetArray()) base_lrs.push_back(v.GetDouble());
      const bool cycle = c["cycle_beta1"].GetBool();
      std::vector<float> params = init, grads(flat_numel, 1.0f);
      std::vector<double> lrs(base_lrs.size()), betas1(base_lrs.size());
      double worst = 0.0;
      for (int64_t s = 1; s <= steps; ++s) {
        for (size_t t = 0; t < ts.size(); ++t)
          for (int64_t i = 0; i < ts[t].numel; ++i)
            grads[ts[t].offset + i] = grad_value(seed, static_cast<uint32_t>(t),
                                                 static_cast<uint32_t>(i), s, ts[t].grad_scale);
        for (size_t g = 0; g < lrs.size(); ++g) {
          lrs[g] = base_lrs[g] * (0.5 + 0.125 * static_cast<double>(s % 5));
          betas1[g] = 0.85 + 0.01 * static_cast<double>(s % 7);
        }
        dspp::StepArgs args{flat_view(params), flat_view(grads), lrs.data(),
                            cycle ? betas1.data() : nullptr, s};
        check_ok(opt.step(&args), "step " + std::to_string(s) + " of " + name);

        const std::string key = std::to_string(s);
        if (!c["snapshots"].HasMember(key.c_str())) continue;
        const auto& ref = c["snapshots"][key.c_str()].GetArray();
        REQUIRE(ref.Size() == static_cast<rapidjson::SizeType>(flat_numel));
        for (int64_t j = 0; j < flat_numel; ++j) {
          const double r = ref[static_cast<rapidjson::SizeType>(j)].GetDouble();
          if (is_pad[j]) {
            INFO(name << " step " << s << ": padding element " << j << " changed");
            REQUIRE(params[j] == pad);
            continue;
          }
          const double err = std::fabs(params[j] - r) / (std::fabs(r) + 0.1);
          worst = std::max(worst, err);
          INFO(name << " step " << s << " element " << j << ": " << params[j] << " vs " << r);
          REQUIRE(err <= kTolerance);
        }
      }
      const double torch_err = c["torch_fp32_err"].GetDouble();
      std::printf("%-36s dspp fp32 err %.2e   torch fp32 err %.2e", name.c_str(), worst, torch_err);
      if (c.HasMember("deepspeed_cpu_fp32_err"))
        std::printf("   DeepSpeed CPU op err %.2e", c["deepspeed_cpu_fp32_err"].GetDouble());
      std::printf("\n");
    }
  }
}

TEST_CASE("optimizer states are named flat fp32 buffers", "[optim]") {
  struct Expect {
    const char* type;
    const char* params;
    std::vector<std::string> states;
    int32_t whole;
  };
  const std::vector<Expect> cases = {
      {"Adam", "{}", {"exp_avg", "exp_avg_sq"}, 0},
      {"AdamW",
       R"({"torch_adam": true, "amsgrad": true})",
       {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
       0},
      {"SGD", "{}", {}, 0},
      {"SGD", R"({"momentum": 0.9})", {"momentum_buffer"}, 0},
      {"Lion", "{}", {"exp_avg"}, 0},
      {"Lamb", "{}", {"exp_avg", "exp_avg_sq"}, 1},
      {"Adagrad", R"({"initial_accumulator_value": 0.5})", {"sum"}, 0},
  };
  for (const Expect& e : cases) {
    INFO(e.type << " " << e.params);
    Made m = make(e.type, e.params);
    CHECK(m.opt->needs_whole_params() == e.whole);
    const Tensor t{"w", {3, 5}, 0, 2, 15, 1.0f};
    const dspp::ParamSegment seg = segment_of(t);
    const dspp::ParamGroupSetup group{0.01, kNaN, nullptr};
    const dspp::OptimizerSetup setup{&seg, 1, &group, 1, 20, dspp_device{DSPP_DEVICE_CPU, 0}};
    check_ok(m.opt->init(&setup), "init");
    REQUIRE(m.opt->num_states() == static_cast<int32_t>(e.states.size()));
    std::vector<float> p(20, 0.5f), g(20, 0.25f);
    const double lr = 0.01;
    const dspp::StepArgs args{flat_view(p), flat_view(g), &lr, nullptr, 1};
    check_ok(m.opt->step(&args), "step");
    for (int32_t i = 0; i < m.opt->num_states(); ++i) {
      const char* name = nullptr;
      dspp_tensor_view v{};
      check_ok(m.opt->state(i, &name, &v), "state");
      CHECK(std::string(name) == e.states[i]);
      CHECK(v.dtype == DSPP_F32);
      CHECK(v.ndim == 1);
      CHECK(v.shape[0] == 20);
      const float* f = static_cast<const float*>(v.data);
      CHECK(f[0] == 0.0f);  // outside every segment: never touched
      CHECK(f[19] == 0.0f);
      CHECK(f[2] != 0.0f);
    }
    if (std::string(e.type) == "Adam") {  // after one step: m = (1 - beta1) g, v = (1 - beta2) g^2
      const char* name = nullptr;
      dspp_tensor_view v{};
      check_ok(m.opt->state(0, &name, &v), "state");
      CHECK(static_cast<const float*>(v.data)[5] == Approx(0.1 * 0.25).epsilon(1e-6));
      check_ok(m.opt->state(1, &name, &v), "state");
      CHECK(static_cast<const float*>(v.data)[5] == Approx(0.001 * 0.0625).epsilon(1e-6));
    }
    const char* name = nullptr;
    dspp_tensor_view v{};
    CHECK(
        contains(error_of([&] { check_ok(m.opt->state(7, &name, &v), "state"); }), "out of range"));
  }
}

TEST_CASE("optimizer plugins publish DeepSpeed's defaults", "[optim]") {
  auto dflt = [](const char* name, const char* key) -> std::string {
    const dspp::PluginInfo* info = registry().find("optimizer", name);
    REQUIRE(info != nullptr);
    for (const dspp::KeySpec& k : info->options)
      if (k.path == key) return k.default_json;
    return "<absent>";
  };
  CHECK(dflt("adam", "lr") == "0.001");
  CHECK(dflt("adam", "betas") == "[0.9, 0.999]");
  CHECK(dflt("adam", "eps") == "1e-08");
  CHECK(dflt("adam", "weight_decay") == "0.0");
  CHECK(dflt("adam", "adam_w_mode") == "true");
  CHECK(dflt("adamw", "weight_decay") == "0.0");  // FusedAdam's, not torch.optim.AdamW's 0.01
  CHECK(dflt("sgd", "lr") == "0.001");
  CHECK(dflt("sgd", "momentum") == "0.0");
  CHECK(dflt("lion", "betas") == "[0.9, 0.999]");
  CHECK(dflt("lamb", "eps") == "1e-08");
  CHECK(dflt("lamb", "max_coeff") == "10.0");
  CHECK(dflt("lamb", "min_coeff") == "0.01");
  CHECK(dflt("adagrad", "lr") == "0.01");
  CHECK(dflt("adagrad", "eps") == "1e-10");
  for (const char* n : {"adam", "adamw", "sgd", "lion", "lamb", "adagrad"})
    CHECK(registry().find("optimizer", n) != nullptr);
  CHECK(registry().find("optimizer", "AdamW") != nullptr);  // names are case-insensitive
}

TEST_CASE("bad optimizer parameters are errors naming the key", "[optim]") {
  // Unvalidated configs: these are the plugins' own checks (the config registry may catch some of
  // them first when it validates against the published schema).
  auto create_error = [](const char* type, const char* params) {
    return error_of([&] { make(type, params, false); });
  };
  std::string e = create_error("Adam", R"({"betas": [0.9, 0.99, 0.5]})");
  CHECK(contains(e, "optimizer.params.betas must be two numbers in [0, 1)"));
  CHECK(contains(e, "[0.9,0.99,0.5]"));
  CHECK(contains(create_error("AdamW", R"({"betas": [0.9, 1.0]})"), "betas"));
  CHECK(contains(create_error("Adam", R"({"lr": -0.001})"),
                 "optimizer.params.lr must be a non-negative number"));
  CHECK(contains(create_error("Adam", R"({"eps": "small"})"), "optimizer.params.eps"));
  CHECK(contains(create_error("Adam", R"({"amsgrad": true})"), "amsgrad is not supported"));
  CHECK(contains(create_error("Adam", R"({"torch_adam": true, "bias_correction": false})"),
                 "bias_correction"));
  CHECK(contains(create_error("Adam", R"({"max_grad_norm": 1.0})"), "gradient_clipping"));
  CHECK(contains(create_error("SGD", R"({"nesterov": true})"), "nesterov needs momentum > 0"));
  CHECK(contains(create_error("SGD", R"({"momentum": -0.5})"), "optimizer.params.momentum"));
  CHECK(contains(create_error("SGD", R"({"nesterov": 1})"),
                 "optimizer.params.nesterov must be true or false"));
  CHECK(contains(create_error("Lion", R"({"weight_decay": -1})"), "optimizer.params.weight_decay"));
  CHECK(contains(create_error("Lamb", R"({"min_coeff": 2, "max_coeff": 1})"), "min_coeff"));
  CHECK(contains(create_error("Lamb", R"({"amsgrad": true})"), "amsgrad"));
  CHECK(contains(create_error("Adagrad", R"({"lr_decay": -0.1})"), "optimizer.params.lr_decay"));

  // The same keys through the registry's schema validation still name the key.
  e = error_of([] { make("Adam", R"({"lr": -0.001})"); });
  CHECK(contains(e, "lr"));

  // Group overrides and setup values name the group.
  Made m = make("Adam", "{}");
  const Tensor t{"w", {7}, 0, 0, 7, 1.0f};
  const dspp::ParamSegment seg = segment_of(t);
  auto init_error = [&](Optimizer& opt, const dspp::ParamGroupSetup& g,
                        const dspp::ParamSegment& s) {
    const dspp::OptimizerSetup setup{&s, 1, &g, 1, 7, dspp_device{DSPP_DEVICE_CPU, 0}};
    return error_of([&] { check_ok(opt.init(&setup), "init"); });
  };
  CHECK(contains(init_error(*m.opt, {0.01, 0.0, R"({"betas": [0.9]})"}, seg),
                 "param group 0: betas must be two numbers"));
  CHECK(contains(init_error(*m.opt, {-0.01, 0.0, nullptr}, seg), "param group 0: lr"));
  CHECK(contains(init_error(*m.opt, {0.01, kNaN, R"({"weight_decay": -2})"}, seg),
                 "param group 0: weight_decay"));
  CHECK(contains(init_error(*m.opt, {0.01, 0.0, "[1, 2]"}, seg), "must be a JSON object"));
  CHECK(contains(init_error(*m.opt, {0.01, 0.0, R"({"amsgrad": true})"}, seg),
                 "param group 0: amsgrad"));
  dspp::ParamSegment outside = seg;
  outside.offset_in_flat = 3;
  CHECK(contains(init_error(*m.opt, {0.01, 0.0, nullptr}, outside), "outside the flat buffer"));

  {  // after a failed init the optimizer refuses to step instead of using half a setup
    std::vector<float> p(7, 1.0f), gr(7, 1.0f);
    const double lr = 0.01;
    dspp::StepArgs args{flat_view(p), flat_view(gr), &lr, nullptr, 1};
    CHECK(contains(error_of([&] { check_ok(m.opt->step(&args), "step"); }), "before init()"));
  }

  // Lamb's trust ratio needs whole parameters.
  Made lamb = make("Lamb", "{}");
  dspp::ParamSegment slice = seg;
  slice.shape[0] = 14;
  slice.offset_in_param = 7;
  CHECK(contains(init_error(*lamb.opt, {0.01, 0.0, nullptr}, slice), "needs whole parameters"));

  // Step arguments.
  const dspp::ParamGroupSetup g{0.01, 0.0, nullptr};
  const dspp::OptimizerSetup setup{&seg, 1, &g, 1, 7, dspp_device{DSPP_DEVICE_CPU, 0}};
  check_ok(m.opt->init(&setup), "init");
  std::vector<float> p(7, 1.0f), gr(7, 1.0f), small(3, 1.0f);
  const double lr = 0.01, bad_lr = -1.0, bad_beta = 1.5;
  auto step_error = [&](dspp::StepArgs a) {
    return error_of([&] { check_ok(m.opt->step(&a), "step"); });
  };
  CHECK(contains(step_error({flat_view(p), flat_view(gr), &lr, nullptr, 0}), "1-based"));
  CHECK(contains(step_error({flat_view(p), flat_view(small), &lr, nullptr, 1}), "grads holds 3"));
  CHECK(contains(step_error({flat_view(p), flat_view(gr), &bad_lr, nullptr, 1}), "learning rate"));
  CHECK(contains(step_error({flat_view(p), flat_view(gr), &lr, &bad_beta, 1}), "beta1"));
}

TEST_CASE("large buffers: chunked, threaded steps equal the plain formula", "[optim]") {
  // Two segments of several chunks each (kChunk = 32768), large enough for the threaded path; a
  // float64 evaluation of the same formula checks the elementwise kernels and Lamb's per-parameter
  // norms summed across chunks.
  const int64_t n0 = 3 * 32768 + 11, n1 = 40000, pad = 5, total = n0 + pad + n1;
  const Tensor t0{"a", {n0}, 0, 0, n0, 1.0f}, t1{"b", {n1}, 1, n0 + pad, n1, 1.0f};
  const dspp::ParamSegment segs[2] = {segment_of(t0), segment_of(t1)};
  const dspp::ParamGroupSetup groups[2] = {{1e-3, 0.1, nullptr}, {2e-3, 0.0, nullptr}};
  const dspp::OptimizerSetup setup{segs, 2, groups, 2, total, dspp_device{DSPP_DEVICE_CPU, 0}};
  std::vector<float> p0(total), g(total);
  for (int64_t j = 0; j < total; ++j) {
    p0[j] = initial_value(7, 0, static_cast<uint32_t>(j));
    g[j] = grad_value(7, 0, static_cast<uint32_t>(j), 1, 1.0f);
  }
  const double lrs[2] = {1e-3, 2e-3}, wds[2] = {0.1, 0.0};
  const int64_t begin[2] = {0, n0 + pad}, end[2] = {n0, total};

  SECTION("adamw") {
    Made m = make("AdamW", "{}");
    check_ok(m.opt->init(&setup), "init");
    std::vector<float> p = p0;
    for (int64_t s = 1; s <= 2; ++s) {
      const dspp::StepArgs args{flat_view(p), flat_view(g), lrs, nullptr, s};
      check_ok(m.opt->step(&args), "step");
    }
    for (int k = 0; k < 2; ++k) {
      for (int64_t j = begin[k]; j < end[k]; j += 97) {
        double x = p0[j], mm = 0, vv = 0;
        for (int s = 1; s <= 2; ++s) {
          mm = 0.9 * mm + 0.1 * g[j];
          vv = 0.999 * vv + 0.001 * double(g[j]) * g[j];
          const double denom = std::sqrt(vv) / std::sqrt(1 - std::pow(0.999, s)) + 1e-8;
          x = x * (1 - lrs[k] * wds[k]) - lrs[k] / (1 - std::pow(0.9, s)) * mm / denom;
        }
        REQUIRE(p[j] == Approx(x).epsilon(1e-6).margin(1e-7));
      }
    }
    CHECK(p[n0 + 2] == p0[n0 + 2]);  // padding
  }

  SECTION("lamb") {
    Made m = make("Lamb", R"({"weight_decay": 0.01})");
    const dspp::ParamGroupSetup lgroups[2] = {{1e-2, kNaN, nullptr}, {5e-3, 0.0, nullptr}};
    const dspp::OptimizerSetup lsetup{segs, 2, lgroups, 2, total, dspp_device{DSPP_DEVICE_CPU, 0}};
    check_ok(m.opt->init(&lsetup), "init");
    std::vector<float> p = p0;
    const double llrs[2] = {1e-2, 5e-3}, lwds[2] = {0.01, 0.0};
    const dspp::StepArgs args{flat_view(p), flat_view(g), llrs, nullptr, 1};
    check_ok(m.opt->step(&args), "step");
    for (int k = 0; k < 2; ++k) {
      double w2 = 0, u2 = 0;
      std::vector<double> u(end[k] - begin[k]);
      for (int64_t j = begin[k]; j < end[k]; ++j) {
        const double mm = 0.1 * g[j], vv = 0.001 * double(g[j]) * g[j];
        u[j - begin[k]] = mm / (std::sqrt(vv) + 1e-8) + lwds[k] * p0[j];
        w2 += double(p0[j]) * p0[j];
        u2 += u[j - begin[k]] * u[j - begin[k]];
      }
      const double coeff = std::clamp(std::sqrt(w2) / std::sqrt(u2), 0.01, 10.0);
      const double step_size = llrs[k] * std::sqrt(1 - 0.999) / (1 - 0.9);
      for (int64_t j = begin[k]; j < end[k]; j += 97) {
        const double x = p0[j] - step_size * coeff * u[j - begin[k]];
        REQUIRE(p[j] == Approx(x).epsilon(1e-6).margin(1e-7));
      }
    }
  }
}

TEST_CASE("segments flagged DSPP_PARAM_NO_DECAY get no weight decay", "[optim]") {
  // One group with weight decay holding a flagged segment steps exactly as two groups, the second
  // without weight decay.
  const Tensor a{"a", {9}, 0, 0, 9, 1.0f}, b{"b", {4, 3}, 0, 9, 12, 1.0f};
  std::vector<float> p0(21), g(21);
  for (int64_t j = 0; j < 21; ++j) {
    p0[j] = initial_value(3, 0, static_cast<uint32_t>(j));
    g[j] = grad_value(3, 0, static_cast<uint32_t>(j), 1, 1.0f);
  }
  for (const char* type : {"Adam", "AdamW", "SGD", "Lion", "Lamb", "Adagrad"}) {
    INFO(type);
    const std::string params = std::string(type) == "SGD" ? R"({"momentum": 0.9})" : "{}";
    // mode 0: b flagged in group 0; 1: b alone in group 1 (no decay); 2: b unflagged in group 0.
    auto run = [&](int mode) {
      Made m = make(type, params);
      dspp::ParamSegment segs[2] = {segment_of(a), segment_of(b)};
      const dspp::ParamGroupSetup groups[2] = {{0.01, 0.5, nullptr}, {0.01, 0.0, nullptr}};
      if (mode == 0) segs[1].flags = DSPP_PARAM_NO_DECAY;
      if (mode == 1) segs[1].group = 1;
      const dspp::OptimizerSetup setup{
          segs, 2, groups, mode == 1 ? 2 : 1, 21, dspp_device{DSPP_DEVICE_CPU, 0}};
      check_ok(m.opt->init(&setup), "init");
      std::vector<float> p = p0;
      const double lrs[2] = {0.01, 0.01};
      for (int64_t s = 1; s <= 3; ++s) {
        const dspp::StepArgs args{flat_view(p), flat_view(g), lrs, nullptr, s};
        check_ok(m.opt->step(&args), "step");
      }
      return p;
    };
    const std::vector<float> flagged = run(0), split = run(1), decayed = run(2);
    for (int64_t j = 0; j < 21; ++j) REQUIRE(flagged[j] == split[j]);
    bool differs = false;  // without the flag, weight decay does act on b
    for (int64_t j = 9; j < 21; ++j) differs = differs || flagged[j] != decayed[j];
    CHECK(differs);
  }
}
