// gradcheck: a layer's hand-written backward against central differences of its own forward.
#include <dspp/error.h>
#include <dspp/nn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace dspp {
namespace {

double weighted_sum(const Tensor& y, const std::vector<float>& r) {
  double s = 0.0;
  const float* p = y.data<float>();
  for (size_t i = 0; i < r.size(); ++i) s += static_cast<double>(p[i]) * r[i];
  return s;
}

// Numeric d L / d t[i] for every element of `t` (perturbed in place, then restored).
std::vector<double> numeric(Module& m, const Tensor& x, const Tensor& t,
                            const std::vector<float>& r, double step) {
  std::vector<double> g(static_cast<size_t>(t.numel()));
  float* p = t.data<float>();
  for (size_t i = 0; i < g.size(); ++i) {
    const float v = p[i];
    const float up = static_cast<float>(v + step), down = static_cast<float>(v - step);
    p[i] = up;
    const double lu = weighted_sum(m.forward(x), r);
    p[i] = down;
    const double ld = weighted_sum(m.forward(x), r);
    p[i] = v;
    g[i] = (lu - ld) / (static_cast<double>(up) - static_cast<double>(down));  // the real step
  }
  return g;
}

void compare(GradCheckReport& rep, const std::string& what, const Tensor& analytic,
             const std::vector<double>& num, double tolerance) {
  double scale = 0.0, worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < num.size(); ++i) {
    scale = std::max(scale, std::abs(num[i]));
    const double e = std::abs(analytic.data<float>()[i] - num[i]);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  const double rel = worst / std::max(scale, 1e-30);
  if (!(rel <= tolerance)) rep.ok = false;
  if (!(rel <= rep.worst_error)) {
    rep.worst_error = rel;
    rep.worst = what + "[" + std::to_string(at) + "]: analytic " +
                std::to_string(analytic.data<float>()[at]) + ", numeric " + std::to_string(num[at]);
  }
}

}  // namespace

GradCheckReport gradcheck(Module& module, const Tensor& x, uint64_t seed, double step,
                          double tolerance) {
  if (!x.defined() || x.device().type != DSPP_DEVICE_CPU) {
    throw Error(Errc::kInvalidArgument, "gradcheck needs a host input, got " + x.describe());
  }
  // A private copy: the input is perturbed in place.
  Tensor xc = Tensor::empty(x.shape(), x.dtype());
  std::memcpy(xc.data(), x.data(), x.nbytes());

  module.zero_grad();
  Tensor y = module.forward(xc);
  if (y.dtype() != DSPP_F32) {
    throw Error(Errc::kInvalidArgument, "gradcheck needs an f32 output, got " + y.describe());
  }
  Rng rng(seed);
  std::vector<float> r(static_cast<size_t>(y.numel()));
  for (float& v : r) v = static_cast<float>(rng.normal());
  Tensor dy = Tensor::empty(y.shape());
  std::memcpy(dy.data(), r.data(), r.size() * sizeof(float));
  Tensor dx = module.backward(dy);

  GradCheckReport rep;
  if (xc.dtype() == DSPP_F32) {
    if (!dx.defined()) throw Error(Errc::kInvalidArgument, "gradcheck: backward returned no dx");
    compare(rep, "dx", dx, numeric(module, xc, xc, r, step), tolerance);
  }
  for (Parameter* p : module.parameters()) {
    compare(rep, p->name, p->grad, numeric(module, xc, p->value, r, step), tolerance);
  }
  return rep;
}

}  // namespace dspp
