// Mixed precision, in one process: the ZeRO stages' rounding (plugins/zero/common/rounding.h)
// against the compiler's own fp16 conversion and an exhaustive bf16 rule, and the engine's fp16
// step against a float64 reference that applies DeepSpeed's rules itself: gradients of the
// scaled loss rounded to fp16, an overflow (an inf) skips the step and lowers the scale, otherwise
// unscale and clip in one factor (clip on the unscaled norm), SGD on the fp32 master, and the
// module sees the master rounded to fp16.
#include <dspp/initialize.h>
#include <dspp/models.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../plugins/zero/common/rounding.h"
#include "catch.h"

namespace {

namespace zc = dspp::zero_common;

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The nearest bf16 by the definition: the two bf16 neighbours of x (truncation and the next one
// up in magnitude), the closer one in float64, ties to the even mantissa.
float bf16_by_definition(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const uint32_t lo = b & 0xffff0000u, hi = lo + 0x10000u;
  const double dlo = std::abs(static_cast<double>(x) - from_bits(lo));
  // Past the largest finite bf16 the upper neighbour is inf, which IEEE rounding treats as 2^128
  // (the next value with an unbounded exponent).
  const double up = std::isinf(from_bits(hi)) ? std::copysign(std::ldexp(1.0, 128), x)
                                              : static_cast<double>(from_bits(hi));
  const double dhi = std::abs(up - x);
  if (dlo < dhi) return from_bits(lo);
  if (dhi < dlo) return from_bits(hi);
  return ((lo >> 16) & 1u) ? from_bits(hi) : from_bits(lo);
}

}  // namespace

TEST_CASE("fp16 rounding equals the compiler's float -> _Float16 conversion (ties to even)") {
  std::mt19937 rng(1);
  int64_t checked = 0;
  auto check = [&](float x) {
    const float want = static_cast<float>(static_cast<_Float16>(x));
    const float got = zc::round_fp16(x);
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    INFO("x = " << x << " (bits " << std::hex << bits << ")");
    if (std::isnan(want)) {
      REQUIRE(std::isnan(got));
    } else {
      REQUIRE(got == want);
      REQUIRE(std::signbit(got) == std::signbit(want));
    }
    ++checked;
  };
  // Every float whose exponent fp16 can reach (subnormals, normals, the overflow edge), with
  // random low bits; then fully random bit patterns (NaN, inf, huge, tiny).
  for (int e = 90; e <= 160; ++e) {
    for (int k = 0; k < 20000; ++k) {
      const uint32_t bits = (static_cast<uint32_t>(e) << 23) | (rng() & 0x7fffffu);
      check(from_bits(bits));
      check(from_bits(bits | 0x80000000u));
    }
  }
  for (int k = 0; k < 200000; ++k) check(from_bits(static_cast<uint32_t>(rng())));
  for (float x : {65504.0f, 65519.99f, 65520.0f, 1e9f, 6.1035156e-05f, 5.9604645e-08f,
                  2.9802322e-08f, 2.9802326e-08f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN}) {
    check(x);
  }
  CHECK(checked > 3000000);
  CHECK(std::isinf(zc::round_fp16(65520.0f)));  // DeepSpeed's fp16 gradient overflows here
  CHECK(zc::round_fp16(65519.0f) == 65504.0f);
}

TEST_CASE("bf16 rounding is round-to-nearest-even on every 2^16-th float and random ones") {
  std::mt19937 rng(2);
  for (uint64_t hi = 0; hi < 0x10000u; ++hi) {
    for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      const float x = from_bits(static_cast<uint32_t>(hi << 16) | low);
      if (!std::isfinite(x)) continue;
      REQUIRE(zc::round_bf16(x) == bf16_by_definition(x));
    }
  }
  for (int k = 0; k < 1000000; ++k) {
    const float x = from_bits(static_cast<uint32_t>(rng()));
    if (!std::isfinite(x)) continue;
    REQUIRE(zc::round_bf16(x) == bf16_by_definition(x));
  }
  CHECK(std::isnan(zc::round_bf16(NAN)));
  CHECK(zc::round_bf16(INFINITY) == INFINITY);
}

namespace {

// A batch of the MLP regression task: x f32 [B, 3], y f32 [B, 2], fixed by `seed`.
dspp::Batch regression_batch(int64_t b, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  dspp::Batch batch{dspp::Tensor::empty({b, 3}), dspp::Tensor::empty({b, 2})};
  for (int64_t i = 0; i < b * 3; ++i) batch.inputs.data<float>()[i] = u(rng);
  for (int64_t i = 0; i < b * 2; ++i) batch.targets.data<float>()[i] = u(rng);
  return batch;
}

float fp16(double v) {
  return static_cast<float>(static_cast<_Float16>(static_cast<float>(v)));
}

// DeepSpeed's dynamic loss-scale rule, written out again for the reference (0.19: the scale
// doubles when cur_iter - last_overflow_iter - 1 is a positive multiple of the window).
struct RefScaler {
  double scale;
  int64_t window, hysteresis, cur_hysteresis, iter = 0, last_overflow = -1;
  void update(bool overflow) {
    if (overflow) {
      if (hysteresis == 1 || cur_hysteresis == 1) {
        scale = std::max(scale / 2, 1.0);
      } else {
        --cur_hysteresis;
      }
      last_overflow = iter;
    } else {
      const int64_t stable = iter - last_overflow - 1;
      if (stable > 0 && stable % window == 0) {
        scale *= 2;
        cur_hysteresis = hysteresis;
      }
    }
    ++iter;
  }
};

}  // namespace

TEST_CASE("fp16 engine step = float64 reference: overflow skips, unscale and clip in one factor") {
  // Stage 0 follows DeepSpeed's FP16_Optimizer (no hysteresis), stage 1 its ZeRO
  // DynamicLossScaler (hysteresis 2). The scale starts at 2^20, far too large for these
  // gradients (~0.1-1: scaled beyond 65504), so the first steps overflow and are skipped until
  // the scale is small enough; a window of 3 then raises it again, overflowing now and then.
  for (int stage : {0, 1}) {
    INFO("ZeRO stage " << stage);
    const int64_t steps = 24;
    const double clip = 0.05, lr = 0.2;
    auto model = std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 8, 2}, dspp::MLPLoss::kMSE}, 7);
    auto ref = std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 8, 2}, dspp::MLPLoss::kMSE}, 7);
    dspp::InitializeArgs a;
    a.model = model;
    a.config = R"({"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 0.05,
                   "optimizer": {"type": "SGD", "params": {"lr": 0.2}},
                   "fp16": {"enabled": true, "initial_scale_power": 20, "loss_scale_window": 3,
                            "hysteresis": 2},
                   "zero_optimization": {"stage": )" +
               std::to_string(stage) + "}}";
    auto engine = dspp::initialize(a).engine;
    CHECK(std::string(engine->precision()) == "fp16");
    CHECK(engine->loss_scale() == 1048576.0);
    RefScaler rs{1048576.0, 3, stage == 0 ? 1 : 2, stage == 0 ? 1 : 2};

    // The master starts from the fp16-rounded initial values (DeepSpeed builds it from the
    // module's half parameters).
    std::vector<double> p;
    for (dspp::Parameter* q : ref->parameters()) {
      for (int64_t i = 0; i < q->value.numel(); ++i) p.push_back(fp16(q->value.data<float>()[i]));
    }
    int64_t skipped = 0, clipped = 0;
    for (int64_t s = 0; s < steps; ++s) {
      INFO("step " << s + 1);
      // The module's working copy is the reference master rounded to fp16. (An element whose
      // fp32 and float64 masters straddle an fp16 rounding boundary could differ by one fp16
      // step; none does in this run.)
      std::vector<float> working;
      for (dspp::Parameter* q : model->parameters()) {
        for (int64_t i = 0; i < q->value.numel(); ++i) working.push_back(q->value.data<float>()[i]);
      }
      REQUIRE(working.size() == p.size());
      size_t k = 0;
      for (dspp::Parameter* q : ref->parameters()) {
        for (int64_t i = 0; i < q->value.numel(); ++i, ++k) {
          q->value.data<float>()[i] = fp16(p[k]);
          REQUIRE(working[k] == fp16(p[k]));
        }
      }
      const dspp::Batch b = regression_batch(4, 100 + s);
      engine->backward(engine->forward(b));
      engine->step();
      // Reference: the gradient of the scaled loss (the same fp32 model code on the same values),
      // rounded to fp16 as DeepSpeed's half gradients are.
      ref->zero_grad();
      ref->forward_loss(b);
      ref->backward_loss(static_cast<float>(rs.scale));
      std::vector<double> g;
      bool overflow = false;
      for (dspp::Parameter* q : ref->parameters()) {
        for (int64_t i = 0; i < q->grad.numel(); ++i) {
          g.push_back(fp16(q->grad.data<float>()[i]));
          overflow = overflow || std::isinf(g.back());
        }
      }
      if (overflow) {
        ++skipped;
      } else {
        double sq = 0;
        for (double v : g) sq += v * v;
        const double norm = std::sqrt(sq) / rs.scale;
        const double coef = std::min(1.0, clip / (norm + 1e-6)) / rs.scale;
        clipped += coef * rs.scale < 1.0;
        for (size_t i = 0; i < p.size(); ++i) p[i] -= lr * coef * g[i];
        CHECK(engine->last_grad_norm() == Approx(norm).epsilon(1e-6));
      }
      rs.update(overflow);
      CHECK(engine->skipped_steps() == skipped);
      CHECK(engine->loss_scale() == rs.scale);
      CHECK(engine->global_steps() == s + 1);  // advances on a skipped step too
    }
    // The run exercised both branches and both clipping cases.
    CHECK(skipped >= 3);
    CHECK(skipped < steps - 8);
    CHECK(clipped > 0);
  }
}

TEST_CASE("bf16 engine: working values are bf16, the optimizer moves them, no loss scale") {
  auto model = std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 8, 2}, dspp::MLPLoss::kMSE}, 7);
  dspp::InitializeArgs a;
  a.model = model;
  a.config = R"({"train_micro_batch_size_per_gpu": 4,
                 "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
                 "bf16": {"enabled": true}, "zero_optimization": {"stage": 2}})";
  auto engine = dspp::initialize(a).engine;
  CHECK(std::string(engine->precision()) == "bf16");
  CHECK(engine->loss_scale() == 1.0);
  const dspp::MemoryBreakdown m = engine->memory_breakdown();
  CHECK(m.master_bytes == m.param_bytes);  // world 1: the partition is the whole flat buffer
  std::vector<float> before;
  for (int s = 0; s < 3; ++s) {
    engine->backward(engine->forward(regression_batch(4, 7 + s)));
    engine->step();
  }
  for (dspp::Parameter* q : model->parameters()) {
    for (int64_t i = 0; i < q->value.numel(); ++i) {
      const float v = q->value.data<float>()[i];
      REQUIRE(v == zc::round_bf16(v));
    }
  }
  CHECK(engine->skipped_steps() == 0);
}
