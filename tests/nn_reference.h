// Float64 reference implementations of the layers, written independently of core/nn (plain
// formulas, no shared code), and the finite-difference gradient check the layer tests use.
//
// The check: the layer runs in fp32 (forward, then backward with an upstream gradient r); the
// reference computes the same function in float64 from the very same values (every fp32 value is
// exact in float64), and the numeric gradient of L = sum(y * r) comes from float64 central
// differences. With step h = 1e-5 on O(1) inputs the numeric gradient is good to ~1e-9 relative
// (truncation h^2 |f'''| ~ 1e-10, rounding 1e-16 |L| / h ~ 1e-11), so any difference is the fp32
// analytic gradient's own rounding, or a bug.
#pragma once

#include <dspp/nn.h>
#include <dspp/tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"

namespace ref {

using Vec = std::vector<double>;

// A fresh seed per run (DSPP_TEST_SEED=<n> replays one); tests print it on failure.
inline uint64_t test_seed() {
  static const uint64_t seed = []() -> uint64_t {
    if (const char* s = std::getenv("DSPP_TEST_SEED")) return std::strtoull(s, nullptr, 10);
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  return seed;
}

inline Vec to_vec(const dspp::Tensor& t) {
  Vec v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DSPP_I32) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = t.data<int32_t>()[i];
  } else {
    for (size_t i = 0; i < v.size(); ++i) v[i] = t.data<float>()[i];
  }
  return v;
}

inline dspp::Tensor normal_tensor(std::vector<int64_t> shape, dspp::Rng& rng, double std,
                                  double mean = 0.0) {
  dspp::Tensor t = dspp::Tensor::empty(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) {
    t.data<float>()[i] = static_cast<float>(mean + std * rng.normal());
  }
  return t;
}

inline dspp::Tensor ids_tensor(std::vector<int64_t> shape, dspp::Rng& rng, int64_t vocab) {
  dspp::Tensor t = dspp::Tensor::empty(std::move(shape), DSPP_I32);
  for (int64_t i = 0; i < t.numel(); ++i) {
    t.data<int32_t>()[i] = static_cast<int32_t>(rng.next_u64() % static_cast<uint64_t>(vocab));
  }
  return t;
}

// Replaces every parameter value with N(0, std^2) so gradients are far from the trivial regime
// of a fresh init (uniform attention, unit LayerNorm scales).
inline void randomize(dspp::Module& m, dspp::Rng& rng, double std) {
  for (dspp::Parameter* p : m.parameters()) {
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      p->value.data<float>()[i] = static_cast<float>(std * rng.normal());
    }
  }
}

inline double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---- layers in float64 -----------------------------------------------------------------------
// y[n, o] = sum_i x[n, i] w[o, i] + b[o]
inline Vec linear(const Vec& x, int64_t n, int64_t in, const Vec& w, const Vec* b, int64_t out) {
  Vec y(static_cast<size_t>(n * out));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? (*b)[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

inline Vec layernorm(const Vec& x, int64_t n, int64_t c, const Vec& w, const Vec& b) {
  Vec y(x.size());
  for (int64_t r = 0; r < n; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < c; ++i) mean += x[r * c + i];
    mean /= static_cast<double>(c);
    for (int64_t i = 0; i < c; ++i) var += (x[r * c + i] - mean) * (x[r * c + i] - mean);
    var /= static_cast<double>(c);
    for (int64_t i = 0; i < c; ++i) {
      y[r * c + i] = (x[r * c + i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i];
    }
  }
  return y;
}

inline Vec gelu(const Vec& x) {
  Vec y(x.size());
  const double k = std::sqrt(2.0 / std::numbers::pi);
  for (size_t i = 0; i < x.size(); ++i) {
    y[i] = 0.5 * x[i] * (1.0 + std::tanh(k * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  }
  return y;
}

inline Vec add(const Vec& a, const Vec& b) {
  Vec y(a.size());
  for (size_t i = 0; i < a.size(); ++i) y[i] = a[i] + b[i];
  return y;
}

// GPT-2 attention on x [B, T, C]; p = {c_attn.weight, c_attn.bias, c_proj.weight, c_proj.bias}.
inline Vec attention(const Vec& x, int64_t B, int64_t T, int64_t C, int64_t NH, const Vec* p) {
  const int64_t hs = C / NH;
  Vec qkv = linear(x, B * T, C, p[0], &p[1], 3 * C);
  Vec o(static_cast<size_t>(B * T * C), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        auto q = [&](int64_t i) { return qkv[(b * T + t) * 3 * C + h * hs + i]; };
        auto k = [&](int64_t s, int64_t i) { return qkv[(b * T + s) * 3 * C + C + h * hs + i]; };
        auto v = [&](int64_t s, int64_t i) {
          return qkv[(b * T + s) * 3 * C + 2 * C + h * hs + i];
        };
        Vec score(static_cast<size_t>(t + 1));
        double maxv = -1e300, sum = 0.0;
        for (int64_t s = 0; s <= t; ++s) {  // causal: only positions up to t
          double d = 0.0;
          for (int64_t i = 0; i < hs; ++i) d += q(i) * k(s, i);
          score[s] = d / std::sqrt(static_cast<double>(hs));
          maxv = std::max(maxv, score[s]);
        }
        for (int64_t s = 0; s <= t; ++s) sum += std::exp(score[s] - maxv);
        for (int64_t s = 0; s <= t; ++s) {
          double prob = std::exp(score[s] - maxv) / sum;
          for (int64_t i = 0; i < hs; ++i) o[(b * T + t) * C + h * hs + i] += prob * v(s, i);
        }
      }
    }
  }
  return linear(o, B * T, C, p[2], &p[3], C);
}

// GPT-2 block; p = the block's 12 parameters in registration order: ln_1 (w, b), attn (4),
// ln_2 (w, b), mlp.c_fc (w, b), mlp.c_proj (w, b).
inline Vec block(const Vec& x, int64_t B, int64_t T, int64_t C, int64_t NH, const Vec* p) {
  const int64_t n = B * T;
  Vec r = add(x, attention(layernorm(x, n, C, p[0], p[1]), B, T, C, NH, p + 2));
  Vec h = gelu(linear(layernorm(r, n, C, p[6], p[7]), n, C, p[8], &p[9], 4 * C));
  return add(r, linear(h, n, 4 * C, p[10], &p[11], C));
}

// Mean over the targets that are not `ignore`, of -log softmax(logits)[target].
inline double cross_entropy(const Vec& logits, int64_t n, int64_t V, const Vec& targets,
                            int64_t ignore = -100) {
  double total = 0.0;
  int64_t count = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (static_cast<int64_t>(targets[r]) == ignore) continue;
    double maxv = -1e300, sum = 0.0;
    for (int64_t v = 0; v < V; ++v) maxv = std::max(maxv, logits[r * V + v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[r * V + v] - maxv);
    total += maxv + std::log(sum) - logits[r * V + static_cast<int64_t>(targets[r])];
    ++count;
  }
  return count ? total / static_cast<double>(count) : 0.0;
}

// ---- the check -------------------------------------------------------------------------------
using Fn = std::function<double(const std::vector<Vec>&)>;

// d f / d in[k][i] by central differences, for every k with wrt[k] set (others stay empty).
inline std::vector<Vec> numeric_grads(const Fn& f, std::vector<Vec> in,
                                      const std::vector<bool>& wrt, double h = 1e-5) {
  std::vector<Vec> g(in.size());
  for (size_t k = 0; k < in.size(); ++k) {
    if (!wrt[k]) continue;
    g[k].resize(in[k].size());
    for (size_t i = 0; i < in[k].size(); ++i) {
      const double x0 = in[k][i];
      in[k][i] = x0 + h;
      const double up = f(in);
      in[k][i] = x0 - h;
      const double down = f(in);
      in[k][i] = x0;
      g[k][i] = (up - down) / (2.0 * h);
    }
  }
  return g;
}

// Element by element: |a - r| <= rtol |r| + atol max|r|. The atol term is relative to the
// tensor's own scale, so tensors whose gradients are small (a fresh GPT's) are held to the same
// standard as large ones; rtol bounds the error of each element that is not tiny.
struct Tol {
  double rtol;
  double atol;
};

inline void check_close(const std::string& what, const Vec& a, const Vec& r, Tol tol) {
  REQUIRE(a.size() == r.size());
  double scale = 0.0;
  for (double v : r) scale = std::max(scale, std::abs(v));
  double worst = 0.0;  // largest |a - r| / allowed
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double allowed = tol.rtol * std::abs(r[i]) + tol.atol * scale + 1e-30;
    const double ratio = std::abs(a[i] - r[i]) / allowed;
    if (!(ratio <= worst)) {  // also catches NaN
      worst = ratio;
      at = i;
    }
  }
  std::ostringstream msg;
  msg << what << ": worst element " << at << " analytic " << a[at] << " reference " << r[at]
      << " (scale " << scale << "), " << worst << " of the allowed error";
  INFO(msg.str());
  CHECK(worst <= 1.0);
  if (std::getenv("DSPP_TEST_VERBOSE")) WARN(msg.str());
}

}  // namespace ref
