// The Engine against independent references: a hand-computed float64 SGD update (flat buffers,
// 1/GA loss scaling, global-norm clipping, the scheduler's lr at each step), gradient accumulation
// equal to one big batch, DeepSpeed's micro-step counters, and its refusals.
#include <dspp/initialize.h>
#include <dspp/models.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"

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

std::shared_ptr<dspp::MLP> mlp(uint64_t seed) {
  return std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 8, 2}, dspp::MLPLoss::kMSE}, seed);
}

std::vector<double> flat_values(dspp::Module& m) {
  std::vector<double> out;
  for (dspp::Parameter* p : m.parameters()) {
    for (int64_t i = 0; i < p->value.numel(); ++i) out.push_back(p->value.data<float>()[i]);
  }
  return out;
}

std::vector<double> flat_grads(dspp::Module& m) {
  std::vector<double> out;
  for (dspp::Parameter* p : m.parameters()) {
    for (int64_t i = 0; i < p->grad.numel(); ++i) out.push_back(p->grad.data<float>()[i]);
  }
  return out;
}

}  // namespace

TEST_CASE("engine step = float64 SGD on the clipped, GA-averaged gradient at the scheduler's lr") {
  // Reference: a second model with the same init computes each micro-batch's gradient with
  // backward_loss(1); the test averages over GA, clips by the global norm and applies
  // p -= lr * g in float64, with lr from WarmupLR's linear formula. The engine must match.
  const int64_t ga = 2, micro = 4, steps = 5;
  const double clip = 0.05, max_lr = 0.2;
  auto model = mlp(7);
  auto ref = mlp(7);
  dspp::InitializeArgs a;
  a.model = model;
  a.config = R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                 "gradient_clipping": 0.05,
                 "optimizer": {"type": "SGD", "params": {"lr": 0.2}},
                 "scheduler": {"type": "WarmupLR",
                               "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.2,
                                          "warmup_num_steps": 4, "warmup_type": "linear"}}})";
  auto [engine, optimizer, loader, sched] = dspp::initialize(a);
  REQUIRE(optimizer);
  REQUIRE(sched);

  std::vector<double> p = flat_values(*ref);
  REQUIRE(p == flat_values(*model));
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<double> g(p.size(), 0.0);
    for (int64_t m = 0; m < ga; ++m) {
      dspp::Batch b = regression_batch(micro, 100 * s + m);
      CHECK(engine->is_gradient_accumulation_boundary() == (m == ga - 1));
      float loss = engine->forward(b);
      engine->backward(loss);
      engine->step();
      // Reference gradient of this micro-batch at the reference parameters.
      ref->zero_grad();
      ref->forward_loss(b);
      ref->backward_loss(1.0f);
      std::vector<double> gm = flat_grads(*ref);
      for (size_t i = 0; i < g.size(); ++i) g[i] += gm[i] / ga;
    }
    double sq = 0;
    for (double v : g) sq += v * v;
    const double norm = std::sqrt(sq);
    const double coef = std::min(1.0, clip / (norm + 1e-6));
    // WarmupLR, linear: DeepSpeed's lr for optimizer step s+1 (its scheduler has stepped s
    // times); the plugin's value is checked against DeepSpeed in test_schedulers.
    double lr_s = 0;
    REQUIRE(sched->lr_at(s, &lr_s) == DSPP_OK);
    const double lr_formula = s == 0 ? 0.0 : max_lr * std::min(1.0, double(s - 1) / 4.0);
    CHECK(lr_s == Approx(lr_formula).margin(1e-12));
    for (size_t i = 0; i < p.size(); ++i) p[i] -= lr_s * coef * g[i];
    // Keep the reference model on the reference trajectory.
    size_t k = 0;
    for (dspp::Parameter* q : ref->parameters()) {
      for (int64_t i = 0; i < q->value.numel(); ++i) q->value.data<float>()[i] = float(p[k++]);
    }
    CHECK(engine->last_grad_norm() == Approx(norm).epsilon(1e-4));
    std::vector<double> got = flat_values(*model);
    double worst = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      worst = std::max(worst, std::abs(got[i] - p[i]) / (std::abs(p[i]) + 1e-3));
    }
    // fp32 engine vs float64 reference over a few steps: rounding only (~1e-7 per op).
    CHECK(worst < 1e-5);
  }
  CHECK(engine->global_steps() == steps);
  CHECK(engine->micro_steps() == steps * ga);
  CHECK(engine->global_samples() == steps * micro * ga);
}

TEST_CASE("gradient accumulation: GA=4 x micro b equals GA=1 x micro 4b on the same data") {
  auto run = [](int64_t ga, int64_t micro) {
    dspp::GPTConfig c{13, 16, 1, 2, 16};
    auto model = std::make_shared<dspp::GPT>(c, 3);
    dspp::InitializeArgs a;
    a.model = model;
    a.config = "{\"train_micro_batch_size_per_gpu\": " + std::to_string(micro) +
               ", \"gradient_accumulation_steps\": " + std::to_string(ga) +
               ", \"gradient_clipping\": 1.0, \"optimizer\": {\"type\": \"SGD\", "
               "\"params\": {\"lr\": 0.5, \"momentum\": 0.9, \"weight_decay\": 0.1}}}";
    auto r = dspp::initialize(a);
    // The same 16 sequences each step, cut into micro-batches.
    std::mt19937 rng(11);
    for (int step = 0; step < 3; ++step) {
      std::vector<int32_t> tok(16 * 17);
      for (int32_t& t : tok) t = int32_t(rng() % 13);
      for (int64_t m = 0; m < ga; ++m) {
        dspp::Batch b{dspp::Tensor::empty({micro, 16}, DSPP_I32),
                      dspp::Tensor::empty({micro, 16}, DSPP_I32)};
        for (int64_t i = 0; i < micro; ++i) {
          const int32_t* row = &tok[(m * micro + i) * 17];
          for (int t = 0; t < 16; ++t) {
            b.inputs.data<int32_t>()[i * 16 + t] = row[t];
            b.targets.data<int32_t>()[i * 16 + t] = row[t + 1];
          }
        }
        float loss = r.engine->forward(b);
        r.engine->backward(loss);
        r.engine->step();
      }
    }
    CHECK(r.engine->global_steps() == 3);
    return flat_values(*model);
  };
  std::vector<double> ga4 = run(4, 4);
  std::vector<double> ga1 = run(1, 16);
  REQUIRE(ga4.size() == ga1.size());
  double worst = 0;
  for (size_t i = 0; i < ga4.size(); ++i) {
    worst = std::max(worst, std::abs(ga4[i] - ga1[i]) / (std::abs(ga1[i]) + 1e-2));
  }
  // Only the order of fp32 sums differs (4 partial means vs one mean): rounding, ~1e-7 per op.
  // (SGD, not Adam: Adam's first step is lr * sign(g), which turns rounding noise in near-zero
  // gradients into full-size differences.)
  CHECK(worst < 1e-5);
}

TEST_CASE("engine model_parameters groups: each group steps with its own lr") {
  auto model = mlp(5);
  auto before = flat_values(*model);
  dspp::InitializeArgs a;
  a.model = model;
  std::vector<std::string> all;
  for (dspp::Parameter* p : model->parameters()) all.push_back(p->name);
  // First parameter alone at lr 0, everything else at 0.1: the first must not move.
  a.model_parameters = {{{all[0]}, R"({"lr": 0.0})"},
                        {std::vector<std::string>(all.begin() + 1, all.end()), R"({"lr": 0.1})"}};
  a.config = R"({"train_batch_size": 4, "gradient_clipping": 0.0,
                 "optimizer": {"type": "SGD", "params": {"lr": 0.5}}})";
  auto r = dspp::initialize(a);
  CHECK(r.engine->get_lr() == std::vector<double>{0.0, 0.1});
  dspp::Batch b = regression_batch(4, 9);
  r.engine->backward(r.engine->forward(b));
  auto g = flat_grads(*model);
  r.engine->step();
  auto after = flat_values(*model);
  const int64_t n0 = model->parameters()[0]->value.numel();
  for (int64_t i = 0; i < n0; ++i) CHECK(after[i] == before[i]);
  for (size_t i = n0; i < after.size(); ++i) {
    CHECK(after[i] == Approx(before[i] - 0.1 * g[i]).margin(1e-6));
  }
}

TEST_CASE("initialize gives a DataLoader of the micro batch, and the engine refuses misuse") {
  auto model = mlp(1);
  auto data = std::make_shared<dspp::TensorDataset>(regression_batch(10, 1).inputs,
                                                    regression_batch(10, 2).targets);
  dspp::InitializeArgs a;
  a.model = model;
  a.training_data = data;
  a.config = R"({"train_micro_batch_size_per_gpu": 3, "optimizer": {"type": "Adam"}})";
  auto r = dspp::initialize(a);
  REQUIRE(r.dataloader);
  dspp::Batch b = r.dataloader->next();
  CHECK(b.inputs.shape() == std::vector<int64_t>{3, 3});
  CHECK(r.dataloader->len() == 4);  // ceil(10 / 3)
  // Adam's published default lr is what the engine reports without a scheduler.
  CHECK(r.engine->get_lr() == std::vector<double>{1e-3});
  CHECK(error_of([&] { r.engine->backward(0.f); }).find("no forward()") != std::string::npos);

  dspp::InitializeArgs bad = a;
  bad.config = R"({"train_batch_size": 2, "bf16": {"enabled": true}, "fp16": {"enabled": true}})";
  CHECK(error_of([&] { dspp::initialize(bad); }).find("bf16.enabled") != std::string::npos);
  bad.config = R"({"train_batch_size": 2, "zero_optimization": {"stage": 2}})";
  CHECK(error_of([&] { dspp::initialize(bad); }).find("needs an \"optimizer\" section") !=
        std::string::npos);
  bad.config = R"({"train_batch_size": 2})";
  bad.model_parameters = {{{"no.such.param"}, "{}"}};
  CHECK(error_of([&] { dspp::initialize(bad); }).find("no.such.param") != std::string::npos);
}

TEST_CASE("initialize with Muon runs the muon flagger (DeepSpeed's rule) and the model learns") {
  auto model = std::make_shared<dspp::GPT>(dspp::GPTConfig{13, 64, 1, 4, 32}, 2);
  dspp::InitializeArgs a;
  a.model = model;
  a.training_data = std::make_shared<dspp::AdditionTask>();
  a.config = R"({"train_micro_batch_size_per_gpu": 8,
                 "optimizer": {"type": "Muon", "params": {"muon_lr": 0.02, "adam_lr": 0.003}},
                 "flaggers": {"muon": {"exclude": ["embed", "lm_head", "wte", "wpe"]}}})";
  auto r = dspp::initialize(a);
  for (dspp::Parameter* p : model->parameters()) {
    const bool muon = (p->flags & DSPP_PARAM_USE_MUON) != 0;
    const bool expect = p->shape.size() >= 2 && p->name.find("wte") == std::string::npos &&
                        p->name.find("wpe") == std::string::npos;
    CHECK(muon == expect);
  }
  float first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    float loss = r.engine->forward(r.dataloader->next());
    r.engine->backward(loss);
    r.engine->step();
    if (step == 0) first = loss;
    last = loss;
  }
  CHECK(first > 2.3f);         // about ln 13 = 2.565 at initialisation
  CHECK(last < first - 0.5f);  // Muon + AdamW move it well down in 30 steps
}

TEST_CASE(
    "ZeRO-3 in one process: zero::Init chunks and GatheredParameters and values only while "
    "gathered") {
  const dspp::GPTConfig cfg{13, 64, 1, 2, 32};
  auto whole = std::make_shared<dspp::GPT>(cfg, 2);
  std::shared_ptr<dspp::GPT> model;
  {
    dspp::zero::Init scope;
    model = std::make_shared<dspp::GPT>(cfg, 2);
  }
  const std::vector<dspp::Parameter*> ps = model->parameters(), ref = whole->parameters();
  REQUIRE(ps.size() == ref.size());
  // One rank: the chunk is the whole value plus zero padding to a multiple of 16.
  for (size_t i = 0; i < ps.size(); ++i) {
    INFO(ps[i]->name);
    const int64_t n = dspp::numel_of(ps[i]->shape);
    CHECK(ps[i]->zero_world == 1);
    REQUIRE(ps[i]->value.numel() == dspp::zero_init_chunk(n, 1));
    CHECK(!ps[i]->grad.defined());
    for (int64_t k = 0; k < ps[i]->value.numel(); ++k) {
      const float want = k < n ? ref[i]->value.data<float>()[k] : 0.0f;
      if (ps[i]->value.data<float>()[k] != want) FAIL("element " << k);
    }
  }
  dspp::Parameter* w = ps[2];  // a whole-value change must survive only with a modifier rank
  {
    dspp::zero::GatheredParameters g({w});
    REQUIRE(w->value.shape() == w->shape);
    w->value.data<float>()[0] = 5.0f;
  }
  CHECK(w->value.data<float>()[0] == ref[2]->value.data<float>()[0]);
  {
    dspp::zero::GatheredParameters g({w}, 0);
    w->value.data<float>()[0] = 0.25f;
  }
  CHECK(w->value.data<float>()[0] == 0.25f);
  ref[2]->value.data<float>()[0] = 0.25f;

  // The same training at stage 3 (zero::Init chunks) and at stage 0 (a whole model).
  auto engine_for = [](std::shared_ptr<dspp::GPT> m, int stage) {
    dspp::InitializeArgs a;
    a.model = m;
    a.training_data = std::make_shared<dspp::AdditionTask>();
    a.config = R"({"train_micro_batch_size_per_gpu": 4,
                   "optimizer": {"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9}},
                   "zero_optimization": {"stage": )" +
               std::to_string(stage) + R"(, "stage3_param_persistence_threshold": 0}})";
    return dspp::initialize(a);
  };
  auto r3 = engine_for(model, 3);
  auto r0 = engine_for(whole, 0);
  for (dspp::Parameter* p : ps) CHECK(!p->value.defined());  // only while gathered
  for (int step = 0; step < 3; ++step) {
    const float l3 = r3.engine->forward(r3.dataloader->next());
    const float l0 = r0.engine->forward(r0.dataloader->next());
    CHECK(std::abs(l3 - l0) <= 1e-6f * std::abs(l0));
    r3.engine->backward(l3);
    r0.engine->backward(l0);
    r3.engine->step();
    r0.engine->step();
  }
  {
    dspp::zero::GatheredParameters g(*r3.engine, {}, 0);
    for (size_t i = 0; i < ps.size(); ++i) {
      REQUIRE(ps[i]->value.numel() == ref[i]->value.numel());
      for (int64_t k = 0; k < ps[i]->value.numel(); ++k) {
        const float a = ps[i]->value.data<float>()[k], b = ref[i]->value.data<float>()[k];
        if (std::abs(a - b) > 1e-6f) FAIL(ps[i]->name << "[" << k << "] " << a << " vs " << b);
      }
    }
    ps[3]->value.data<float>()[1] = -2.0f;  // kept: rank 0 is the modifier
    ref[3]->value.data<float>()[1] = -2.0f;
  }
  CHECK(!ps[3]->value.defined());
  const float l3 = r3.engine->forward(r3.dataloader->next());
  const float l0 = r0.engine->forward(r0.dataloader->next());
  CHECK(std::abs(l3 - l0) <= 1e-6f * std::abs(l0));
  r3.engine->backward(l3);  // a forward without backward leaves nothing gathered either
  r0.engine->backward(l0);
  CHECK(r3.engine->memory_breakdown().param_bytes < r0.engine->memory_breakdown().param_bytes * 2);
}
