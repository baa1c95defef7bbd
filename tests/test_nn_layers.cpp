// The layer library against float64 references and finite differences (see nn_reference.h for
// the method), plus what the Module base promises: hook order, derived container backward, the
// split backward, accumulation.
//
// Tolerances (ref::Tol{rtol, atol}: |a - r| <= rtol |r| + atol max|r|, per tensor):
// - forward values, kForward = {1e-5, 1e-6}: fp32 rounds each operation to 6e-8 relative; the
//   longest chains here (a block: two LayerNorms, a softmax, four GEMMs with sums of <= 32 terms)
//   stay within ~20 roundings of the output's scale, ~1e-6.
// - gradients, kGrad = {1e-3, 1e-5}: backward sums more terms and cancels more (LayerNorm's dx is
//   a difference of three O(1) terms, the softmax backward a difference of two), which costs
//   digits on single elements but not on the tensor's scale: an element passes within 0.1% of its
//   own value or 1e-5 of the largest gradient of its tensor. A wrong or missing term is an error
//   of the order of the scale and fails by orders of magnitude.
// Measured over 30 random seeds: the worst element used 13% (forward) and 7% (gradients) of these
// bounds, so they leave ~10x headroom for other compilers and BLAS kernels.
#include <dspp/error.h>
#include <dspp/module.h>
#include <dspp/nn.h>
#include <dspp/tensor.h>

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

using RefFn = std::function<Vec(const std::vector<Vec>&)>;

// Runs `layer` in fp32 on x, backward with a random upstream r, and compares y, dx (when x is
// differentiable) and every parameter's grad with the float64 reference ref({x, params...}).
void gradcheck(dspp::Module& layer, const dspp::Tensor& x, bool x_has_grad, const RefFn& reference,
               dspp::Rng& rng) {
  std::vector<dspp::Parameter*> params = layer.parameters();
  layer.zero_grad();
  dspp::Tensor y = layer.forward(x);
  dspp::Tensor r = ref::normal_tensor(y.shape(), rng, 1.0);
  dspp::Tensor dx = layer.backward(r);

  std::vector<Vec> in{ref::to_vec(x)};
  for (dspp::Parameter* p : params) in.push_back(ref::to_vec(p->value));
  ref::check_close(layer.type_name() + " forward", ref::to_vec(y), reference(in), kForward);

  const Vec rv = ref::to_vec(r);
  std::vector<bool> wrt(in.size(), true);
  wrt[0] = x_has_grad;
  auto num = ref::numeric_grads(
      [&](const std::vector<Vec>& v) { return ref::dot(reference(v), rv); }, in, wrt);
  if (x_has_grad) {
    ref::check_close(layer.type_name() + " dx", ref::to_vec(dx), num[0], kGrad);
  } else {
    CHECK_FALSE(dx.defined());
  }
  for (size_t i = 0; i < params.size(); ++i) {
    ref::check_close(layer.type_name() + " d " + params[i]->name, ref::to_vec(params[i]->grad),
                     num[i + 1], kGrad);
  }
}

}  // namespace

TEST_CASE("gradcheck: Linear with and without bias, on a 3-d input") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed);
  const int64_t in = 5, out = 4;
  dspp::Tensor x = ref::normal_tensor({2, 3, in}, rng, 1.0);
  dspp::Linear with_bias(in, out, true, rng, 0.5f);
  gradcheck(
      with_bias, x, true,
      [&](const std::vector<Vec>& v) { return ref::linear(v[0], 6, in, v[1], &v[2], out); }, rng);
  dspp::Linear no_bias(in, out, false, rng, 0.5f);
  CHECK(no_bias.parameters().size() == 1);
  gradcheck(
      no_bias, x, true,
      [&](const std::vector<Vec>& v) { return ref::linear(v[0], 6, in, v[1], nullptr, out); }, rng);
}

TEST_CASE("gradcheck: Embedding, with repeated ids adding up") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 1);
  const int64_t num = 6, dim = 3;
  dspp::Embedding emb(num, dim, rng, 1.0f);
  dspp::Tensor ids = ref::ids_tensor({2, 4}, rng, num);
  ids.data<int32_t>()[1] = ids.data<int32_t>()[0];  // a repeat: its row's gradient adds twice
  gradcheck(
      emb, ids, false,
      [&](const std::vector<Vec>& v) {
        Vec y;
        for (double id : v[0]) {
          for (int64_t c = 0; c < dim; ++c) y.push_back(v[1][static_cast<int64_t>(id) * dim + c]);
        }
        return y;
      },
      rng);
  ids.data<int32_t>()[3] = static_cast<int32_t>(num);
  CHECK(contains(error_of([&] { emb.forward(ids); }),
                 "Embedding: id 6 at position 3 is outside [0, 6)"));
}

TEST_CASE("gradcheck: LayerNorm") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 2);
  const int64_t c = 7;
  dspp::LayerNorm ln(c);
  ref::randomize(ln, rng, 1.0);
  dspp::Tensor x = ref::normal_tensor({3, 2, c}, rng, 2.0, 0.5);  // mean and scale far from 0/1
  gradcheck(
      ln, x, true,
      [&](const std::vector<Vec>& v) { return ref::layernorm(v[0], 6, c, v[1], v[2]); }, rng);
}

TEST_CASE("gradcheck: GELU (tanh approximation)") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 3);
  dspp::GELU gelu;
  dspp::Tensor x = ref::normal_tensor({4, 9}, rng, 2.0);
  gradcheck(
      gelu, x, true, [](const std::vector<Vec>& v) { return ref::gelu(v[0]); }, rng);
}

TEST_CASE("gradcheck: causal self-attention") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 4);
  const int64_t B = 2, T = 5, C = 8, NH = 2;
  dspp::CausalSelfAttention attn(C, NH, rng, 0.02f);
  ref::randomize(attn, rng, 0.4);  // peaked, position-dependent attention
  dspp::Tensor x = ref::normal_tensor({B, T, C}, rng, 1.0);
  gradcheck(
      attn, x, true,
      [&](const std::vector<Vec>& v) { return ref::attention(v[0], B, T, C, NH, v.data() + 1); },
      rng);
  // The mask: position 0's output depends only on position 0, so changing later positions of
  // the input leaves it unchanged.
  dspp::Tensor y0 = attn.forward(x);
  dspp::Tensor x2 = ref::normal_tensor({B, T, C}, rng, 1.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < C; ++i)
      x2.data<float>()[b * T * C + i] = x.data<float>()[b * T * C + i];
  }
  dspp::Tensor y1 = attn.forward(x2);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < C; ++i) {
      CHECK(y1.data<float>()[b * T * C + i] == y0.data<float>()[b * T * C + i]);
    }
  }
}

TEST_CASE("gradcheck: transformer block (pre-LN, residual)") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 5);
  const int64_t B = 2, T = 4, C = 8, NH = 2;
  dspp::TransformerBlock blk(C, NH, rng, 0.02f);
  ref::randomize(blk, rng, 0.3);
  dspp::Tensor x = ref::normal_tensor({B, T, C}, rng, 1.0);
  gradcheck(
      blk, x, true,
      [&](const std::vector<Vec>& v) { return ref::block(v[0], B, T, C, NH, v.data() + 1); }, rng);
}

TEST_CASE("gradcheck: Sequential derives its backward from its children") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 6);
  dspp::Sequential seq;
  seq.add(std::make_shared<dspp::Linear>(4, 6, true, rng, 0.5f));
  seq.add(std::make_shared<dspp::GELU>());
  seq.add(std::make_shared<dspp::Linear>(6, 3, true, rng, 0.5f));
  std::vector<std::string> names;
  for (auto* p : seq.parameters()) names.push_back(p->name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  dspp::Tensor x = ref::normal_tensor({5, 4}, rng, 1.0);
  gradcheck(
      seq, x, true,
      [&](const std::vector<Vec>& v) {
        Vec h = ref::gelu(ref::linear(v[0], 5, 4, v[1], &v[2], 6));
        return ref::linear(h, 5, 6, v[3], &v[4], 3);
      },
      rng);
}

TEST_CASE("gradcheck: cross-entropy (mean, ignore_index, scale) and MSE") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 7);
  const int64_t n = 6, V = 5;
  dspp::Tensor logits = ref::normal_tensor({2, 3, V}, rng, 2.0);
  dspp::Tensor targets = ref::ids_tensor({2, 3}, rng, V);
  targets.data<int32_t>()[4] = -100;  // ignored: not in the mean, zero gradient
  dspp::CrossEntropyLoss ce;
  const Vec tv = ref::to_vec(targets);
  const float loss = ce.forward_loss(logits, targets);
  CHECK(ce.num_targets() == 5);
  auto f = [&](const std::vector<Vec>& v) { return ref::cross_entropy(v[0], n, V, tv); };
  const Vec lv = ref::to_vec(logits);
  ref::check_close("cross-entropy value", {loss}, {f({lv})}, kForward);
  const float scale = 0.75f;  // loss scaling / 1/GA: the gradient is of scale * loss
  dspp::Tensor d = ce.backward_loss(scale);
  Vec num = ref::numeric_grads(f, {lv}, {true})[0];
  for (double& g : num) g *= scale;
  ref::check_close("cross-entropy dlogits", ref::to_vec(d), num, kGrad);
  for (int64_t v = 0; v < V; ++v) CHECK(d.data<float>()[4 * V + v] == 0.0f);

  // Every target ignored: loss 0 and zero gradient, not NaN.
  for (int64_t i = 0; i < n; ++i) targets.data<int32_t>()[i] = -100;
  CHECK(ce.forward_loss(logits, targets) == 0.0f);
  CHECK(ref::to_vec(ce.backward_loss(1.0f)) == Vec(n * V, 0.0));
  targets.data<int32_t>()[2] = static_cast<int32_t>(V);
  CHECK(contains(error_of([&] { ce.forward_loss(logits, targets); }), "target 5 at position 2"));

  dspp::MSELoss mse;
  dspp::Tensor pred = ref::normal_tensor({4, 3}, rng, 1.0);
  dspp::Tensor want = ref::normal_tensor({4, 3}, rng, 1.0);
  const Vec wv = ref::to_vec(want);
  auto g = [&](const std::vector<Vec>& v) {
    double s = 0.0;
    for (size_t i = 0; i < wv.size(); ++i) s += (v[0][i] - wv[i]) * (v[0][i] - wv[i]);
    return s / static_cast<double>(wv.size());
  };
  const Vec pv = ref::to_vec(pred);
  ref::check_close("mse value", {mse.forward_loss(pred, want)}, {g({pv})}, kForward);
  ref::check_close("mse dpred", ref::to_vec(mse.backward_loss(1.0f)),
                   ref::numeric_grads(g, {pv}, {true})[0], kGrad);
}

namespace {

// Records every hook call as "<point>:<module path>".
struct Recorder {
  std::vector<std::string> log;
  dspp::ModuleHooks hooks(const std::string& tag = "") {
    dspp::ModuleHooks h;
    h.before_forward = [this, tag](dspp::Module& m) { log.push_back(tag + "bf:" + m.path()); };
    h.after_forward = [this, tag](dspp::Module& m) { log.push_back(tag + "af:" + m.path()); };
    h.before_backward = [this, tag](dspp::Module& m) { log.push_back(tag + "bb:" + m.path()); };
    h.after_backward = [this, tag](dspp::Module& m) { log.push_back(tag + "ab:" + m.path()); };
    return h;
  }
};

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("hooks run around each child: forward in order, backward in reverse, nested") {
  dspp::Rng rng(7);
  dspp::Sequential root;
  root.add(std::make_shared<dspp::Linear>(3, 4, true, rng), "a");
  auto& inner = root.add(std::make_shared<dspp::Sequential>(), "inner");
  inner.add(std::make_shared<dspp::GELU>(), "g");
  inner.add(std::make_shared<dspp::Linear>(4, 4, true, rng), "b");
  root.add(std::make_shared<dspp::Linear>(4, 2, false, rng), "c");

  Recorder rec;
  // A hook sees the module it runs around and reaches its parameters (what ZeRO-3 gathers).
  Strings seen_params;
  dspp::ModuleHooks look;
  look.before_forward = [&](dspp::Module& m) {
    for (dspp::Parameter* p : m.direct_parameters()) seen_params.push_back(p->name);
  };
  const int rec_id = root.add_hooks(rec.hooks());
  const int look_id = root.add_hooks(look);

  dspp::Tensor x = ref::normal_tensor({2, 3}, rng, 1.0);
  dspp::Tensor y = root.forward(x);
  CHECK(rec.log == Strings{"bf:a", "af:a", "bf:inner", "bf:inner.g", "af:inner.g", "bf:inner.b",
                           "af:inner.b", "af:inner", "bf:c", "af:c"});
  CHECK(seen_params == Strings{"a.weight", "a.bias", "inner.b.weight", "inner.b.bias", "c.weight"});
  root.remove_hooks(look_id);

  // backward(): each child's input and weight halves back to back, so hooks nest.
  rec.log.clear();
  dspp::Tensor dy = ref::normal_tensor(y.shape(), rng, 1.0);
  root.backward(dy);
  CHECK(rec.log == Strings{"bb:c", "ab:c", "bb:inner", "bb:inner.b", "ab:inner.b", "bb:inner.g",
                           "ab:inner.g", "ab:inner", "bb:a", "ab:a"});

  // The split halves: before_backward with the input half, after_backward with the weight half.
  rec.log.clear();
  root.forward(x);
  rec.log.clear();
  root.backward_input(dy);
  CHECK(rec.log == Strings{"bb:c", "bb:inner", "bb:inner.b", "bb:inner.g", "bb:a"});
  rec.log.clear();
  root.backward_weight(dy);
  CHECK(rec.log == Strings{"ab:c", "ab:inner.b", "ab:inner.g", "ab:inner", "ab:a"});

  // Hooks added to an inner module run only around its own children.
  root.remove_hooks(rec_id);
  Recorder inner_rec;
  inner.add_hooks(inner_rec.hooks());
  root.forward(x);
  CHECK(inner_rec.log == Strings{"bf:inner.g", "af:inner.g", "bf:inner.b", "af:inner.b"});
  rec.log.clear();
  // Two levels of hooks around one child: outer first before, last after.
  dspp::Sequential top;
  dspp::Sequential* mid = &top.add(std::make_shared<dspp::Sequential>(), "mid");
  mid->add(std::make_shared<dspp::GELU>(), "leaf");
  top.add_hooks(rec.hooks("top "));
  mid->add_hooks(rec.hooks("mid "));
  top.forward(x);
  CHECK(rec.log == Strings{"top bf:mid", "top bf:mid.leaf", "mid bf:mid.leaf", "mid af:mid.leaf",
                           "top af:mid.leaf", "top af:mid"});
}

TEST_CASE("split backward equals backward, and defers the weight half until asked") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 8);
  const int64_t B = 2, T = 6, C = 16, NH = 4;
  dspp::TransformerBlock blk(C, NH, rng, 0.02f);
  ref::randomize(blk, rng, 0.2);
  dspp::Tensor x = ref::normal_tensor({B, T, C}, rng, 1.0);
  dspp::Tensor dy = ref::normal_tensor({B, T, C}, rng, 1.0);

  blk.forward(x);
  const Vec dx_full = ref::to_vec(blk.backward(dy));
  std::vector<Vec> grads_full;
  for (auto* p : blk.parameters()) grads_full.push_back(ref::to_vec(p->grad));

  blk.zero_grad();
  blk.forward(x);
  const Vec dx_split = ref::to_vec(blk.backward_input(dy));
  for (auto* p : blk.parameters()) CHECK(ref::to_vec(p->grad) == Vec(p->grad.numel(), 0.0));
  blk.backward_weight(dy);
  CHECK(dx_split == dx_full);  // bitwise: the same kernels on the same data
  auto params = blk.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    INFO(params[i]->name);
    CHECK(ref::to_vec(params[i]->grad) == grads_full[i]);
  }
}

TEST_CASE("backward accumulates into grads (+=) across calls") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 9);
  dspp::Sequential seq;
  seq.add(std::make_shared<dspp::LayerNorm>(5));
  seq.add(std::make_shared<dspp::Linear>(5, 3, true, rng, 0.5f));
  dspp::Tensor x = ref::normal_tensor({4, 5}, rng, 1.0);
  dspp::Tensor dy = ref::normal_tensor({4, 3}, rng, 1.0);
  seq.forward(x);
  seq.backward(dy);
  std::vector<Vec> once;
  for (auto* p : seq.parameters()) once.push_back(ref::to_vec(p->grad));
  seq.forward(x);
  seq.backward(dy);
  auto params = seq.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Vec twice = once[i];
    for (double& g : twice) g *= 2.0;
    // Not bitwise: the second pass adds its terms one by one onto the first pass's sum.
    ref::check_close(params[i]->name + " after two backwards", ref::to_vec(params[i]->grad), twice,
                     {1e-6, 1e-6});
  }
}

TEST_CASE("layers name the offending module and shape in their errors") {
  dspp::Rng rng(1);
  dspp::Sequential seq;
  seq.add(std::make_shared<dspp::Linear>(3, 4, true, rng), "fc");
  CHECK(contains(error_of([&] {
                   seq.forward(dspp::Tensor::zeros({2, 5}));
                 }),
                 "Linear 'fc': input must be [..., 3], got f32[2, 5] cpu"));
  dspp::Linear lone(3, 4, true, rng);
  CHECK(contains(error_of([&] {
                   lone.backward(dspp::Tensor::zeros({2, 4}));
                 }),
                 "Linear: backward called before forward"));
  lone.forward(dspp::Tensor::zeros({2, 3}));
  CHECK(contains(error_of([&] {
                   lone.backward(dspp::Tensor::zeros({2, 3}));
                 }),
                 "Linear: dy must be f32[2, 4] cpu, got f32[2, 3] cpu"));
  dspp::CausalSelfAttention attn(8, 2, rng, 0.02f);
  CHECK(contains(error_of([&] {
                   attn.forward(dspp::Tensor::zeros({2, 8}));
                 }),
                 "CausalSelfAttention: input must be [B, T, 8], got f32[2, 8] cpu"));
  CHECK(contains(error_of([&] { dspp::CausalSelfAttention bad(10, 3, rng, 0.02f); }),
                 "must be a positive multiple of n_head"));
}

namespace {

// y = w * x^2 elementwise with a scalar weight; `bug` breaks one of the two gradients.
class Square : public dspp::Module {
 public:
  explicit Square(int bug) : bug_(bug) {
    register_parameter("w", w_, {1});
    w_.value.data<float>()[0] = 1.5f;
  }
  std::string type_name() const override { return "Square"; }
  dspp::Tensor forward(const dspp::Tensor& x) override {
    x_ = x;
    dspp::Tensor y = dspp::Tensor::empty(x.shape());
    const float w = w_.value.data<float>()[0];
    for (int64_t i = 0; i < x.numel(); ++i)
      y.data<float>()[i] = w * x.data<float>()[i] * x.data<float>()[i];
    return y;
  }
  dspp::Tensor backward_input(const dspp::Tensor& dy) override {
    dspp::Tensor dx = dspp::Tensor::empty(x_.shape());
    const float w = w_.value.data<float>()[0];
    const float k = bug_ == 1 ? 2.2f : 2.0f;  // bug 1: 10% off
    for (int64_t i = 0; i < x_.numel(); ++i) {
      dx.data<float>()[i] = k * w * x_.data<float>()[i] * dy.data<float>()[i];
    }
    return dx;
  }
  void backward_weight(const dspp::Tensor& dy) override {
    float g = 0.0f;
    for (int64_t i = 0; i < x_.numel(); ++i) {
      g += x_.data<float>()[i] * x_.data<float>()[i] * dy.data<float>()[i];
    }
    if (bug_ != 2) w_.grad.data<float>()[0] += g;  // bug 2: forgets the weight gradient
  }

 private:
  int bug_;
  dspp::Parameter w_;
  dspp::Tensor x_;
};

}  // namespace

TEST_CASE("the SDK's gradcheck passes correct layers and names the broken gradient") {
  const uint64_t seed = ref::test_seed();
  CAPTURE(seed);
  dspp::Rng rng(seed + 10);
  dspp::TransformerBlock blk(8, 2, rng, 0.02f);
  ref::randomize(blk, rng, 0.3);
  dspp::GradCheckReport rep = dspp::gradcheck(blk, ref::normal_tensor({1, 3, 8}, rng, 1.0), seed);
  INFO(rep.worst);
  CHECK(rep.ok);
  CHECK(rep.worst_error < 1e-2);

  dspp::Tensor x = ref::normal_tensor({2, 3}, rng, 1.0);
  Square good(0), bad_dx(1), bad_dw(2);
  CHECK(dspp::gradcheck(good, x, seed).ok);
  rep = dspp::gradcheck(bad_dx, x, seed);
  CHECK_FALSE(rep.ok);
  CHECK(rep.worst.rfind("dx[", 0) == 0);
  rep = dspp::gradcheck(bad_dw, x, seed);
  CHECK_FALSE(rep.ok);
  CHECK(rep.worst.rfind("w[0]", 0) == 0);
  CHECK(rep.worst_error == Approx(1.0));
}
