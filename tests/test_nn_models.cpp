// The MLP and GPT models: parameter names, whole-model gradient checks against float64
// references (the tied wte/lm_head weight gets both contributions), loss scaling and gradient
// accumulation, determinism (run to run and across OpenMP thread counts), hooks over the tree.
// Tolerances as in test_nn_layers.cpp (kForward, kGrad), justified there.
#include <dspp/error.h>
#include <dspp/models.h>
#include <dspp/module.h>
#include <dspp/nn.h>

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "catch.h"
#include "nn_reference.h"
#include "test_util.h"

using ref::Vec;

namespace {

constexpr ref::Tol kForward{1e-5, 1e-6};
constexpr ref::Tol kGrad{1e-3, 1e-5};

using Strings = std::vector<std::string>;

const dspp::GPTConfig kTiny{/*vocab_size=*/11, /*block_size=*/8, /*n_layer=*/2, /*n_head=*/2,
                            /*n_embd=*/8};

// GPT's loss in float64. in = {tokens, the model's parameters in parameters() order..., head}:
// the output head's weight is its own input so that the two uses of the tied matrix can be
// differentiated separately.
double gpt_loss(const std::vector<Vec>& in, const Vec& targets, const dspp::GPTConfig& cfg,
                int64_t B, int64_t T) {
  const int64_t C = cfg.n_embd, L = cfg.n_layer, V = cfg.vocab_size;
  const Vec& wte = in[1];
  const Vec& wpe = in[2];
  Vec x(static_cast<size_t>(B * T * C));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t tok = static_cast<int64_t>(in[0][b * T + t]);
      for (int64_t c = 0; c < C; ++c) x[(b * T + t) * C + c] = wte[tok * C + c] + wpe[t * C + c];
    }
  }
  for (int64_t l = 0; l < L; ++l) x = ref::block(x, B, T, C, cfg.n_head, in.data() + 3 + 12 * l);
  x = ref::layernorm(x, B * T, C, in[3 + 12 * L], in[4 + 12 * L]);
  Vec logits = ref::linear(x, B * T, C, in[5 + 12 * L], nullptr, V);
  return ref::cross_entropy(logits, B * T, V, targets);
}

dspp::Batch gpt_batch(dspp::Rng& rng, int64_t B, int64_t T, int64_t vocab) {
  return {ref::ids_tensor({B, T}, rng, vocab), ref::ids_tensor({B, T}, rng, vocab)};
}

std::vector<Vec> grads_of(dspp::Module& m) {
  std::vector<Vec> g;
  for (dspp::Parameter* p : m.parameters()) g.push_back(ref::to_vec(p->grad));
  return g;
}

}  // namespace

TEST_CASE("GPT: Hugging Face GPT-2 parameter names, shapes and GPT-2 init") {
  dspp::GPT gpt(kTiny, 1234);
  Strings names;
  int64_t numel = 0;
  for (dspp::Parameter* p : gpt.parameters()) {
    names.push_back(p->name);
    numel += p->value.numel();
  }
  Strings want{"transformer.wte.weight", "transformer.wpe.weight"};
  for (int l = 0; l < 2; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    for (const char* s :
         {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
          "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight",
          "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"}) {
      want.push_back(h + s);
    }
  }
  want.push_back("transformer.ln_f.weight");
  want.push_back("transformer.ln_f.bias");
  CHECK(names == want);  // lm_head.weight is wte: not a parameter of its own
  // GPT-2's count: V C + block C + L (12 C^2 + 13 C) + 2 C.
  const int64_t C = 8, L = 2;
  CHECK(numel == 11 * C + 8 * C + L * (12 * C * C + 13 * C) + 2 * C);

  auto params = gpt.parameters();
  CHECK(params[0]->shape == std::vector<int64_t>{11, 8});
  CHECK(params[4]->shape == std::vector<int64_t>{24, 8});  // c_attn [3C, C], [out, in]
  // Init: LayerNorm 1/0, biases 0, weights with std 0.02 or 0.02/sqrt(2 L) for c_proj.
  CHECK(ref::to_vec(params[2]->value) == Vec(8, 1.0));
  CHECK(ref::to_vec(params[5]->value) == Vec(24, 0.0));
  auto sample_std = [](const dspp::Parameter* p) {
    double s = 0.0;
    Vec v = ref::to_vec(p->value);
    for (double x : v) s += x * x;
    return std::sqrt(s / static_cast<double>(v.size()));
  };
  CHECK(sample_std(params[0]) == Approx(0.02).epsilon(0.25));
  CHECK(params[10]->name == "transformer.h.0.mlp.c_fc.weight");
  CHECK(sample_std(params[10]) == Approx(0.02).epsilon(0.25));
  CHECK(params[12]->name == "transformer.h.0.mlp.c_proj.weight");
  CHECK(sample_std(params[12]) == Approx(0.01).epsilon(0.25));  // 0.02 / sqrt(2 n_layer)
}

TEST_CASE("gradcheck: whole GPT, the tied wte/lm_head weight gets both contributions") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 100);
  const int64_t B = 2, T = 6;
  dspp::GPT gpt(kTiny, seed);
  ref::randomize(gpt, rng, 0.3);
  dspp::Batch batch = gpt_batch(rng, B, T, kTiny.vocab_size);
  batch.targets.data<int32_t>()[3] = -100;  // ignore_index

  const float loss = gpt.forward_loss(batch);
  gpt.backward_loss(1.0f);

  auto params = gpt.parameters();
  std::vector<Vec> in{ref::to_vec(batch.inputs)};
  for (dspp::Parameter* p : params) in.push_back(ref::to_vec(p->value));
  in.push_back(in[1]);  // the head reads wte
  const Vec targets = ref::to_vec(batch.targets);
  auto f = [&](const std::vector<Vec>& v) { return gpt_loss(v, targets, kTiny, B, T); };
  ref::check_close("GPT loss", {loss}, {f(in)}, kForward);

  std::vector<bool> wrt(in.size(), true);
  wrt[0] = false;
  auto num = ref::numeric_grads(f, in, wrt);
  // wte's gradient = through the embedding lookup + through the output head.
  const Vec& via_embedding = num[1];
  const Vec& via_head = num.back();
  Vec both(via_embedding.size());
  for (size_t i = 0; i < both.size(); ++i) both[i] = via_embedding[i] + via_head[i];
  ref::check_close("transformer.wte.weight (both uses)", ref::to_vec(params[0]->grad), both, kGrad);
  double emb_max = 0.0, head_max = 0.0;
  for (size_t i = 0; i < both.size(); ++i) {
    emb_max = std::max(emb_max, std::abs(via_embedding[i]));
    head_max = std::max(head_max, std::abs(via_head[i]));
  }
  CHECK(emb_max > 1e-3);  // both contributions are material, so the check above sees each
  CHECK(head_max > 1e-3);
  for (size_t i = 1; i < params.size(); ++i) {
    ref::check_close(params[i]->name, ref::to_vec(params[i]->grad), num[i + 1], kGrad);
  }
}

TEST_CASE("GPT: loss scale, gradient accumulation over micro-batches, split backward") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 200);
  const int64_t B = 4, T = 5;
  dspp::GPT gpt(kTiny, seed);
  ref::randomize(gpt, rng, 0.3);
  dspp::Batch full = gpt_batch(rng, B, T, kTiny.vocab_size);

  gpt.forward_loss(full);
  gpt.backward_loss(1.0f);
  const std::vector<Vec> g1 = grads_of(gpt);

  // A power-of-two scale is exact in floating point: the gradients are exactly halved.
  gpt.zero_grad();
  gpt.forward_loss(full);
  gpt.backward_loss(0.5f);
  std::vector<Vec> half = grads_of(gpt);
  for (size_t i = 0; i < g1.size(); ++i) {
    Vec want = g1[i];
    for (double& g : want) g *= 0.5;
    CHECK(half[i] == want);
  }

  // Two micro-batches of B/2, each scaled by 1/2 (the engine's 1/GA), equal one batch of B.
  gpt.zero_grad();
  for (int64_t m = 0; m < 2; ++m) {
    dspp::Batch micro{full.inputs.slice(m * (B / 2) * T, {B / 2, T}),
                      full.targets.slice(m * (B / 2) * T, {B / 2, T})};
    gpt.forward_loss(micro);
    gpt.backward_loss(0.5f);
  }
  auto params = gpt.parameters();
  std::vector<Vec> ga = grads_of(gpt);
  for (size_t i = 0; i < g1.size(); ++i) {
    // fp32 sums in another order: a few ulps of the scale.
    ref::check_close(params[i]->name + " GA=2 vs one batch", ga[i], g1[i], {1e-3, 1e-5});
  }

  // The engine may run the two halves of backward separately (zero-bubble pipelines).
  gpt.zero_grad();
  gpt.forward_loss(full);
  dspp::CrossEntropyLoss ce;
  ce.forward_loss(gpt.logits(), full.targets);
  dspp::Tensor dlogits = ce.backward_loss(1.0f);
  CHECK_FALSE(gpt.backward_input(dlogits).defined());  // token ids have no gradient
  gpt.backward_weight(dlogits);
  CHECK(grads_of(gpt) == g1);
}

TEST_CASE("GPT: bitwise deterministic run to run and across OpenMP thread counts") {
  // Large enough that every OpenMP loop in the layers actually runs in parallel.
  const dspp::GPTConfig cfg{96, 64, 2, 4, 128};
  const int64_t B = 8, T = 64;
  dspp::Rng rng(ref::test_seed() + 300);
  dspp::Batch batch = gpt_batch(rng, B, T, cfg.vocab_size);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    dspp::GPT gpt(cfg, 42);
    const float loss = gpt.forward_loss(batch);
    gpt.backward_loss(1.0f);
    std::vector<Vec> out = grads_of(gpt);
    out.push_back({loss});
    out.push_back(ref::to_vec(gpt.logits()));
    return out;
  };
  const int max_threads = omp_get_max_threads();
  const auto a = run(max_threads);
  const auto b = run(max_threads);
  const auto serial = run(1);
  const auto two = run(2);
  omp_set_num_threads(max_threads);
  CHECK(a == b);
  CHECK(a == serial);
  CHECK(a == two);
  // Same seed, same init; another seed, another init.
  dspp::GPT x(cfg, 42), y(cfg, 42), z(cfg, 43);
  CHECK(ref::to_vec(x.parameters()[5]->value) == ref::to_vec(y.parameters()[5]->value));
  CHECK(ref::to_vec(x.parameters()[0]->value) != ref::to_vec(z.parameters()[0]->value));
}

TEST_CASE("GPT: hooks see every module once per pass, lm_head reaches the tied weight") {
  dspp::GPT gpt(kTiny, 5);
  Strings fwd, bwd;
  Strings head_params;
  dspp::ModuleHooks h;
  h.before_forward = [&](dspp::Module& m) {
    fwd.push_back(m.path());
    if (m.path() == "lm_head") {
      for (dspp::Parameter* p : m.direct_parameters()) head_params.push_back(p->name);
    }
  };
  h.after_backward = [&](dspp::Module& m) { bwd.push_back(m.path()); };
  gpt.add_hooks(h);
  dspp::Rng rng(9);
  gpt.forward_loss(gpt_batch(rng, 2, 4, kTiny.vocab_size));
  gpt.backward_loss(1.0f);
  const Strings block_fwd{"transformer.h.0",
                          "transformer.h.0.ln_1",
                          "transformer.h.0.attn",
                          "transformer.h.0.attn.c_attn",
                          "transformer.h.0.attn.c_proj",
                          "transformer.h.0.ln_2",
                          "transformer.h.0.mlp",
                          "transformer.h.0.mlp.c_fc",
                          "transformer.h.0.mlp.act",
                          "transformer.h.0.mlp.c_proj"};
  REQUIRE(fwd.size() == 4 + 2 * block_fwd.size() + 2);
  CHECK(Strings(fwd.begin(), fwd.begin() + 4) ==
        Strings{"transformer", "transformer.wte", "transformer.wpe", "transformer.h"});
  CHECK(Strings(fwd.begin() + 4, fwd.begin() + 14) == block_fwd);
  CHECK(Strings(fwd.end() - 2, fwd.end()) == Strings{"transformer.ln_f", "lm_head"});
  CHECK(head_params == Strings{"transformer.wte.weight"});
  // after_backward: innermost first, the output end first, the embeddings last.
  CHECK(bwd.front() == "lm_head");
  CHECK(bwd[1] == "transformer.ln_f");
  CHECK(bwd[2] == "transformer.h.1.mlp.c_proj");
  CHECK(Strings(bwd.end() - 3, bwd.end()) ==
        Strings{"transformer.wpe", "transformer.wte", "transformer"});
  CHECK(bwd.size() == fwd.size());
}

TEST_CASE("GPT: errors name the problem") {
  dspp::GPT gpt(kTiny, 5);
  dspp::Rng rng(3);
  dspp::Batch long_batch = gpt_batch(rng, 1, 9, kTiny.vocab_size);
  CHECK(contains(error_of([&] { gpt.forward_loss(long_batch); }),
                 "GPTTransformer 'transformer': tokens must be i32 [B, T] with T <= block_size 8"));
  dspp::Batch bad = gpt_batch(rng, 1, 4, kTiny.vocab_size);
  bad.inputs.data<int32_t>()[2] = 11;
  CHECK(contains(error_of([&] { gpt.forward_loss(bad); }),
                 "Embedding 'transformer.wte': id 11 at position 2 is outside [0, 11)"));
  CHECK(contains(error_of([] {
                   dspp::GPT g(dspp::GPTConfig{11, 8, 2, 3, 8}, 1);
                 }),
                 "n_embd a multiple of n_head"));
}

TEST_CASE("gradcheck: MLP, classification and regression") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 400);
  const int64_t B = 5;
  for (dspp::MLPLoss kind : {dspp::MLPLoss::kCrossEntropy, dspp::MLPLoss::kMSE}) {
    dspp::MLP mlp({{4, 6, 5, 3}, kind}, seed);
    Strings names;
    for (auto* p : mlp.parameters()) names.push_back(p->name);
    CHECK(names == Strings{"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                           "net.4.weight", "net.4.bias"});
    ref::randomize(mlp, rng, 0.5);
    dspp::Batch batch{ref::normal_tensor({B, 4}, rng, 1.0),
                      kind == dspp::MLPLoss::kCrossEntropy ? ref::ids_tensor({B}, rng, 3)
                                                           : ref::normal_tensor({B, 3}, rng, 1.0)};
    const float loss = mlp.forward_loss(batch);
    mlp.backward_loss(1.0f);
    auto params = mlp.parameters();
    std::vector<Vec> in{ref::to_vec(batch.inputs)};
    for (auto* p : params) in.push_back(ref::to_vec(p->value));
    const Vec targets = ref::to_vec(batch.targets);
    auto f = [&](const std::vector<Vec>& v) {
      Vec h = ref::gelu(ref::linear(v[0], B, 4, v[1], &v[2], 6));
      h = ref::gelu(ref::linear(h, B, 6, v[3], &v[4], 5));
      Vec out = ref::linear(h, B, 5, v[5], &v[6], 3);
      if (kind == dspp::MLPLoss::kCrossEntropy) return ref::cross_entropy(out, B, 3, targets);
      double s = 0.0;
      for (size_t i = 0; i < out.size(); ++i) s += (out[i] - targets[i]) * (out[i] - targets[i]);
      return s / static_cast<double>(out.size());
    };
    ref::check_close("MLP loss", {loss}, {f(in)}, kForward);
    std::vector<bool> wrt(in.size(), true);
    wrt[0] = false;
    auto num = ref::numeric_grads(f, in, wrt);
    for (size_t i = 0; i < params.size(); ++i) {
      ref::check_close(params[i]->name, ref::to_vec(params[i]->grad), num[i + 1], kGrad);
    }
  }
}
