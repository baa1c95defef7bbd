// The ways a config arrives (file, JSON text, base64, in-memory document, auto-detected) and what
// a loaded Config hands out: getters, explain(), to_json(), plugin views, copies.
#include "catch.h"
#include "test_util.h"

#include <unistd.h>

#include <dspp/config.h>

// KeySpecs are written with designated initializers; GCC 12 warns about every member left out,
// which is the point of them (the rest keep their defaults).
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <dspp/config_rapidjson.h>

#include <rapidjson/document.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

using dspp::Config;
using dspp::LoadOptions;

namespace {

LoadOptions quiet() {
  LoadOptions o;
  o.on_warning = [](const dspp::ConfigMessage&) {};
  return o;
}

std::string base64(const std::string& in, bool url_safe) {
  const char* alphabet = url_safe
                             ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                             : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += alphabet[(n >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t n = uint8_t(in[i]) << 16;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += alphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

struct TempFile {
  std::filesystem::path path;
  explicit TempFile(const std::string& text) {
    path = std::filesystem::temp_directory_path() /
           ("dspp_test_config_" + std::to_string(::getpid()) + "_" +
            std::to_string(reinterpret_cast<uintptr_t>(this)) + ".json");
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

// The ">>??" encodes to a '+' in standard base64 and a '-' in the URL-safe alphabet, so the two
// encodings differ and both decoders are exercised.
const std::string kJson = R"({"train_batch_size": 16, "optimizer": {"type": "x>>??"}})";

}  // namespace

TEST_CASE("load: from a file, with the path in messages", "[config]") {
  TempFile f(R"({"train_batch_size": 16})");
  Config c = Config::from_file(f.path.string(), quiet());
  CHECK(c.origin() == f.path.string());
  CHECK(c.batch().train_batch_size == 16);
  Config d = Config::load(f.path.string(), quiet());
  CHECK(d.origin() == f.path.string());

  TempFile bad(R"({"train_batch_size": "16"})");
  CHECK(error_of([&] { Config::load(bad.path.string(), quiet()); }) ==
        "train_batch_size: expected an integer, got the string \"16\" (in " + bad.path.string() +
            ")");
  std::string missing = "/nonexistent/dir/ds_config.json";
  try {
    Config::from_file(missing, quiet());
    FAIL("no error");
  } catch (const dspp::Error& e) {
    CHECK(e.code() == dspp::Errc::kIo);
    CHECK(std::string(e.what()).find("cannot read config file '" + missing + "'") == 0);
  }
}

TEST_CASE("load: auto-detects file, JSON text and base64", "[config]") {
  Config json = Config::load(kJson, quiet());
  CHECK(json.origin() == "<string>");
  CHECK(json.get_string("optimizer.type") == "x>>??");

  std::string std_b64 = base64(kJson, false);
  std::string url_b64 = base64(kJson, true);
  REQUIRE(std_b64 != url_b64);  // the test string really uses both alphabets' differing digits
  for (const std::string& b64 : {std_b64, url_b64}) {
    Config c = Config::load(b64, quiet());
    CHECK(c.origin() == "<base64 config>");
    CHECK(c.batch().train_batch_size == 16);
    CHECK(c.get_string("optimizer.type") == "x>>??");
  }
  CHECK(Config::from_base64(std_b64, quiet()).batch().train_batch_size == 16);
  // Unpadded and line-wrapped forms decode too.
  std::string unpadded = std_b64;
  while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
  CHECK(Config::from_base64(unpadded.substr(0, 10) + "\n" + unpadded.substr(10), quiet())
            .batch()
            .train_batch_size == 16);

  CHECK(error_of([] { Config::load("not a config at all!", quiet()); }) ==
        "config is neither a readable file, JSON, nor base64 JSON: 'not a config at all!'");
  CHECK(error_of([] { Config::load("configs/missing.json", quiet()); }) ==
        "config is neither a readable file, JSON, nor base64 JSON: 'configs/missing.json' (no "
        "such file)");
  // Valid base64 of something that is not JSON.
  CHECK(error_of([] {
          Config::load(base64("hello world", false), quiet());
        }).find("config is neither a readable file, JSON, nor base64 JSON") == 0);
  std::string long_input(500, '#');
  CHECK(error_of([&] { Config::load(long_input, quiet()); }).size() < 200);
  CHECK(error_of([] { Config::from_base64("!!!", quiet()); }) ==
        "config is not valid base64: '!!!'");
  // Base64 content goes through every rule: errors name the base64 origin.
  CHECK(error_of([] {
          Config::load(base64(R"({"train_batch_size": 8, "train_batch_size": 8})", false), quiet());
        }).find("in <base64 config>") != std::string::npos);
}

TEST_CASE("load: from an in-memory RapidJSON document", "[config]") {
  rapidjson::Document doc;
  doc.Parse(R"({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 3})");
  REQUIRE(!doc.HasParseError());
  Config c = Config::from_document(doc, quiet());
  CHECK(c.origin() == "<document>");
  CHECK(c.batch().train_batch_size == 6);

  // Built by hand, with a duplicate key the DOM API allows: still refused.
  rapidjson::Document dup;
  dup.SetObject();
  dup.AddMember("train_batch_size", 8, dup.GetAllocator());
  dup.AddMember("train_batch_size", 8, dup.GetAllocator());
  CHECK(error_of([&] {
          Config::from_document(dup, quiet(), "host doc");
        }).find("duplicate key 'train_batch_size' at train_batch_size in host doc") == 0);

  rapidjson::Document nan;
  nan.SetObject();
  nan.AddMember("gradient_clipping", std::numeric_limits<double>::quiet_NaN(), nan.GetAllocator());
  CHECK(error_of([&] { Config::from_document(nan, quiet()); }).find("NaN") != std::string::npos);
}

TEST_CASE("to_json is the resolved config", "[config]") {
  Config c = Config::from_string(
      R"({"train_batch_size": 8, /* c */ "train_micro_batch_size_per_gpu": 2})", quiet());
  rapidjson::Document out;
  out.Parse(c.to_json().c_str());
  REQUIRE(!out.HasParseError());
  CHECK(out["train_batch_size"].GetInt64() == 8);
  CHECK(out["train_micro_batch_size_per_gpu"].GetInt64() == 2);
  CHECK(out["gradient_accumulation_steps"].GetInt64() == 4);  // 8 // 2 // 1
  // The output loads back to the same triple.
  CHECK(Config::from_string(c.to_json(), quiet()).batch().gradient_accumulation_steps == 4);
}

TEST_CASE("explain: file, default, auto, derived, deprecated, unknown", "[config]") {
  dspp::ConfigSchema s;
  s.add({.path = "train_batch_size", .type = DSPP_VALUE_INT, .allow_auto = true});
  s.add({.path = "train_micro_batch_size_per_gpu", .type = DSPP_VALUE_INT, .allow_auto = true});
  s.add({.path = "gradient_accumulation_steps", .type = DSPP_VALUE_INT});
  s.add({.path = "steps_per_print", .type = DSPP_VALUE_INT, .default_json = "10"});
  s.add({.path = "fp16", .type = DSPP_VALUE_OBJECT, .default_json = "{}"});
  s.add({.path = "fp16.enabled", .type = DSPP_VALUE_BOOL, .default_json = "false"});
  s.add({.path = "fp16.loss_scale", .type = DSPP_VALUE_FLOAT, .default_json = "0.0"});
  s.add({.path = "optimizer", .type = DSPP_VALUE_OBJECT});
  s.add({.path = "optimizer.type", .type = DSPP_VALUE_STRING});
  s.add({.path = "zero_optimization", .type = DSPP_VALUE_OBJECT, .default_json = "{}"});
  s.add({.path = "zero_optimization.stage", .type = DSPP_VALUE_INT, .default_json = "0"});
  s.add({.path = "zero_optimization.prefetch",
         .type = DSPP_VALUE_INT,
         .deprecated_for = "zero_optimization.stage3_prefetch"});
  s.add({.path = "zero_optimization.stage3_prefetch", .type = DSPP_VALUE_INT, .default_json = "5"});
  LoadOptions o = quiet();
  o.schema = &s;
  o.auto_values = {{"train_micro_batch_size_per_gpu", "2"}};
  Config c =
      Config::from_string(R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": "auto",
      "zero_optimization": {"prefetch": 7}, "_note": "x"})",
                          o);
  const std::string expected =
      // An absent feature with an "enabled" switch shows only the switch.
      "fp16.enabled = false  (default)\n"
      "gradient_accumulation_steps = 4  (derived)\n"
      // An absent object whose default is None shows as one line.
      "optimizer = (not set)  (default)\n"
      "steps_per_print = 10  (default)\n"
      "train_batch_size = 8  (file)\n"
      "train_micro_batch_size_per_gpu = 2  (auto)\n"
      "zero_optimization.stage = 0  (default)\n"
      "zero_optimization.stage3_prefetch = 7  (deprecated)\n"
      "_note = \"x\"  (unknown)\n";
  CHECK(c.explain() == expected);
}

TEST_CASE("plugin views read the resolved config relative to their section", "[config]") {
  LoadOptions o = quiet();
  o.auto_values = {{"optimizer.params.lr", "0.5"}};
  Config c = Config::from_string(R"({"train_batch_size": 8, "optimizer": {"type": "AdamW",
      "params": {"lr": "auto", "betas": [0.9, 0.95], "amsgrad": true, "steps": 5e3,
                 "name": "a long name"}}})",
                                 o);
  const dspp_config_view* v = c.view("optimizer.params");
  REQUIRE(v != nullptr);
  CHECK(v->struct_size == sizeof(dspp_config_view));
  CHECK(c.view("optimizer.params") == v);  // one view per section, stable

  CHECK(v->has(v->self, "lr") == 1);
  CHECK(v->has(v->self, "eps") == 0);
  double lr = 0;
  CHECK(v->get_double(v->self, "lr", &lr) == DSPP_OK);
  CHECK(lr == 0.5);
  int32_t amsgrad = 0;
  CHECK(v->get_bool(v->self, "amsgrad", &amsgrad) == DSPP_OK);
  CHECK(amsgrad == 1);
  int64_t steps = 0;
  CHECK(v->get_int(v->self, "steps", &steps) == DSPP_OK);  // 5e3 is a whole number
  CHECK(steps == 5000);
  CHECK(v->get_int(v->self, "lr", &steps) == DSPP_ERR_INVALID_ARGUMENT);
  CHECK(v->get_bool(v->self, "missing", &amsgrad) == DSPP_ERR_INVALID_ARGUMENT);

  char buf[8];
  size_t len = 0;
  CHECK(v->get_string(v->self, "name", buf, sizeof buf, &len) == DSPP_OK);
  CHECK(len == 11);
  CHECK(std::string(buf) == "a long ");  // truncated, NUL-terminated
  char big[64];
  CHECK(v->get_json(v->self, "betas", big, sizeof big, &len) == DSPP_OK);
  CHECK(std::string(big) == "[0.9,0.95]");
  CHECK(v->get_string(v->self, "betas", big, sizeof big, &len) == DSPP_ERR_INVALID_ARGUMENT);

  const dspp_config_view* root = c.view("");
  int64_t tbs = 0;
  CHECK(root->get_int(root->self, "train_batch_size", &tbs) == DSPP_OK);
  CHECK(tbs == 8);
  CHECK(root->get_string(root->self, "optimizer.type", big, sizeof big, &len) == DSPP_OK);
  CHECK(std::string(big) == "AdamW");
}

TEST_CASE("copies and moves keep views valid", "[config]") {
  Config a = Config::from_string(R"({"train_batch_size": 8, "optimizer": {"params": {"lr": 1}}})",
                                 quiet());
  const dspp_config_view* va = a.view("optimizer.params");
  Config moved = std::move(a);
  double lr = 0;
  CHECK(va->get_double(va->self, "lr", &lr) == DSPP_OK);  // same Impl after a move
  CHECK(lr == 1.0);
  CHECK(moved.view("optimizer.params") == va);

  Config copy = moved;
  const dspp_config_view* vc = copy.view("optimizer.params");
  CHECK(vc != va);                     // a copy hands out its own views
  { Config gone = std::move(moved); }  // the original's views die with it; the copy's live on
  lr = 0;
  CHECK(vc->get_double(vc->self, "lr", &lr) == DSPP_OK);
  CHECK(lr == 1.0);
  CHECK(copy.batch().train_batch_size == 8);

  Config assigned;
  assigned = copy;
  CHECK(assigned.get_int("train_batch_size") == 8);
  CHECK(assigned.view("optimizer.params") != vc);
}
