// The core key table against DeepSpeed itself: every default DeepSpeed 0.19 reports
// (tests/data/deepspeed_defaults.json, written by scripts/reference/deepspeed_defaults.py) must be
// a known key with the same default, DeepSpeed's other spellings must be deprecated spellings, and
// the keys DeepSpeed removed must never be silently accepted.
#include "catch.h"

#include <dspp/config.h>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using dspp::ConfigSchema;
using dspp::KeySpec;
using dspp::Support;

// Deliberate differences from DeepSpeed, each with its reason. Keep this list short.
const std::map<std::string, std::string> kNotRegistered = {
    {"tensor_parallel.tp.mpu", "a Python object (model-parallel unit); JSON cannot carry it"},
    {"tensor_parallel.tp.tp_group", "a Python process group; JSON cannot carry it"},
    {"tensor_parallel.injection_policy_tuple", "a tuple of Python classes; JSON cannot carry it"},
};
const std::map<std::string, std::string> kDifferentDefault = {
    {"tensor_parallel.dtype",
     "DeepSpeed's default is the Python object torch.float16, which JSON cannot set either; dspp "
     "takes the dtype from fp16/bf16 and leaves the key unset"},
};

rapidjson::Document load_reference() {
  const std::string path = std::string(DSPP_SOURCE_DIR) + "/tests/data/deepspeed_defaults.json";
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document doc;
  doc.Parse(text.str().c_str());
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc.IsObject());
  return doc;
}

std::string compact(const rapidjson::Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return buf.GetString();
}

// Numbers compare by value (DeepSpeed writes 5e8 as an int, 1.0 as a float); the rest exactly.
bool same_json(const rapidjson::Value& a, const rapidjson::Value& b) {
  if (a.IsNumber() && b.IsNumber()) {
    if (a.IsInt64() && b.IsInt64()) return a.GetInt64() == b.GetInt64();
    if (a.IsUint64() && b.IsUint64()) return a.GetUint64() == b.GetUint64();
    double x = a.GetDouble(), y = b.GetDouble();
    return x == y || std::fabs(x - y) <= 1e-12 * std::fmax(std::fabs(x), std::fabs(y));
  }
  if (a.GetType() != b.GetType()) return false;
  if (a.IsArray()) {
    if (a.Size() != b.Size()) return false;
    for (rapidjson::SizeType i = 0; i < a.Size(); ++i)
      if (!same_json(a[i], b[i])) return false;
    return true;
  }
  if (a.IsObject()) {
    if (a.MemberCount() != b.MemberCount()) return false;
    for (auto it = a.MemberBegin(); it != a.MemberEnd(); ++it) {
      auto jt = b.FindMember(it->name);
      if (jt == b.MemberEnd() || !same_json(it->value, jt->value)) return false;
    }
    return true;
  }
  return a == b;
}

// The registry's default as JSON text, with DeepSpeed's None written "null".
std::string default_of(const KeySpec& spec) {
  return spec.default_json.empty() ? "null" : spec.default_json;
}

bool same_default(const KeySpec& spec, const rapidjson::Value& deepspeed) {
  rapidjson::Document ours;
  ours.Parse(default_of(spec).c_str());
  if (ours.HasParseError()) return false;
  return same_json(ours, deepspeed);
}

}  // namespace

TEST_CASE("every DeepSpeed default is a known key with DeepSpeed's value", "[config][defaults]") {
  rapidjson::Document ref = load_reference();
  const ConfigSchema& schema = ConfigSchema::core();
  const rapidjson::Value& defaults = ref["defaults"];
  size_t checked = 0;
  for (auto it = defaults.MemberBegin(); it != defaults.MemberEnd(); ++it) {
    const std::string path = it->name.GetString();
    INFO("key " << path << ", DeepSpeed's default " << compact(it->value));
    const KeySpec* spec = schema.find(path);
    REQUIRE(spec != nullptr);
    CHECK(spec->deprecated_for.empty());
    if (kDifferentDefault.count(path)) continue;
    INFO("registry's default " << default_of(*spec));
    CHECK(same_default(*spec, it->value));
    ++checked;
  }
  const rapidjson::Value& skipped = ref["skipped"];
  for (auto it = skipped.MemberBegin(); it != skipped.MemberEnd(); ++it) {
    const std::string path = it->name.GetString();
    INFO("key " << path << " (DeepSpeed: " << it->value.GetString() << ")");
    CHECK((kNotRegistered.count(path) == 1 || kDifferentDefault.count(path) == 1));
    if (kNotRegistered.count(path)) CHECK(schema.find(path) == nullptr);
    if (kDifferentDefault.count(path)) CHECK(schema.find(path) != nullptr);
  }
  std::cout << "test_config_defaults: " << checked << " DeepSpeed "
            << ref["deepspeed_version"].GetString() << " defaults match the registry ("
            << kDifferentDefault.size() << " deliberate difference, " << kNotRegistered.size()
            << " Python-only fields not registered)\n";
  CHECK(checked >= 250);
}

TEST_CASE("the defaults are what a loaded config reads", "[config][defaults]") {
  // The same comparison through Config's getters: a default in the table is a default in use.
  rapidjson::Document ref = load_reference();
  dspp::LoadOptions opts;
  opts.on_warning = [](const dspp::ConfigMessage&) {};
  dspp::Config cfg = dspp::Config::from_string(R"({"train_batch_size": 8})", opts);
  const rapidjson::Value& defaults = ref["defaults"];
  size_t read = 0;
  for (auto it = defaults.MemberBegin(); it != defaults.MemberEnd(); ++it) {
    const std::string path = it->name.GetString();
    if (it->value.IsNull() || path == "train_batch_size") continue;
    if (kDifferentDefault.count(path)) continue;
    INFO("key " << path << ", DeepSpeed's default " << compact(it->value));
    std::string ours = cfg.get_json(path);
    INFO("Config reads " << ours);
    rapidjson::Document d;
    d.Parse(ours.c_str());
    REQUIRE_FALSE(d.HasParseError());
    CHECK(same_json(d, it->value));
    ++read;
  }
  CHECK(read >= 200);
}

TEST_CASE("DeepSpeed's other spellings are deprecated spellings", "[config][defaults]") {
  rapidjson::Document ref = load_reference();
  const ConfigSchema& schema = ConfigSchema::core();
  std::map<std::string, std::string> alias;  // pydantic field name -> the alias files use
  for (auto it = ref["aliases"].MemberBegin(); it != ref["aliases"].MemberEnd(); ++it) {
    alias[it->name.GetString()] = it->value.GetString();
  }
  for (const auto& [old_path, new_path] : alias) {
    INFO("DeepSpeed accepts " << old_path << " for " << new_path);
    const KeySpec* spec = schema.find(old_path);
    REQUIRE(spec != nullptr);
    CHECK(spec->deprecated_for == new_path);
  }
  for (auto it = ref["deprecated"].MemberBegin(); it != ref["deprecated"].MemberEnd(); ++it) {
    const std::string old_path = it->name.GetString();
    std::string new_path = it->value.GetString();
    if (alias.count(new_path)) new_path = alias[new_path];
    INFO("DeepSpeed deprecates " << old_path << " for '" << new_path << "'");
    const KeySpec* spec = schema.find(old_path);
    REQUIRE(spec != nullptr);
    if (new_path.empty()) {
      // DeepSpeed only warns and drops it: a no-effect key here.
      CHECK(spec->support == Support::kNoEffect);
    } else {
      // A whole-object replacement may land on one field of it (cpu_offload -> .device).
      CHECK(
          (spec->deprecated_for == new_path || spec->deprecated_for.rfind(new_path + ".", 0) == 0));
      CHECK(schema.find(spec->deprecated_for) != nullptr);
    }
  }
}

TEST_CASE("keys DeepSpeed 0.19 removed are known and never silently accepted",
          "[config][defaults]") {
  rapidjson::Document ref = load_reference();
  const ConfigSchema& schema = ConfigSchema::core();
  for (const auto& v : ref["removed"].GetArray()) {
    const std::string path = v.GetString();
    INFO("removed key " << path);
    const KeySpec* spec = schema.find(path);
    REQUIRE(spec != nullptr);
    CHECK(spec->support != Support::kSupported);
    CHECK_FALSE(spec->note.empty());
  }
}

TEST_CASE("every core key is documented and every unsupported one says why", "[config][defaults]") {
  const ConfigSchema& schema = ConfigSchema::core();
  size_t supported = 0, unsupported = 0, no_effect = 0, deprecated = 0, rejecting = 0;
  for (const KeySpec* spec : schema.all()) {
    INFO("key " << spec->path);
    CHECK_FALSE(spec->doc.empty());
    CHECK(spec->owner == "core");
    if (!spec->deprecated_for.empty()) {
      ++deprecated;
      CHECK(schema.find(spec->deprecated_for) != nullptr);
      continue;
    }
    if (!spec->unsupported_values.empty()) ++rejecting;
    switch (spec->support) {
      case Support::kSupported:
        ++supported;
        break;
      case Support::kUnsupported:
        ++unsupported;
        break;
      case Support::kNoEffect:
        ++no_effect;
        break;
    }
    if (spec->support != Support::kSupported) CHECK_FALSE(spec->note.empty());
    // Children of a free-form object are never validated, so a rule on one would be dead.
    for (std::string p = spec->path; p.find('.') != std::string::npos;) {
      p = p.substr(0, p.rfind('.'));
      const KeySpec* parent = schema.find(p);
      INFO("parent " << p);
      CHECK_FALSE((parent && parent->open));
    }
  }
  std::cout << "test_config_defaults: " << schema.all().size() << " core keys: " << supported
            << " supported (" << rejecting << " with a refused value), " << unsupported
            << " unsupported, " << no_effect << " no effect, " << deprecated
            << " deprecated spellings\n";
  CHECK(schema.all().size() >= 300);
}

namespace {

struct Loaded {
  dspp::Config config;
  std::vector<dspp::ConfigMessage> warnings;
};

Loaded load(const std::string& json) {
  Loaded out;
  dspp::LoadOptions opts;
  opts.on_warning = [&out](const dspp::ConfigMessage& m) { out.warnings.push_back(m); };
  out.config = dspp::Config::from_string(json, opts);
  return out;
}

bool warned_about(const Loaded& l, const std::string& path) {
  for (const auto& w : l.warnings)
    if (w.path == path || w.text.find(path) != std::string::npos) return true;
  return false;
}

std::string load_error(const std::string& json) {
  try {
    load(json);
  } catch (const dspp::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("deprecated spellings land where DeepSpeed puts them", "[config][defaults]") {
  SECTION("cpu_offload: true offloads the optimizer to the CPU") {
    auto l =
        load(R"({"train_batch_size": 8, "zero_optimization": {"stage": 2, "cpu_offload": true}})");
    CHECK(l.config.get_string("zero_optimization.offload_optimizer.device") == "cpu");
    CHECK(warned_about(l, "zero_optimization.cpu_offload"));
  }
  SECTION("cpu_offload: false means no offload") {
    auto l = load(R"({"train_batch_size": 8, "zero_optimization": {"cpu_offload": false}})");
    CHECK(l.config.get_string("zero_optimization.offload_optimizer.device") == "none");
  }
  SECTION("cpu_offload_param: true offloads ZeRO-3 parameters (a no-effect key in dspp)") {
    auto l = load(
        R"({"train_batch_size": 8, "zero_optimization": {"stage": 3, "cpu_offload_param": true}})");
    CHECK(l.config.get_string("zero_optimization.offload_param.device") == "cpu");
    CHECK(warned_about(l, "zero_optimization.offload_param.device"));
  }
  SECTION("top-level bfloat16 is bf16") {
    auto l = load(R"({"train_batch_size": 8, "bfloat16": {"enabled": true}})");
    CHECK(l.config.get_bool("bf16.enabled"));
  }
  SECTION("unprefixed ZeRO-3 names are the stage3_ keys") {
    auto l = load(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3,
        "prefetch_bucket_size": 1e7, "max_live_parameters": 3e8,
        "stage3_gather_fp16_weights_on_model_save": true}})");
    CHECK(l.config.get_int("zero_optimization.stage3_prefetch_bucket_size") == 10000000);
    CHECK(l.config.get_int("zero_optimization.stage3_max_live_parameters") == 300000000);
    CHECK(l.config.get_bool("zero_optimization.stage3_gather_16bit_weights_on_model_save"));
  }
  SECTION("tensor_parallel.tensor_parallel is tensor_parallel.tp") {
    auto l =
        load(R"({"train_batch_size": 8, "tensor_parallel": {"tensor_parallel": {"tp_size": 2}}})");
    CHECK(l.config.get_int("tensor_parallel.tp.tp_size") == 2);
  }
}

TEST_CASE("support levels: results-changing features fail, hints warn", "[config][defaults]") {
  const std::string base = R"({"train_batch_size": 8, )";
  SECTION("NVMe offload is an error naming the key; cpu is fine") {
    std::string e = load_error(
        base + R"("zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}})");
    CHECK(e.find("zero_optimization.offload_optimizer.device") != std::string::npos);
    e = load_error(base +
                   R"("zero_optimization": {"stage": 3, "offload_param": {"device": "NVMe"}}})");
    CHECK(e.find("zero_optimization.offload_param.device") != std::string::npos);
    auto l = load(base +
                  R"("zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})");
    CHECK(l.config.get_string("zero_optimization.offload_optimizer.device") == "cpu");
    CHECK_FALSE(warned_about(l, "zero_optimization.offload_optimizer.device"));
  }
  SECTION("16-bit gradient reductions are an error naming the key; fp32 is fine") {
    for (const char* t : {"fp16", "bf16"}) {
      const std::string e = load_error(base + R"("communication_data_type": ")" + t + R"("})");
      CHECK(e.find("communication_data_type") != std::string::npos);
      CHECK(e.find("reduces gradients in fp32") != std::string::npos);
    }
    auto l = load(base + R"("communication_data_type": "fp32"})");
    CHECK(l.config.get_string("communication_data_type") == "fp32");
  }
  SECTION("ZeRO++ quantized weights are an error, hpZ only a warning") {
    CHECK(load_error(base + R"("zero_optimization": {"zero_quantized_weights": true}})")
              .find("zero_optimization.zero_quantized_weights") != std::string::npos);
    CHECK(load_error(base + R"("zero_optimization": {"zero_quantized_weights": false}})").empty());
    auto l = load(base + R"("zero_optimization": {"stage": 3, "zero_hpz_partition_size": 8}})");
    CHECK(warned_about(l, "zero_optimization.zero_hpz_partition_size"));
  }
  SECTION("hints and monitors dspp lacks warn; their disabled values are quiet") {
    auto l = load(base + R"("zero_optimization": {"round_robin_gradients": true},
                            "wandb": {"enabled": true}, "flops_profiler": {"enabled": false}})");
    CHECK(warned_about(l, "zero_optimization.round_robin_gradients"));
    CHECK(warned_about(l, "wandb.enabled"));
    CHECK_FALSE(warned_about(l, "flops_profiler.enabled"));
  }
  SECTION("wandb and comet blocks are accepted with a no-effect warning; tensorboard is real") {
    auto l = load(base + R"("wandb": {"enabled": true, "project": "p"},
                            "comet": {"enabled": true, "project": "p", "mode": "create"},
                            "tensorboard": {"enabled": true, "output_path": "runs",
                                            "job_name": "j"}})");
    for (const char* key :
         {"wandb.enabled", "wandb.project", "comet.enabled", "comet.project", "comet.mode"}) {
      INFO(key);
      CHECK(warned_about(l, key));
    }
    CHECK_FALSE(warned_about(l, "tensorboard"));
    CHECK(l.config.get_bool("tensorboard.enabled"));
    CHECK(l.config.get_string("tensorboard.output_path") == "runs");
    CHECK(l.config.get_string("tensorboard.job_name") == "j");
    auto d = load(base + R"("tensorboard": {"enabled": true}})");
    CHECK(d.config.get_string("tensorboard.output_path").empty());
    CHECK(d.config.get_string("tensorboard.job_name") == "DeepSpeedJobName");
  }
  SECTION("dynamic fp16 needs a window and a floor above 0, as DeepSpeed's config checks") {
    for (const char* key : {"loss_scale_window", "min_loss_scale"}) {
      INFO(key);
      const std::string block = std::string(R"("fp16": {"enabled": true, ")") + key + "\": 0";
      CHECK(load_error(base + block + "}}").find(std::string("fp16.") + key) != std::string::npos);
      // Static scaling or fp16 off never reads them.
      CHECK(load_error(base + block + R"(, "loss_scale": 128}})").empty());
      CHECK(load_error(base + R"("fp16": {"enabled": false, ")" + key + "\": 0}}").empty());
    }
  }
  SECTION("removed DeepSpeed features that change results are errors") {
    for (const char* key : {"amp", "elasticity", "progressive_layer_drop", "sparse_attention"}) {
      INFO(key);
      CHECK(load_error(base + "\"" + key + R"(": {"enabled": false}})").find(key) !=
            std::string::npos);
    }
  }
  SECTION("gradients reduce by mean or sum, nothing else") {
    CHECK(load_error(base + R"("gradient_allreduce_op": "max"})").find("gradient_allreduce_op") !=
          std::string::npos);
    CHECK(load_error(base + R"("gradient_allreduce_op": "sum"})").empty());
    CHECK(load_error(base + R"("gradient_allreduce_op": "MEAN"})").empty());
  }
  SECTION("'auto' in a pydantic section takes DeepSpeed's default when the host gives none") {
    auto l = load(base + R"("zero_optimization": {"stage": 3, "overlap_comm": "auto",
                            "stage3_prefetch_bucket_size": "auto"}})");
    CHECK(l.config.get_int("zero_optimization.stage3_prefetch_bucket_size") == 50000000);
  }
}
