// The config registry's rules, each checked against a schema built here (so the tests do not
// depend on the size of the DeepSpeed table) or against keys every DeepSpeed config has.
#include "catch.h"

#include <dspp/config.h>

// KeySpecs are written with designated initializers; GCC 12 warns about every member left out,
// which is the point of them (the rest keep their defaults).
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <string>
#include <vector>

using dspp::Config;
using dspp::ConfigSchema;
using dspp::KeySpec;
using dspp::LoadOptions;
using dspp::Support;
using dspp::ValueSource;

namespace {

// A miniature DeepSpeed table with one key of each kind the loader treats specially.
ConfigSchema test_schema() {
  ConfigSchema s;
  s.add({.path = "train_batch_size", .type = DSPP_VALUE_INT, .min = 1, .allow_auto = true});
  s.add({.path = "train_micro_batch_size_per_gpu",
         .type = DSPP_VALUE_INT,
         .min = 1,
         .allow_auto = true});
  s.add({.path = "gradient_accumulation_steps",
         .type = DSPP_VALUE_INT,
         .min = 1,
         .allow_auto = true});
  s.add({.path = "gradient_clipping",
         .type = DSPP_VALUE_FLOAT,
         .default_json = "1.0",
         .min = 0.0,
         .allow_auto = true});
  s.add({.path = "steps_per_print", .type = DSPP_VALUE_INT, .default_json = "10", .min = 1});
  s.add({.path = "wall_clock_breakdown", .type = DSPP_VALUE_BOOL, .default_json = "false"});
  s.add({.path = "strict_config", .type = DSPP_VALUE_BOOL, .default_json = "false"});
  s.add({.path = "fp16", .type = DSPP_VALUE_OBJECT, .default_json = "{}"});
  s.add({.path = "fp16.enabled",
         .type = DSPP_VALUE_BOOL,
         .default_json = "false",
         .allow_auto = true});
  s.add({.path = "fp16.loss_scale", .type = DSPP_VALUE_FLOAT, .default_json = "0.0", .min = 0.0});
  s.add({.path = "bf16", .type = DSPP_VALUE_OBJECT, .default_json = "{}"});
  s.add({.path = "bf16.enabled",
         .type = DSPP_VALUE_BOOL,
         .default_json = "false",
         .allow_auto = true});
  s.add({.path = "bfloat16", .type = DSPP_VALUE_OBJECT, .deprecated_for = "bf16"});
  s.add({.path = "zero_optimization", .type = DSPP_VALUE_OBJECT, .default_json = "{}"});
  s.add({.path = "zero_optimization.stage",
         .type = DSPP_VALUE_INT,
         .default_json = "0",
         .min = 0,
         .max = 3});
  s.add({.path = "zero_optimization.reduce_bucket_size",
         .type = DSPP_VALUE_INT,
         .default_json = "500000000",
         .min = 0,
         .allow_auto = true});
  s.add({.path = "zero_optimization.stage3_prefetch_bucket_size",
         .type = DSPP_VALUE_INT,
         .default_json = "50000000",
         .min = 0,
         .allow_auto = true});
  s.add({.path = "zero_optimization.prefetch_bucket_size",
         .type = DSPP_VALUE_INT,
         .deprecated_for = "zero_optimization.stage3_prefetch_bucket_size"});
  s.add({.path = "zero_optimization.stage3_gather_16bit_weights_on_model_save",
         .type = DSPP_VALUE_BOOL,
         .default_json = "false"});
  s.add({.path = "zero_optimization.stage3_gather_fp16_weights_on_model_save",
         .type = DSPP_VALUE_BOOL,
         .deprecated_for = "zero_optimization.stage3_gather_16bit_weights_on_model_save"});
  KeySpec cpu_offload{.path = "zero_optimization.cpu_offload",
                      .type = DSPP_VALUE_BOOL,
                      .deprecated_for = "zero_optimization.offload_optimizer.device"};
  cpu_offload.deprecated_transform = [](const std::string& old_json) -> std::string {
    return old_json == "true" ? "\"cpu\"" : "";
  };
  s.add(cpu_offload);
  s.add({.path = "zero_optimization.offload_optimizer", .type = DSPP_VALUE_OBJECT});
  KeySpec device{.path = "zero_optimization.offload_optimizer.device",
                 .type = DSPP_VALUE_STRING,
                 .default_json = "\"none\"",
                 .choices = {"none", "cpu", "nvme"}};
  device.unsupported_values = {{"\"nvme\"", "NVMe offload is not implemented"}};
  s.add(device);
  s.add({.path = "zero_optimization.round_robin_gradients",
         .type = DSPP_VALUE_BOOL,
         .default_json = "false",
         .support = Support::kNoEffect,
         .note = "dspp copies offloaded gradients in one pass",
         .inert_json = "false"});
  s.add({.path = "zero_optimization.overlap_comm",
         .type = DSPP_VALUE_BOOL,
         .default_json = "null",
         .allow_auto = true});
  s.add({.path = "amp", .type = DSPP_VALUE_OBJECT});
  s.add({.path = "amp.enabled",
         .type = DSPP_VALUE_BOOL,
         .default_json = "false",
         .support = Support::kUnsupported,
         .note = "NVIDIA Apex AMP is not available; use bf16",
         .inert_json = "false"});
  s.add({.path = "sparse_attention",
         .type = DSPP_VALUE_OBJECT,
         .open = true,
         .support = Support::kUnsupported,
         .note = "sparse attention kernels are not implemented"});
  s.add({.path = "wandb",
         .type = DSPP_VALUE_OBJECT,
         .support = Support::kNoEffect,
         .note = "there is no Weights & Biases monitor"});
  s.add({.path = "communication_data_type",
         .type = DSPP_VALUE_STRING,
         .choices = {"fp16", "bf16", "fp32"}});
  s.add({.path = "optimizer", .type = DSPP_VALUE_OBJECT});
  s.add({.path = "optimizer.type", .type = DSPP_VALUE_STRING});
  s.add(
      {.path = "optimizer.params", .type = DSPP_VALUE_OBJECT, .default_json = "{}", .open = true});
  s.add({.path = "scheduler", .type = DSPP_VALUE_OBJECT});
  s.add({.path = "scheduler.type", .type = DSPP_VALUE_STRING});
  s.add(
      {.path = "scheduler.params", .type = DSPP_VALUE_OBJECT, .default_json = "{}", .open = true});
  return s;
}

const ConfigSchema& schema() {
  static const ConfigSchema s = test_schema();
  return s;
}

struct Loaded {
  std::vector<dspp::ConfigMessage> warnings;
  LoadOptions opts;
  Loaded() {
    opts.schema = &schema();
    opts.on_warning = [this](const dspp::ConfigMessage& m) { warnings.push_back(m); };
  }
  Config load(const std::string& json) { return Config::from_string(json, opts, "test.json"); }
  std::string error(const std::string& json) {
    try {
      load(json);
    } catch (const dspp::Error& e) {
      CHECK(e.code() == dspp::Errc::kConfig);
      return e.what();
    }
    return "<no error>";
  }
  bool warned(const std::string& needle) const {
    for (const auto& w : warnings) {
      if (w.text.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

#define CHECK_HAS(haystack, needle)                \
  do {                                             \
    const std::string hay_ = (haystack);           \
    INFO("text: " << hay_);                        \
    CHECK(hay_.find(needle) != std::string::npos); \
  } while (0)

}  // namespace

TEST_CASE("edit distance counts an adjacent swap as one edit", "[config]") {
  CHECK(dspp::edit_distance("", "") == 0);
  CHECK(dspp::edit_distance("stage", "stage") == 0);
  CHECK(dspp::edit_distance("stgae", "stage") == 1);   // swap
  CHECK(dspp::edit_distance("stag", "stage") == 1);    // deletion
  CHECK(dspp::edit_distance("stagee", "stage") == 1);  // insertion
  CHECK(dspp::edit_distance("stoge", "stage") == 1);   // substitution
  CHECK(dspp::edit_distance("gradient_clipp1ng", "gradient_clipping") == 1);
  CHECK(dspp::edit_distance("abc", "xyz") == 3);
  CHECK(dspp::edit_distance("ca", "abc") == 3);  // restricted: no edit inside a swapped pair
}

TEST_CASE("schema add, find, all and children", "[config]") {
  ConfigSchema s;
  s.add({.path = "b", .type = DSPP_VALUE_INT, .default_json = "1"});
  s.add({.path = "a", .type = DSPP_VALUE_OBJECT});
  s.add({.path = "a.y", .type = DSPP_VALUE_BOOL, .default_json = "true"});
  s.add({.path = "a.x", .type = DSPP_VALUE_OBJECT});
  s.add({.path = "a.x.deep", .type = DSPP_VALUE_FLOAT});
  REQUIRE(s.find("a.y") != nullptr);
  CHECK(s.find("a.y")->default_json == "true");
  CHECK(s.find("a.z") == nullptr);
  std::vector<std::string> all;
  for (const KeySpec* k : s.all()) all.push_back(k->path);
  CHECK(all == std::vector<std::string>{"a", "a.x", "a.x.deep", "a.y", "b"});
  std::vector<std::string> top, under_a;
  for (const KeySpec* k : s.children("")) top.push_back(k->path);
  for (const KeySpec* k : s.children("a")) under_a.push_back(k->path);
  CHECK(top == std::vector<std::string>{"a", "b"});
  CHECK(under_a == std::vector<std::string>{"a.x", "a.y"});

  CHECK_THROWS_AS(s.add({.path = "b", .type = DSPP_VALUE_INT}), dspp::Error);
  // Defaults must fit their own key: a typo in the table is caught when it is registered.
  CHECK_THROWS_AS(s.add({.path = "c", .type = DSPP_VALUE_INT, .default_json = "1.5"}), dspp::Error);
  CHECK_THROWS_AS(s.add({.path = "d", .type = DSPP_VALUE_BOOL, .default_json = "{"}), dspp::Error);
  CHECK_NOTHROW(s.add({.path = "e", .type = DSPP_VALUE_INT, .default_json = "5e8"}));
}

TEST_CASE("the core schema knows the batch keys and dspp's strict_config", "[config]") {
  const ConfigSchema& core = ConfigSchema::core();
  for (const char* key :
       {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
        "gradient_clipping", "optimizer", "optimizer.type", "optimizer.params", "strict_config"}) {
    INFO(key);
    CHECK(core.find(key) != nullptr);
  }
}

TEST_CASE("a misspelled key is an error with a did-you-mean suggestion", "[config]") {
  SECTION("core schema, top level") {
    std::vector<dspp::ConfigMessage> warnings;
    LoadOptions opts;
    opts.on_warning = [&](const dspp::ConfigMessage& m) { warnings.push_back(m); };
    std::string msg;
    try {
      Config::from_string(R"({"train_batch_size": 8, "gradient_clipp1ng": 1.0})", opts,
                          "ds_config.json");
    } catch (const dspp::Error& e) {
      msg = e.what();
    }
    CHECK(msg ==
          "unknown key 'gradient_clipp1ng' at gradient_clipp1ng in ds_config.json: did you mean "
          "'gradient_clipping'?");
  }
  Loaded l;
  SECTION("nested, adjacent swap") {
    CHECK(l.error(R"({"train_batch_size": 8, "zero_optimization": {"stgae": 2}})") ==
          "unknown key 'stgae' at zero_optimization.stgae in test.json: did you mean "
          "'zero_optimization.stage'?");
  }
  SECTION("case-only difference") {
    CHECK_HAS(l.error(R"({"Train_Batch_Size": 8})"), "did you mean 'train_batch_size'?");
  }
  SECTION("two edits on a long key") {
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "wall_clock_breakdwn_": true})"),
              "did you mean 'wall_clock_breakdown'?");
  }
  SECTION("a misspelled section name") {
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "optimiser": {"type": "adam"}})"),
              "unknown key 'optimiser' at optimiser in test.json: did you mean 'optimizer'?");
  }
  SECTION("short keys allow one edit only") {
    // "amp" (3 letters): one edit is a typo, two are not.
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "amq": {}})"), "did you mean 'amp'?");
    CHECK_NOTHROW(l.load(R"({"train_batch_size": 8, "xmq": {}})"));
    CHECK(l.warned("unknown key 'xmq'"));
  }
}

TEST_CASE("other unknown keys are warnings, kept in the config", "[config]") {
  Loaded l;
  Config c = l.load(R"({"train_batch_size": 8, "_comment": "from a blog post",
                        "my_project_setting": 3, "zero_optimization": {"foo_bar_baz": 1}})");
  CHECK(l.warned("unknown key '_comment' at _comment in test.json is ignored"));
  CHECK(l.warned("unknown key 'my_project_setting'"));
  CHECK(l.warned("unknown key 'foo_bar_baz' at zero_optimization.foo_bar_baz"));
  CHECK(c.warnings().size() == l.warnings.size());
  CHECK(c.has("my_project_setting"));
  CHECK(c.explain().find("my_project_setting = 3  (unknown)") != std::string::npos);

  SECTION("a known key at the wrong level is pointed at") {
    Loaded l2;
    l2.load(R"({"train_batch_size": 8, "round_robin_gradients": true})");
    CHECK(l2.warned("'zero_optimization.round_robin_gradients' is a known key"));
  }
  SECTION("keys starting with '_' are never taken for typos") {
    Loaded l2;
    CHECK_NOTHROW(l2.load(R"({"train_batch_size": 8, "_amp": {}})"));
    CHECK(l2.warned("unknown key '_amp'"));
  }
}

TEST_CASE("strict_config makes every unknown key an error", "[config]") {
  Loaded l;
  CHECK(l.error(R"({"strict_config": true, "train_batch_size": 8, "_comment": "x"})") ==
        "unknown key '_comment' at _comment in test.json: strict_config is true, so unknown keys "
        "are errors");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "zero_optimization": {"foo_bar_baz": 1},
                        "strict_config": true})"),
            "unknown key 'foo_bar_baz' at zero_optimization.foo_bar_baz");
  CHECK_NOTHROW(l.load(R"({"strict_config": true, "train_batch_size": 8})"));
  CHECK_HAS(l.error(R"({"strict_config": "yes", "train_batch_size": 8})"),
            "strict_config: expected true or false, got the string \"yes\"");
}

TEST_CASE("keys inside free-form sections are not checked", "[config]") {
  Loaded l;
  Config c = l.load(R"({"train_batch_size": 8,
                        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betaz": [1, 2]}}})");
  CHECK(l.warnings.empty());
  CHECK(c.get_double("optimizer.params.lr") == Approx(1e-3));
  CHECK(c.get_json("optimizer.params.betaz") == "[1,2]");
}

TEST_CASE("duplicate keys are rejected at any depth", "[config]") {
  Loaded l;
  CHECK(l.error(R"({"train_batch_size": 8, "train_batch_size": 16})") ==
        "duplicate key 'train_batch_size' at train_batch_size in test.json: each key may appear "
        "once per object");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "zero_optimization": {"stage": 1, "stage": 2}})"),
            "duplicate key 'stage' at zero_optimization.stage in test.json");
  // Even inside free-form sections: the second value would silently win.
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "optimizer": {"params": {"lr": 1, "lr": 2}}})"),
            "duplicate key 'lr' at optimizer.params.lr");
}

TEST_CASE("comments and trailing commas are accepted but NaN and bad JSON are not", "[config]") {
  Loaded l;
  Config c = l.load(R"({
    // a line comment
    "train_batch_size": 8, /* a block comment */
    "zero_optimization": {"stage": 2,},
  })");
  CHECK(c.get_int("zero_optimization.stage") == 2);
  CHECK(l.warnings.empty());
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "gradient_clipping": NaN})"), "test.json:1:");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "gradient_clipping": Infinity})"), "invalid JSON");
  CHECK_HAS(l.error("{\n  \"train_batch_size\": 8\n  \"steps_per_print\": 1\n}"), "test.json:3:");
  CHECK_HAS(l.error(R"([1, 2])"), "a DeepSpeed config must be a JSON object");
}

TEST_CASE("integer keys accept integral numbers however written", "[config]") {
  Loaded l;
  Config c = l.load(R"({"train_batch_size": 8, "zero_optimization": {"reduce_bucket_size": 5e8,
                        "stage3_prefetch_bucket_size": 1e4, "stage": 2.0}})");
  CHECK(c.get_int("zero_optimization.reduce_bucket_size") == 500000000);
  CHECK(c.get_int("zero_optimization.stage3_prefetch_bucket_size") == 10000);
  CHECK(c.get_int("zero_optimization.stage") == 2);
  // Stored as integers in the resolved config, as plugins reading it expect.
  CHECK(c.get_json("zero_optimization.reduce_bucket_size") == "500000000");

  CHECK(l.error(R"({"train_batch_size": 8, "zero_optimization": {"stage": 1.5}})") ==
        "zero_optimization.stage: expected an integer, got 1.5 (not a whole number) (in "
        "test.json)");
  CHECK_HAS(l.error(R"({"train_batch_size": 1e30})"), "train_batch_size:");
}

TEST_CASE("a wrong type names the key and what was found", "[config]") {
  Loaded l;
  CHECK(l.error(R"({"train_batch_size": "16"})") ==
        "train_batch_size: expected an integer, got the string \"16\" (in test.json)");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "gradient_clipping": "1.0"})"),
            "gradient_clipping: expected a number, got the string \"1.0\"");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "wall_clock_breakdown": 1})"),
            "wall_clock_breakdown: expected true or false, got 1");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "fp16": {"enabled": "true"}})"),
            "fp16.enabled: expected true or false, got the string \"true\"");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "zero_optimization": 2})"),
            "zero_optimization: expected an object, got 2");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "steps_per_print": "auto"})"),
            "steps_per_print: expected an integer, got the string \"auto\" ('auto' is not "
            "accepted for this key)");
}

TEST_CASE("ranges and string choices", "[config]") {
  Loaded l;
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "zero_optimization": {"stage": 4}})"),
            "zero_optimization.stage: 4 is above the maximum 3");
  CHECK_HAS(l.error(R"({"train_batch_size": 0})"), "train_batch_size: 0 is below the minimum 1");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "gradient_clipping": -1})"),
            "gradient_clipping: -1 is below the minimum 0");
  // Choices compare case-insensitively and resolve to the registered spelling.
  Config c = l.load(R"({"train_batch_size": 8, "communication_data_type": "BF16"})");
  CHECK(c.get_string("communication_data_type") == "bf16");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "communication_data_type": "fp8"})"),
            "communication_data_type: expected one of fp16, bf16, fp32 (any case), got the string "
            "\"fp8\"");
}

TEST_CASE("null is DeepSpeed's None where the default is None", "[config]") {
  Loaded l;
  Config c = l.load(R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": null,
                        "communication_data_type": null})");
  CHECK_FALSE(c.has("communication_data_type"));
  CHECK(c.batch().micro_batch_per_gpu == 8);
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "steps_per_print": null})"),
            "steps_per_print: expected an integer, got null (its default is 10");
}

TEST_CASE("support levels: unsupported is an error, no-effect a warning", "[config]") {
  Loaded l;
  SECTION("unsupported and enabled") {
    CHECK(l.error(R"({"train_batch_size": 8, "amp": {"enabled": true}})") ==
          "amp.enabled = true is not supported by dspp: NVIDIA Apex AMP is not available; use "
          "bf16 (remove the key or set it to false) (in test.json)");
  }
  SECTION("unsupported at its inert value is fine") {
    CHECK_NOTHROW(l.load(R"({"train_batch_size": 8, "amp": {"enabled": false}})"));
    CHECK(l.warnings.empty());
  }
  SECTION("unsupported with no inert value: any presence") {
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "sparse_attention": {"mode": "fixed"}})"),
              "sparse_attention = {\"mode\":\"fixed\"} is not supported by dspp: sparse attention "
              "kernels are not implemented (remove the key)");
  }
  SECTION("no effect: a warning that says so") {
    Config c = l.load(R"({"train_batch_size": 8,
                          "zero_optimization": {"round_robin_gradients": true},
                          "wandb": {"project": "x"}})");
    CHECK(
        l.warned("zero_optimization.round_robin_gradients has no effect in dspp: dspp copies "
                 "offloaded gradients in one pass"));
    CHECK(l.warned("wandb has no effect in dspp: there is no Weights & Biases monitor"));
    CHECK(c.get_bool("zero_optimization.round_robin_gradients"));
  }
  SECTION("no effect at its inert value is silent") {
    l.load(R"({"train_batch_size": 8, "zero_optimization": {"round_robin_gradients": false}})");
    CHECK(l.warnings.empty());
  }
  SECTION("one refused value of a supported key") {
    CHECK_NOTHROW(l.load(
        R"({"train_batch_size": 8, "zero_optimization": {"offload_optimizer": {"device": "cpu"}}})"));
    CHECK(
        l.error(
            R"({"train_batch_size": 8, "zero_optimization": {"offload_optimizer": {"device": "NVMe"}}})") ==
        "zero_optimization.offload_optimizer.device = \"nvme\" is not supported by dspp: NVMe "
        "offload is not implemented (in test.json)");
  }
}

TEST_CASE("deprecated spellings move to the new key with a warning", "[config]") {
  Loaded l;
  SECTION("top-level bfloat16 becomes bf16, children validated there") {
    Config c = l.load(R"({"train_batch_size": 8, "bfloat16": {"enabled": true}})");
    CHECK(c.get_bool("bf16.enabled"));
    CHECK_FALSE(c.has("bfloat16"));
    CHECK(c.source("bf16") == ValueSource::kDeprecated);
    CHECK(c.source("bf16.enabled") == ValueSource::kDeprecated);
    CHECK(
        l.warned("'bfloat16' is deprecated: moved its value {\"enabled\":true} to 'bf16'; write "
                 "'bf16' instead"));
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "bfloat16": {"enabld": true}})"),
              "unknown key 'enabld' at bf16.enabld");
  }
  SECTION("un-prefixed ZeRO-3 names") {
    Config c = l.load(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3,
                          "prefetch_bucket_size": 1e7}})");
    CHECK(c.get_int("zero_optimization.stage3_prefetch_bucket_size") == 10000000);
    CHECK(c.source("zero_optimization.stage3_prefetch_bucket_size") == ValueSource::kDeprecated);
    CHECK(l.warned("'zero_optimization.prefetch_bucket_size' is deprecated"));
  }
  SECTION("stage3_gather_fp16_weights_on_model_save") {
    Config c = l.load(R"({"train_batch_size": 8,
        "zero_optimization": {"stage3_gather_fp16_weights_on_model_save": true}})");
    CHECK(c.get_bool("zero_optimization.stage3_gather_16bit_weights_on_model_save"));
  }
  SECTION("cpu_offload: true means offload_optimizer.device cpu") {
    Config c = l.load(R"({"train_batch_size": 8, "zero_optimization": {"cpu_offload": true}})");
    CHECK(c.get_string("zero_optimization.offload_optimizer.device") == "cpu");
    CHECK_FALSE(c.has("zero_optimization.cpu_offload"));
    CHECK(
        l.warned("moved its value true (as \"cpu\") to "
                 "'zero_optimization.offload_optimizer.device'"));
  }
  SECTION("cpu_offload: false sets nothing") {
    Config c = l.load(R"({"train_batch_size": 8, "zero_optimization": {"cpu_offload": false}})");
    CHECK_FALSE(c.has("zero_optimization.offload_optimizer"));
    CHECK(c.get_string("zero_optimization.offload_optimizer.device") == "none");
    CHECK(l.warned("its value false sets nothing, so it was dropped"));
  }
  SECTION("old and new with the same value: dropped with a warning") {
    Config c = l.load(R"({"train_batch_size": 8, "zero_optimization": {
        "prefetch_bucket_size": 100, "stage3_prefetch_bucket_size": 100}})");
    CHECK(c.get_int("zero_optimization.stage3_prefetch_bucket_size") == 100);
    CHECK(l.warned("repeats 'zero_optimization.stage3_prefetch_bucket_size' with the same value"));
  }
  SECTION("old and new with different values: an error") {
    CHECK(l.error(R"({"train_batch_size": 8, "zero_optimization": {
        "prefetch_bucket_size": 100, "stage3_prefetch_bucket_size": 200}})") ==
          "'zero_optimization.prefetch_bucket_size' (deprecated) is 100 but "
          "'zero_optimization.stage3_prefetch_bucket_size' is 200: both are given with different "
          "values; keep only 'zero_optimization.stage3_prefetch_bucket_size' (in test.json)");
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "bf16": {"enabled": false},
                          "bfloat16": {"enabled": true}})"),
              "'bfloat16' (deprecated) is {\"enabled\":true} but 'bf16' is {\"enabled\":false}");
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "zero_optimization": {"cpu_offload": true,
                          "offload_optimizer": {"device": "none"}}})"),
              "'zero_optimization.cpu_offload' (deprecated) is true (meaning \"cpu\") but "
              "'zero_optimization.offload_optimizer.device' is \"none\"");
  }
  SECTION("a typo of a deprecated spelling is still a typo") {
    CHECK_HAS(l.error(R"({"train_batch_size": 8, "bfloat61": {}})"), "did you mean 'bfloat16'?");
  }
}

TEST_CASE("auto values: host, derived, default, error", "[config]") {
  Loaded l;
  SECTION("filled by the host") {
    l.opts.auto_values = {{"train_micro_batch_size_per_gpu", "4"},
                          {"gradient_accumulation_steps", "2"},
                          {"gradient_clipping", "0.5"},
                          {"optimizer.params.lr", "0.0003"}};
    l.opts.world_size = 2;
    Config c = l.load(R"({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "eps": "auto"}}})");
    CHECK(c.get_int("train_micro_batch_size_per_gpu") == 4);
    CHECK(c.source("train_micro_batch_size_per_gpu") == ValueSource::kAuto);
    CHECK(c.get_double("gradient_clipping") == Approx(0.5));
    CHECK(c.source("gradient_clipping") == ValueSource::kAuto);
    // An unfilled "auto" train_batch_size is micro x gas x dp.
    CHECK(c.get_int("train_batch_size") == 4 * 2 * 2);
    CHECK(c.source("train_batch_size") == ValueSource::kDerived);
    // Free-form plugin sections: host values applied, the rest left for the plugin.
    CHECK(c.get_double("optimizer.params.lr") == Approx(3e-4));
    CHECK(c.source("optimizer.params.lr") == ValueSource::kAuto);
    CHECK(c.get_string("optimizer.params.eps") == "auto");
  }
  SECTION("a host value is checked like a file value") {
    l.opts.auto_values = {{"train_micro_batch_size_per_gpu", "\"4\""}};
    CHECK_HAS(l.error(R"({"train_micro_batch_size_per_gpu": "auto"})"),
              "train_micro_batch_size_per_gpu: expected an integer, got the string \"4\"");
    l.opts.auto_values = {{"train_micro_batch_size_per_gpu", "4 4"}};
    CHECK_HAS(l.error(R"({"train_micro_batch_size_per_gpu": "auto"})"),
              "the host's value for 'auto' is not valid JSON");
  }
  SECTION("unfilled with a default: DeepSpeed's default and a warning") {
    Config c = l.load(R"({"train_batch_size": 8, "gradient_clipping": "auto",
        "zero_optimization": {"stage3_prefetch_bucket_size": "auto", "overlap_comm": "auto"}})");
    CHECK(c.get_double("gradient_clipping") == Approx(1.0));
    CHECK(c.source("gradient_clipping") == ValueSource::kAuto);
    CHECK(c.get_int("zero_optimization.stage3_prefetch_bucket_size") == 50000000);
    CHECK(
        l.warned("gradient_clipping is 'auto' and the host did not fill it; using DeepSpeed's "
                 "default 1.0"));
    // A default of None: the key is left unset.
    CHECK_FALSE(c.has("zero_optimization.overlap_comm"));
    CHECK(l.warned("zero_optimization.overlap_comm is 'auto' and the host did not fill it"));
  }
  SECTION("unfilled without a default: an error naming the key") {
    CHECK(l.error(R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": "auto"})") ==
          "train_micro_batch_size_per_gpu: 'auto' was not filled by the host and has no default "
          "(give it to initialize() in auto_values, or to ds-config as --auto "
          "train_micro_batch_size_per_gpu=VALUE) (in test.json)");
  }
  SECTION("auto train_batch_size with only a micro batch") {
    l.opts.world_size = 4;
    Config c = l.load(R"({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": 2})");
    CHECK(c.batch().train_batch_size == 8);
    CHECK(c.batch().gradient_accumulation_steps == 1);
  }
}

TEST_CASE("fp16 and bf16 both enabled is an error", "[config]") {
  Loaded l;
  CHECK(
      l.error(R"({"train_batch_size": 8, "fp16": {"enabled": true}, "bf16": {"enabled": true}})") ==
      "fp16.enabled and bf16.enabled are both true: pick one precision (DeepSpeed refuses this "
      "too) (in test.json)");
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "fp16": {"enabled": true},
                        "bfloat16": {"enabled": true}})"),
            "fp16.enabled and bf16.enabled are both true");
  CHECK_NOTHROW(l.load(R"({"train_batch_size": 8, "fp16": {"enabled": true},
                           "bf16": {"enabled": false}})"));
  l.opts.auto_values = {{"fp16.enabled", "true"}, {"bf16.enabled", "true"}};
  CHECK_HAS(l.error(R"({"train_batch_size": 8, "fp16": {"enabled": "auto"},
                        "bf16": {"enabled": "auto"}})"),
            "both true");
}

TEST_CASE("plugin sections are validated with the plugin's option schema", "[config]") {
  std::vector<KeySpec> adam = {
      {.path = "lr",
       .type = DSPP_VALUE_FLOAT,
       .default_json = "0.001",
       .min = 0.0,
       .allow_auto = true},
      {.path = "betas", .type = DSPP_VALUE_ARRAY, .default_json = "[0.9, 0.999]"},
      {.path = "weight_decay", .type = DSPP_VALUE_FLOAT, .default_json = "0.0"},
  };
  Loaded l;
  std::vector<std::pair<std::string, std::string>> asked;
  l.opts.plugin_options = [&](std::string_view kind,
                              std::string_view name) -> const std::vector<KeySpec>* {
    asked.emplace_back(kind, name);
    return kind == "optimizer" && name == "adamw" ? &adam : nullptr;
  };
  SECTION("valid params; defaults come from the plugin") {
    Config c = l.load(R"({"train_batch_size": 8,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
        "scheduler": {"type": "WarmupLR", "params": {"anything": 1}}})");
    CHECK(c.get_double("optimizer.params.lr") == Approx(1e-4));
    CHECK(c.get_double("optimizer.params.weight_decay") == 0.0);
    CHECK(c.get_json("optimizer.params.betas") == "[0.9,0.999]");
    CHECK(asked == std::vector<std::pair<std::string, std::string>>{{"optimizer", "adamw"},
                                                                    {"scheduler", "warmuplr"}});
    // The scheduler has no schema here: its params stay free-form.
    CHECK(c.get_int("scheduler.params.anything") == 1);
    CHECK(c.explain().find("optimizer.params.weight_decay = 0.0  (default)") != std::string::npos);
  }
  SECTION("a typo in the params") {
    CHECK(l.error(R"({"train_batch_size": 8,
        "optimizer": {"type": "adamw", "params": {"weight_decy": 0.1}}})") ==
          "unknown key 'weight_decy' at optimizer.params.weight_decy in test.json: did you mean "
          "'optimizer.params.weight_decay'?");
  }
  SECTION("a wrong type in the params") {
    CHECK_HAS(l.error(R"({"train_batch_size": 8,
        "optimizer": {"type": "adamw", "params": {"lr": "0.1"}}})"),
              "optimizer.params.lr: expected a number, got the string \"0.1\"");
  }
  SECTION("auto in the params") {
    l.opts.auto_values = {{"optimizer.params.lr", "2e-5"}};
    Config c = l.load(R"({"train_batch_size": 8,
        "optimizer": {"type": "adamw", "params": {"lr": "auto"}}})");
    CHECK(c.get_double("optimizer.params.lr") == Approx(2e-5));
  }
}

TEST_CASE("getters use the schema default and name the key otherwise", "[config]") {
  Loaded l;
  Config c = l.load(R"({"train_batch_size": 8, "zero_optimization": {"stage": 2}})");
  CHECK(c.get_int("steps_per_print") == 10);
  CHECK(c.source("steps_per_print") == ValueSource::kDefault);
  CHECK_FALSE(c.has("steps_per_print"));
  CHECK(c.get_int("zero_optimization.stage") == 2);
  CHECK(c.source("zero_optimization.stage") == ValueSource::kFile);
  CHECK(c.get_bool("wall_clock_breakdown") == false);
  CHECK(c.get_double("gradient_clipping") == Approx(1.0));
  CHECK(c.get_double("train_batch_size") == 8.0);  // an integer reads as a number too
  CHECK(c.get_json("zero_optimization") == R"({"stage":2})");

  auto err = [&](auto f) -> std::string {
    try {
      f();
    } catch (const dspp::Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  CHECK(err([&] { c.get_string("optimizer.type"); }) ==
        "config key 'optimizer.type' is not set in test.json and has no default");
  CHECK(err([&] { c.get_int("no_such_key"); }) ==
        "config key 'no_such_key' is not set in test.json and is not a known key");
  CHECK(err([&] { c.get_bool("zero_optimization.stage"); }) ==
        "zero_optimization.stage: expected true or false, got 2");
}
