// The lr_schedules plugin library against DeepSpeed itself: every step of every reference case in
// tests/data/lr_schedules.json (made by scripts/reference/lr_schedules.py with DeepSpeed 0.19), the
// option defaults it publishes, and the errors for invalid parameters. Plugins are loaded through
// the plugin registry and read their params through a real config view, as initialize() does.
//
// Tolerance: relative 1e-12. The plugin evaluates DeepSpeed's double expressions in DeepSpeed's
// order, so the only legitimate difference is libm's log and cos (within an ulp or so, about 1e-16
// relative, on a libm other than the reference's) carried through a few operations. 1e-12 leaves
// four orders of magnitude for that, while an indexing or formula mistake moves values by 1e-4
// relative or more (one step of a 300-step schedule). On the reference machine they agree exactly.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <dspp/config.h>
#include <dspp/error.h>
#include <dspp/kinds/scheduler.h>
#include <dspp/plugins.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"

namespace {

constexpr double kRelTol = 1e-12;
constexpr const char* kTypes[] = {"WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle",
                                  "LRRangeTest"};

bool close(double a, double b) {
  return std::fabs(a - b) <= kRelTol * std::max(std::fabs(a), std::fabs(b));
}

std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return buf.GetString();
}

const rapidjson::Document& reference() {
  static const rapidjson::Document doc = [] {
    const std::string path = std::string(DSPP_SOURCE_DIR) + "/tests/data/lr_schedules.json";
    std::ifstream in(path);
    REQUIRE(in.good());
    std::stringstream text;
    text << in.rdbuf();
    rapidjson::Document d;
    // Full precision: the file holds Python's repr() of each double, which must parse exactly.
    d.Parse<rapidjson::kParseFullPrecisionFlag>(text.str().c_str());
    REQUIRE(!d.HasParseError());
    return d;
  }();
  return doc;
}

dspp::PluginRegistry& registry() {
  static dspp::PluginRegistry reg;
  static const bool loaded = [] {
    reg.load_library(DSPP_LR_SCHEDULES_PLUGIN);
    return true;
  }();
  (void)loaded;
  return reg;
}

// {"scheduler": {"type": type, "params": params}}, loaded with the plugins' option schemas so the
// config registry validates the params as it does in initialize(); `validate` false skips that, to
// reach the plugin's own checks.
dspp::Config make_config(const std::string& type, const std::string& params_json,
                         bool validate = true) {
  dspp::LoadOptions opts;
  if (validate) {
    opts.plugin_options = [](std::string_view kind,
                             std::string_view name) -> const std::vector<dspp::KeySpec>* {
      const dspp::PluginInfo* info = registry().find(kind, name);
      return info ? &info->options : nullptr;
    };
  }
  const std::string json = R"({"train_batch_size": 1, "scheduler": {"type": ")" + type +
                           R"(", "params": )" + params_json + "}}";
  return dspp::Config::from_string(json, opts);
}

std::shared_ptr<dspp::Scheduler> make_scheduler(const std::string& type,
                                                const std::string& params_json,
                                                const std::vector<double>& base_lrs,
                                                bool validate = true) {
  const dspp::Config cfg = make_config(type, params_json, validate);
  auto sched = registry().create<dspp::Scheduler>("scheduler", type, cfg.view("scheduler.params"));
  dspp::check_plugin(sched->init(base_lrs.data(), static_cast<int32_t>(base_lrs.size())),
                     type + " init");
  return sched;
}

std::vector<double> numbers(const rapidjson::Value& list) {
  std::vector<double> out;
  for (const auto& v : list.GetArray()) out.push_back(v.GetDouble());
  return out;
}

// Compares lr_at or momentum_at over every step with the reference series; returns "" or the
// first mismatch.
template <class Fn>
std::string compare_series(const rapidjson::Value& series, size_t groups, Fn&& at) {
  std::vector<double> got(groups);
  for (rapidjson::SizeType n = 0; n < series.Size(); ++n) {
    const std::vector<double> want = numbers(series[n]);
    if (want.size() != groups) return "reference row " + std::to_string(n) + " has wrong width";
    const dspp_status st = at(static_cast<int64_t>(n), got.data());
    if (st != DSPP_OK) {
      return "step " + std::to_string(n) + ": status " + std::to_string(st) + " " +
             dspp::last_plugin_error();
    }
    for (size_t g = 0; g < groups; ++g) {
      if (!close(got[g], want[g])) {
        std::ostringstream msg;
        msg.precision(17);
        msg << "step " << n << " group " << g << ": dspp " << got[g] << ", DeepSpeed " << want[g];
        return msg.str();
      }
    }
  }
  return "";
}

}  // namespace

TEST_CASE("lr schedules: every step equals DeepSpeed's", "[sched]") {
  const rapidjson::Value& cases = reference()["cases"];
  REQUIRE(cases.Size() >= 15);
  std::set<std::string> types_seen;
  for (const auto& c : cases.GetArray()) {
    const std::string name = c["name"].GetString();
    const std::string type = c["type"].GetString();
    const std::vector<double> base_lrs = numbers(c["base_lrs"]);
    INFO(name << " " << type << " " << to_json(c["params"]));
    types_seen.insert(type);
    // The config names DeepSpeed's spelling ("WarmupLR"); the registry resolves it to "warmuplr".
    auto sched = make_scheduler(type, to_json(c["params"]), base_lrs);
    REQUIRE(c["lr"].Size() > 300);
    CHECK(compare_series(c["lr"], base_lrs.size(),
                         [&](int64_t n, double* out) { return sched->lr_at(n, out); }) == "");
    std::vector<double> mom(base_lrs.size());
    if (c.HasMember("momentum")) {
      CHECK(compare_series(c["momentum"], base_lrs.size(), [&](int64_t n, double* out) {
              return sched->momentum_at(n, out);
            }) == "");
    } else {
      // WarmupLR & co have no momentum schedule; nor has OneCycle with cycle_momentum false.
      CHECK(sched->momentum_at(1, mom.data()) == DSPP_ERR_NOT_SUPPORTED);
    }
  }
  CHECK(types_seen.size() == std::size(kTypes));
}

TEST_CASE("lr schedules: options and defaults are DeepSpeed's", "[sched]") {
  const rapidjson::Value& defaults = reference()["defaults"];
  for (const char* type : kTypes) {
    INFO(type);
    const dspp::PluginInfo& info = registry().require("scheduler", type);
    CHECK(info.kind == "scheduler");
    const rapidjson::Value& ds = defaults[type];
    std::set<std::string> ds_keys, our_keys;
    for (const auto& m : ds.GetObject()) ds_keys.insert(m.name.GetString());
    for (const dspp::KeySpec& spec : info.options) {
      our_keys.insert(spec.path);
      INFO(spec.path << " default " << spec.default_json);
      REQUIRE(ds.HasMember(spec.path.c_str()));
      const rapidjson::Value& want = ds[spec.path.c_str()];
      rapidjson::Document got;
      got.Parse(spec.default_json.c_str());
      REQUIRE(!got.HasParseError());
      if (want.IsNull()) {
        CHECK(got.IsNull());
      } else if (want.IsBool()) {
        CHECK((got.IsBool() && got.GetBool() == want.GetBool()));
      } else if (want.IsNumber()) {
        CHECK((got.IsNumber() && got.GetDouble() == want.GetDouble()));
      } else {
        CHECK((got.IsString() && std::string(got.GetString()) == want.GetString()));
      }
    }
    CHECK(our_keys == ds_keys);
  }
  // Names resolve case-insensitively, DeepSpeed's spelling included.
  CHECK(registry().require("scheduler", "WARMUPCOSINELR").name == "warmupcosinelr");
  CHECK(registry().list("scheduler").size() == std::size(kTypes));
}

TEST_CASE("lr schedules: DeepSpeed's invalid params are errors naming the key", "[sched]") {
  const rapidjson::Value& errors = reference()["errors"];
  REQUIRE(errors.Size() >= 10);
  for (const auto& e : errors.GetArray()) {
    const std::string type = e["type"].GetString();
    const std::string key = e["key"].GetString();
    INFO(type << " " << to_json(e["params"]) << " (DeepSpeed: " << e["deepspeed_error"].GetString()
              << ")");
    // As users meet it (the config registry may catch it first), and by the plugin alone.
    for (bool validate : {true, false}) {
      const std::string msg = error_of(
          [&] { make_scheduler(type, to_json(e["params"]), numbers(e["base_lrs"]), validate); });
      INFO("validate " << validate << ", dspp: " << msg);
      CHECK(contains(msg, key));
      if (!validate) CHECK(contains(msg, type + ": "));  // the plugin's own message
    }
  }
}

TEST_CASE("lr schedules: dspp's own refusals and argument checks", "[sched]") {
  const std::vector<double> one = {0.1};
  SECTION("an unknown warmup_type is an error, not DeepSpeed's silent fallback to log") {
    for (const char* bad : {"Linear", "cosine"}) {
      const std::string msg = error_of([&] {
        make_scheduler("WarmupLR", std::string(R"({"warmup_type": ")") + bad + "\"}", one);
      });
      INFO(msg);
      CHECK(contains(msg, "warmup_type"));
    }
  }
  SECTION("a fractional step count is an error naming the key") {
    const std::string msg = error_of(
        [&] { make_scheduler("LRRangeTest", R"({"lr_range_test_step_size": 2.5})", one); });
    INFO(msg);
    CHECK(contains(msg, "lr_range_test_step_size"));
  }
  SECTION("a non-number in a per-group list is an error naming the key") {
    const std::string msg = error_of([&] {
      make_scheduler("OneCycle", R"({"cycle_min_lr": [0.1, "x"], "cycle_max_lr": 1})", {0.1, 0.1});
    });
    INFO(msg);
    CHECK(contains(msg, "cycle_min_lr"));
  }
  SECTION("init, lr_at and momentum_at check their arguments") {
    const dspp::Config cfg = make_config("OneCycle", R"({"cycle_min_lr": 0.1, "cycle_max_lr": 1})");
    auto sched =
        registry().create<dspp::Scheduler>("scheduler", "onecycle", cfg.view("scheduler.params"));
    double out[2] = {0, 0};
    CHECK(sched->lr_at(0, out) != DSPP_OK);  // before init
    CHECK(contains(dspp::last_plugin_error(), "init"));
    CHECK(sched->init(nullptr, 0) == DSPP_ERR_INVALID_ARGUMENT);
    const double base[2] = {0.5, 0.5};
    REQUIRE(sched->init(base, 2) == DSPP_OK);
    CHECK(sched->lr_at(-1, out) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(sched->lr_at(0, nullptr) == DSPP_ERR_INVALID_ARGUMENT);
    REQUIRE(sched->lr_at(0, out) == DSPP_OK);
    CHECK(out[0] == 0.1);
    CHECK(out[1] == 0.1);
    // Constructed at cycle_min_mom (DeepSpeed's constructor), then the cycle starts at the max.
    REQUIRE(sched->momentum_at(0, out) == DSPP_OK);
    CHECK(out[0] == 0.8);
    REQUIRE(sched->momentum_at(1, out) == DSPP_OK);
    CHECK(out[0] < 0.9);
    CHECK(out[0] > 0.89);
    // Far past the cycle the values stay finite and fixed (no decay configured).
    REQUIRE(sched->lr_at(int64_t{1} << 40, out) == DSPP_OK);
    CHECK(out[0] == 0.1);
  }
}
