// fp16 loss scaling against DeepSpeed's own classes: scripted overflow sequences replayed step by
// step and compared exactly (every scale is a power of two) with the values DeepSpeed 0.19.8's
// DynamicLossScaler and FP16_Optimizer produced (tests/fixtures/loss_scaler_reference.inc, from
// scripts/precision/loss_scaler_reference.py).
#include <dspp/config.h>
#include <dspp/error.h>

#include <cmath>
#include <string>
#include <vector>

#include "catch.h"
#include "precision/loss_scaler.h"

namespace {

using dspp::precision::DynamicLossScaleArgs;
using dspp::precision::Fp16Path;
using dspp::precision::LossScaler;
using dspp::precision::LossScalerState;

struct Row {
  double cur_scale;
  int64_t cur_hysteresis;
  int64_t last_overflow_iter;
  int64_t cur_iter;
};

struct LossScalerRef {
  const char* name;
  const char* path;  // "zero" (DynamicLossScaler) or "fp16_optimizer" (FP16_Optimizer)
  double init_scale;
  int64_t scale_window;
  double min_scale;
  int64_t delayed_shift;
  bool consecutive_hysteresis;
  bool raise_error_at_min_scale;
  const char* overflows;
  int throws_at;
  std::vector<Row> rows;
};

const LossScalerRef kRefs[] = {
#include "fixtures/loss_scaler_reference.inc"
};

dspp::Config load(const std::string& json) {
  dspp::LoadOptions o;
  o.on_warning = [](const dspp::ConfigMessage&) {};
  return dspp::Config::from_string(json, o);
}

// The fp16 block that selects a case's arguments (cases with the error on, as the config has
// no key to turn it off).
std::string fp16_block(const LossScalerRef& r) {
  return R"({"train_batch_size": 8, "fp16": {"enabled": true, "initial_scale_power": )" +
         std::to_string(std::ilogb(r.init_scale)) + R"(, "loss_scale_window": )" +
         std::to_string(r.scale_window) + R"(, "min_loss_scale": )" +
         std::to_string(static_cast<int64_t>(r.min_scale)) + R"(, "hysteresis": )" +
         std::to_string(r.delayed_shift) + R"(, "consecutive_hysteresis": )" +
         (r.consecutive_hysteresis ? "true" : "false") + "}}";
}

// Replays a case; returns how many steps matched before a difference (all: rows.size()).
void replay(const LossScalerRef& r, LossScaler s) {
  REQUIRE(s.dynamic());
  CHECK(s.loss_scale() == r.init_scale);
  const size_t steps = std::string(r.overflows).size();
  for (size_t i = 0; i < steps; ++i) {
    INFO("step " << i);
    const bool overflow = r.overflows[i] == '1';
    if (static_cast<int>(i) == r.throws_at) {
      const LossScalerState before = s.state();
      CHECK_THROWS_AS(s.update_scale(overflow), dspp::Error);
      CHECK(s.state() == before);  // DeepSpeed raises before touching its state
      CHECK(i == r.rows.size());
      return;
    }
    REQUIRE(i < r.rows.size());
    s.update_scale(overflow);
    const Row& want = r.rows[i];
    CHECK(s.loss_scale() == want.cur_scale);
    CHECK(s.state().cur_scale == want.cur_scale);
    CHECK(s.state().cur_hysteresis == want.cur_hysteresis);
    CHECK(s.state().last_overflow_iter == want.last_overflow_iter);
    CHECK(s.state().cur_iter == want.cur_iter);
  }
  CHECK(r.throws_at == -1);
}

}  // namespace

TEST_CASE("loss scaler: DeepSpeed's sequences, step by step", "[loss_scaler]") {
  REQUIRE(std::size(kRefs) >= 8);
  for (const LossScalerRef& r : kRefs) {
    INFO(r.name);
    const bool zero = std::string(r.path) == "zero";
    if (zero) {
      DynamicLossScaleArgs a;
      a.init_scale = r.init_scale;
      a.scale_window = r.scale_window;
      a.min_scale = r.min_scale;
      a.delayed_shift = r.delayed_shift;
      a.consecutive_hysteresis = r.consecutive_hysteresis;
      a.raise_error_at_min_scale = r.raise_error_at_min_scale;
      replay(r, LossScaler(a));
    }
    // Through the fp16 block, where the config can express the case.
    const bool expressible =
        r.raise_error_at_min_scale && r.min_scale >= 1 && r.min_scale == std::floor(r.min_scale);
    if (expressible) {
      replay(r, LossScaler::from_config(load(fp16_block(r)),
                                        zero ? Fp16Path::kZero : Fp16Path::kFp16Optimizer));
    }
  }
}

TEST_CASE("loss scaler: from the config as DeepSpeed picks it", "[loss_scaler]") {
  SECTION("defaults: dynamic from 2^16, window 1000, hysteresis 2, floor 1") {
    const LossScaler s =
        LossScaler::from_config(load(R"({"train_batch_size": 8, "fp16": {"enabled": true}})"));
    CHECK(s.dynamic());
    CHECK(s.loss_scale() == 65536.0);
    CHECK(s.args().scale_window == 1000);
    CHECK(s.args().delayed_shift == 2);
    CHECK(s.args().min_scale == 1.0);
    CHECK_FALSE(s.args().consecutive_hysteresis);
    CHECK(s.args().raise_error_at_min_scale);
    CHECK(s.state() == LossScalerState{65536.0, 0, -1, 2});
  }
  SECTION("loss_scale > 0 is static; fp32 and bf16 get a static 1") {
    LossScaler s = LossScaler::from_config(
        load(R"({"train_batch_size": 8, "fp16": {"enabled": true, "loss_scale": 128}})"));
    CHECK_FALSE(s.dynamic());
    for (int i = 0; i < 5; ++i) s.update_scale(true);
    CHECK(s.loss_scale() == 128.0);
    CHECK_FALSE(LossScaler::from_config(load(R"({"train_batch_size": 8})")).dynamic());
    CHECK(LossScaler::from_config(load(R"({"train_batch_size": 8})")).loss_scale() == 1.0);
    CHECK(LossScaler::from_config(load(R"({"train_batch_size": 8, "bf16": {"enabled": true}})"))
              .loss_scale() == 1.0);
  }
  SECTION("the first raise comes after window + 1 clean steps (DeepSpeed 0.19)") {
    LossScaler s = LossScaler::from_config(load(
        R"({"train_batch_size": 8, "fp16": {"enabled": true, "initial_scale_power": 4, "loss_scale_window": 3}})"));
    for (int i = 0; i < 3; ++i) s.update_scale(false);
    CHECK(s.loss_scale() == 16.0);
    s.update_scale(false);
    CHECK(s.loss_scale() == 32.0);
  }
  SECTION("bad arguments are refused") {
    DynamicLossScaleArgs a;
    a.scale_window = 0;
    CHECK_THROWS_AS(LossScaler(a), dspp::Error);
    a.scale_window = 1;
    a.min_scale = 0;
    CHECK_THROWS_AS(LossScaler(a), dspp::Error);
  }
}

TEST_CASE("loss scaler: a checkpoint's state resumes the same sequence", "[loss_scaler]") {
  const LossScalerRef& r = kRefs[0];
  DynamicLossScaleArgs a;
  a.init_scale = r.init_scale;
  a.scale_window = r.scale_window;
  a.delayed_shift = r.delayed_shift;
  LossScaler first(a);
  const std::string flags = r.overflows;
  for (size_t i = 0; i < 17; ++i) first.update_scale(flags[i] == '1');
  LossScaler resumed(a);
  resumed.load_state(first.state());
  for (size_t i = 17; i < flags.size(); ++i) {
    INFO("step " << i);
    resumed.update_scale(flags[i] == '1');
    CHECK(resumed.loss_scale() == r.rows[i].cur_scale);
    CHECK(resumed.state().cur_hysteresis == r.rows[i].cur_hysteresis);
  }
}
