// DeepSpeed's batch rule, row by row. Expected values are computed here by hand with DeepSpeed's
// formulas (runtime/config.py, _set_batch_related_parameters then _batch_assertion).
#include "catch.h"

#include <dspp/config.h>

#include <optional>
#include <string>

using dspp::BatchTriple;
using dspp::Config;
using dspp::LoadOptions;
using dspp::resolve_batch;

namespace {

const std::optional<int64_t> none = std::nullopt;

std::string batch_error(std::optional<int64_t> train, std::optional<int64_t> micro,
                        std::optional<int64_t> gas, int64_t dp, const std::string& source) {
  try {
    resolve_batch(train, micro, gas, dp, source);
  } catch (const dspp::Error& e) {
    CHECK(e.code() == dspp::Errc::kConfig);
    return e.what();
  }
  return "<no error>";
}

#define CHECK_HAS(haystack, needle)                \
  do {                                             \
    const std::string hay_ = (haystack);           \
    INFO("text: " << hay_);                        \
    CHECK(hay_.find(needle) != std::string::npos); \
  } while (0)

void check_triple(const BatchTriple& t, int64_t train, int64_t micro, int64_t gas) {
  CHECK(t.train_batch_size == train);
  CHECK(t.micro_batch_per_gpu == micro);
  CHECK(t.gradient_accumulation_steps == gas);
}

}  // namespace

TEST_CASE("batch rule: all three given are only checked", "[config][batch]") {
  check_triple(resolve_batch(32, 4, 2, 4, "src"), 32, 4, 2);
  // 4 * 4 * 4 = 64 != 32
  std::string msg = batch_error(32, 4, 4, 4, "world size 4 / (tp 1 × pp 1 × sp 1) = 4");
  CHECK(msg ==
        "train_batch_size 32 != train_micro_batch_size_per_gpu 4 * gradient_accumulation_steps 4 "
        "* dp world size 4 = 64 (dp world size 4: world size 4 / (tp 1 × pp 1 × sp 1) = 4)");
}

TEST_CASE("batch rule: train + micro give gas = train // micro // dp", "[config][batch]") {
  // 32 // 4 // 4 = 2
  check_triple(resolve_batch(32, 4, none, 4, "src"), 32, 4, 2);
  // 10 // 3 // 1 = 3, and 3 * 3 * 1 = 9 != 10: DeepSpeed fails its assertion too.
  std::string msg = batch_error(10, 3, none, 1, "single process");
  CHECK(msg ==
        "train_batch_size 10 != train_micro_batch_size_per_gpu 3 * gradient_accumulation_steps 3 "
        "* dp world size 1 = 9 (dp world size 1: single process); derived by floor division: "
        "gradient_accumulation_steps = 10 // 3 // 1 = 3");
  // 4 // 8 // 1 = 0: not > 0.
  CHECK_HAS(batch_error(4, 8, none, 1, "single process"),
            "gradient_accumulation_steps is 0: it must be > 0 (dp world size 1: single process)");
  // 48 // 4 // 8 = 1, then 4 * 1 * 8 = 32 != 48.
  CHECK_HAS(batch_error(48, 4, none, 8, "src"),
            "48 != train_micro_batch_size_per_gpu 4 * "
            "gradient_accumulation_steps 1 * dp world size 8");
}

TEST_CASE("batch rule: train + gas give micro = train // dp // gas", "[config][batch]") {
  // 32 // 4 // 2 = 4
  check_triple(resolve_batch(32, none, 2, 4, "src"), 32, 4, 2);
  // 30 // 2 // 4 = 3, and 3 * 4 * 2 = 24 != 30.
  CHECK_HAS(batch_error(30, none, 4, 2, "src"),
            "train_batch_size 30 != train_micro_batch_size_per_gpu 3 * gradient_accumulation_steps "
            "4 * dp world size 2 = 24 (dp world size 2: src); derived by floor division: "
            "train_micro_batch_size_per_gpu = 30 // 2 // 4 = 3");
  // 8 // 4 // 4 = 0: not > 0.
  CHECK_HAS(batch_error(8, none, 4, 4, "src"), "train_micro_batch_size_per_gpu is 0");
}

TEST_CASE("batch rule: micro + gas give train = micro * gas * dp", "[config][batch]") {
  check_triple(resolve_batch(none, 4, 3, 2, "src"), 4 * 3 * 2, 4, 3);
  check_triple(resolve_batch(none, 1, 1, 1, "src"), 1, 1, 1);
}

TEST_CASE("batch rule: train only gives gas 1, micro = train // dp", "[config][batch]") {
  check_triple(resolve_batch(16, none, none, 4, "src"), 16, 4, 1);
  // 10 // 4 = 2, and 2 * 1 * 4 = 8 != 10.
  CHECK_HAS(batch_error(10, none, none, 4, "src"),
            "train_batch_size 10 != train_micro_batch_size_per_gpu 2 * gradient_accumulation_steps "
            "1 * dp world size 4 = 8");
  // 2 // 4 = 0.
  CHECK_HAS(batch_error(2, none, none, 4, "src"), "train_micro_batch_size_per_gpu is 0");
}

TEST_CASE("batch rule: micro only gives gas 1, train = micro * dp", "[config][batch]") {
  check_triple(resolve_batch(none, 4, none, 8, "src"), 32, 4, 1);
}

TEST_CASE("batch rule: only gas, or nothing, is an error", "[config][batch]") {
  CHECK(batch_error(none, none, 4, 2, "src") ==
        "either train_batch_size or train_micro_batch_size_per_gpu must be given "
        "(gradient_accumulation_steps alone does not set the batch) (dp world size 2: src)");
  CHECK(batch_error(none, none, none, 1, "single process") ==
        "either train_batch_size or train_micro_batch_size_per_gpu must be given (dp world size "
        "1: single process)");
}

TEST_CASE("batch rule: given values must be positive", "[config][batch]") {
  CHECK(batch_error(0, 4, none, 1, "src") ==
        "train_batch_size is 0: it must be > 0 (dp world size 1: src)");
  CHECK_HAS(batch_error(8, 0, none, 1, "src"), "train_micro_batch_size_per_gpu is 0");
  CHECK_HAS(batch_error(8, none, -1, 1, "src"), "gradient_accumulation_steps is -1");
}

TEST_CASE("the dp size is world / (tp * pp * sp) and messages say where it came from",
          "[config][batch]") {
  auto load = [](const std::string& json, LoadOptions opts) {
    opts.on_warning = [](const dspp::ConfigMessage&) {};
    return Config::from_string(json, opts, "ds.json");
  };
  auto error = [&](const std::string& json, LoadOptions opts) -> std::string {
    try {
      load(json, opts);
    } catch (const dspp::Error& e) {
      return e.what();
    }
    return "<no error>";
  };

  SECTION("single process") {
    Config c =
        load(R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2})", {});
    CHECK(c.batch().train_batch_size == 8);
    CHECK(c.batch().dp_world_size == 1);
    CHECK(c.batch().dp_source == "single process");
    CHECK(c.get_int("train_batch_size") == 8);
    CHECK(c.source("train_batch_size") == dspp::ValueSource::kDerived);
    CHECK(c.source("train_micro_batch_size_per_gpu") == dspp::ValueSource::kFile);
  }
  SECTION("world 8, tp 2: dp 4") {
    LoadOptions o;
    o.world_size = 8;
    o.world_size_source = "WORLD_SIZE";
    o.tp_size = 2;
    Config c = load(R"({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4})", o);
    // 64 // 4 // 4 = 4
    CHECK(c.batch().gradient_accumulation_steps == 4);
    CHECK(c.batch().dp_world_size == 4);
    CHECK(c.batch().dp_source == "world size 8 (WORLD_SIZE) / (tp 2 × pp 1 × sp 1) = 4");
    CHECK(c.get_int("gradient_accumulation_steps") == 4);
    CHECK(c.source("gradient_accumulation_steps") == dspp::ValueSource::kDerived);
  }
  SECTION("world 16, tp 2, pp 2, sp 2: dp 2, mismatch names it") {
    LoadOptions o;
    o.world_size = 16;
    o.tp_size = 2;
    o.pp_size = 2;
    o.sp_size = 2;
    std::string msg = error(
        R"({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4,
            "gradient_accumulation_steps": 2})",
        o);
    CHECK(msg ==
          "train_batch_size 32 != train_micro_batch_size_per_gpu 4 * gradient_accumulation_steps "
          "2 * dp world size 2 = 16 (dp world size 2: world size 16 / (tp 2 × pp 2 × sp 2) = 2) "
          "(in ds.json)");
  }
  SECTION("world not divisible by the model-parallel sizes") {
    LoadOptions o;
    o.world_size = 6;
    o.tp_size = 4;
    CHECK(error(R"({"train_batch_size": 8})", o) ==
          "world size 6 is not divisible by tp 4 × pp 1 × sp 1 = 4: no whole data-parallel size "
          "(in ds.json)");
  }
  SECTION("no batch keys at all") {
    CHECK(error("{}", {}) ==
          "either train_batch_size or train_micro_batch_size_per_gpu must be given (dp world size "
          "1: single process) (in ds.json)");
  }
}
