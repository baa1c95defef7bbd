// optimizer/lamb: LAMB (You et al. 2019) over flat fp32 buffers with DeepSpeed's FusedLamb math,
// names and defaults. For each parameter, at step t:
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2        (moments NOT
//   bias-corrected) u = m / (sqrt(v) + eps) + wd p          (eps_inside_sqrt: m / sqrt(v + eps) +
//   wd p) coeff = clamp(||p|| / ||u||, min_coeff, max_coeff), or 1 when either norm is 0 p = p -
//   step_size coeff u,   step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t)  (lr without
//                                                                        bias_correction)
// The trust ratio needs the norms of the whole parameter, so needs_whole_params() is true and init
// refuses a segment that is a slice (a ZeRO stage must keep parameters whole for Lamb; DeepSpeed's
// ZeRO-1/2 instead hand FusedLamb one flat partition and so compute one ratio per partition).
//
// On a GPU (OptimizerSetup::device CUDA, DeviceKernels version 3), per parameter: sum_squares of
// p, lamb_moments (the first pass, the update u into a scratch buffer sized for the largest
// parameter) and sum_squares of u; the squared norms of all parameters are copied to the host at
// once (the step's one device-to-host copy), where the trust ratios are computed by the CPU path's
// code; then lamb_apply per parameter (the second pass, the update recomputed as on the CPU). The
// moments equal the CPU's bit for bit; the norms are sums in another order (the CPU's SIMD
// reduction against the device's fixed tree), so a trust ratio can differ in its last double bits
// and, rarely, the fp32 scale by one ulp, and p then by about an ulp.
#include "../common/flat_optimizer.h"

namespace {

using dspp::optim::ConfigReader;
using dspp::optim::fail;
using dspp::optim::FlatOptimizer;
using dspp::optim::GroupStep;
using dspp::optim::OptionReader;

struct LambHyper {
  double lr = 1e-3;
  bool bias_correction = true;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  double max_coeff = 10.0;
  double min_coeff = 0.01;
};

struct LambConsts {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, wd, step_size;
};

// First pass: moments, and the squared norms of p and of the update (accumulated in double).
template <bool kEpsInside>
void lamb_moments(const float* __restrict p, const float* __restrict g, float* __restrict m,
                  float* __restrict v, int64_t n, const LambConsts& k, double* w2_out,
                  double* u2_out) {
  double w2 = 0.0, u2 = 0.0;
#pragma omp simd reduction(+ : w2, u2)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float pi = p[i];
    const float mi = k.beta1 * m[i] + k.one_minus_beta1 * gi;
    const float vi = k.beta2 * v[i] + k.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = kEpsInside ? std::sqrt(vi + k.eps) : std::sqrt(vi) + k.eps;
    const float u = mi / denom + k.wd * pi;
    u2 += static_cast<double>(u) * u;
    w2 += static_cast<double>(pi) * pi;
  }
  *w2_out = w2;
  *u2_out = u2;
}

// Second pass: recompute the update from the new moments and apply it with the trust ratio.
template <bool kEpsInside>
void lamb_apply(float* __restrict p, const float* __restrict m, const float* __restrict v,
                int64_t n, const LambConsts& k, float scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float pi = p[i];
    const float denom = kEpsInside ? std::sqrt(v[i] + k.eps) : std::sqrt(v[i]) + k.eps;
    const float u = m[i] / denom + k.wd * pi;
    p[i] = pi - scale * u;
  }
}

const char* const kGroupKeys[] = {"lr",           "bias_correction", "betas",    "eps",
                                  "weight_decay", "max_coeff",       "min_coeff"};

class Lamb final : public FlatOptimizer {
 public:
  Lamb(const dspp_host_api* host, ConfigReader cfg) : FlatOptimizer(host, "lamb") {
    OptionReader o("lamb", cfg, "optimizer.params.");
    dspp::optim::refuse_max_grad_norm(o);
    base_ = read(o, LambHyper{});
    eps_inside_sqrt_ = o.flag("eps_inside_sqrt", false);
    if (o.flag("amsgrad", false))
      fail(
          "lamb: optimizer.params.amsgrad is not supported: DeepSpeed's FusedLamb refuses the "
          "AMSGrad variant");
  }

  int32_t needs_whole_params() const noexcept override { return 1; }

 protected:
  void configure(const dspp::OptimizerSetup& setup) override {
    for (int32_t s = 0; s < num_segments(); ++s)
      if (!segment_is_whole(s))
        fail("lamb: " + segment_name(s) +
             " is a slice of its parameter, but Lamb's trust ratio needs whole parameters "
             "(needs_whole_params() is true)");
    groups_.assign(setup.num_groups, base_);
    std::vector<double> lrs(setup.num_groups);
    for (int32_t g = 0; g < setup.num_groups; ++g) {
      const dspp::ParamGroupSetup& sg = setup.groups[g];
      GroupOptions go(plugin_name(), sg, g, {std::begin(kGroupKeys), std::end(kGroupKeys)});
      warn_unknown(go, g);
      LambHyper h = read(go.reader, base_);
      h.lr = group_value(sg.lr, go.reader, "lr", h.lr);
      h.weight_decay = group_value(sg.weight_decay, go.reader, "weight_decay", h.weight_decay);
      groups_[g] = h;
      lrs[g] = h.lr;
    }
    set_setup_lrs(std::move(lrs));
    m_ = add_state("exp_avg", 0.0f);
    v_ = add_state("exp_avg_sq", 0.0f);
    w2_.assign(chunks().size(), 0.0);
    u2_.assign(chunks().size(), 0.0);
    u_device_ = nullptr;
    norms_device_ = nullptr;
    if (on_device() && num_segments() > 0) {
      int64_t largest = 0;
      for (int32_t s = 0; s < num_segments(); ++s)
        largest = std::max(largest, segment_end(s) - segment_begin(s));
      u_device_ = static_cast<float*>(
          add_device_scratch(static_cast<size_t>(largest) * sizeof(float), "the update"));
      norms_device_ = static_cast<double*>(add_device_scratch(
          2 * static_cast<size_t>(num_segments()) * sizeof(double), "the squared norms"));
    }
  }

  void run_step(float* params, const float* grads, int64_t step,
                const std::vector<GroupStep>& gs) override {
    const std::vector<LambConsts> k = slot_consts(step, gs);
    float* m = m_;
    float* v = v_;
    const bool inside = eps_inside_sqrt_;
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t ci) {
      const int64_t b = c.begin, n = c.end - c.begin;
      if (inside) {
        lamb_moments<true>(params + b, grads + b, m + b, v + b, n, k[c.slot], &w2_[ci], &u2_[ci]);
      } else {
        lamb_moments<false>(params + b, grads + b, m + b, v + b, n, k[c.slot], &w2_[ci], &u2_[ci]);
      }
    });
    // Sum the chunks of each segment in a fixed order: the same result for any thread count.
    const std::vector<dspp::optim::Chunk>& cs = chunks();
    std::vector<float> scale(cs.size());
    for (size_t c0 = 0; c0 < cs.size();) {
      size_t c1 = c0;
      double w2 = 0.0, u2 = 0.0;
      while (c1 < cs.size() && cs[c1].segment == cs[c0].segment) {
        w2 += w2_[c1];
        u2 += u2_[c1];
        ++c1;
      }
      const double coeff = trust_ratio(groups_[cs[c0].group], w2, u2);
      for (size_t c = c0; c < c1; ++c)
        scale[c] = static_cast<float>(static_cast<double>(k[cs[c].slot].step_size) * coeff);
      c0 = c1;
    }
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t ci) {
      const int64_t b = c.begin, n = c.end - c.begin;
      if (inside) {
        lamb_apply<true>(params + b, m + b, v + b, n, k[c.slot], scale[ci]);
      } else {
        lamb_apply<false>(params + b, m + b, v + b, n, k[c.slot], scale[ci]);
      }
    });
  }

 protected:
  bool runs_on_device() const override { return true; }
  dspp::optim::DeviceKernelsNeed device_kernels_need() const override {
    return {3, "lamb_moments, lamb_apply"};
  }

  void run_step_device(float* params, const float* grads, int64_t step,
                       const std::vector<GroupStep>& gs) override {
    const std::vector<LambConsts> k = slot_consts(step, gs);
    dspp::DeviceKernels* kern = device_kernels();
    std::vector<int32_t> segs;  // the non-empty ones
    for (int32_t s = 0; s < num_segments(); ++s)
      if (segment_end(s) > segment_begin(s)) segs.push_back(s);
    if (segs.empty()) return;
    auto f64 = [&](double* d) {
      dspp_tensor_view v{};
      v.data = d;
      v.dtype = DSPP_F64;
      v.ndim = 1;
      v.shape[0] = 1;
      v.device = where();
      return v;
    };
    // First pass: norms[2 i] = |p|^2, the moments, norms[2 i + 1] = |u|^2.
    for (size_t i = 0; i < segs.size(); ++i) {
      const int32_t s = segs[i];
      const int64_t b = segment_begin(s), n = segment_end(s) - b;
      const dspp::DeviceLambConsts dk = device_consts(k[segment_slot(s)]);
      const dspp_tensor_view p = device_view(params + b, n);
      const dspp_tensor_view g = device_view(grads + b, n);
      const dspp_tensor_view m = device_view(m_ + b, n);
      const dspp_tensor_view v = device_view(v_ + b, n);
      const dspp_tensor_view u = device_view(u_device_, n);
      const dspp_tensor_view w2 = f64(norms_device_ + 2 * i);
      const dspp_tensor_view u2 = f64(norms_device_ + 2 * i + 1);
      dspp::plugin::pass_through(kern->sum_squares(&p, &w2, 0, nullptr));
      dspp::plugin::pass_through(kern->lamb_moments(&p, &g, &m, &v, &dk, &u, nullptr));
      dspp::plugin::pass_through(kern->sum_squares(&u, &u2, 0, nullptr));
    }
    std::vector<double> norms(2 * segs.size());
    dspp::plugin::pass_through(
        device()->copy(norms.data(), norms_device_, norms.size() * sizeof(double), nullptr));
    // Second pass with each parameter's trust ratio (the CPU path's arithmetic).
    for (size_t i = 0; i < segs.size(); ++i) {
      const int32_t s = segs[i];
      const int64_t b = segment_begin(s), n = segment_end(s) - b;
      const LambConsts& c = k[segment_slot(s)];
      const dspp::DeviceLambConsts dk = device_consts(c);
      const double coeff = trust_ratio(groups_[segment_group(s)], norms[2 * i], norms[2 * i + 1]);
      const float scale = static_cast<float>(static_cast<double>(c.step_size) * coeff);
      const dspp_tensor_view p = device_view(params + b, n);
      const dspp_tensor_view m = device_view(m_ + b, n);
      const dspp_tensor_view v = device_view(v_ + b, n);
      dspp::plugin::pass_through(kern->lamb_apply(&p, &m, &v, &dk, scale, nullptr));
    }
  }

 private:
  // The constants of every slot (Chunk::slot) for this step, both paths'.
  std::vector<LambConsts> slot_consts(int64_t step, const std::vector<GroupStep>& gs) const {
    std::vector<LambConsts> k(num_slots());
    for (int32_t s = 0; s < num_slots(); ++s) {
      const int32_t g = slot_group(s);
      const LambHyper& h = groups_[g];
      const double wd = slot_no_decay(s) ? 0.0 : h.weight_decay;
      const double b1 = std::isnan(gs[g].beta1) ? h.betas[0] : gs[g].beta1;
      const double b2 = h.betas[1];
      const double t = static_cast<double>(step);
      const double step_size =
          h.bias_correction ? gs[g].lr * std::sqrt(1.0 - std::pow(b2, t)) / (1.0 - std::pow(b1, t))
                            : gs[g].lr;
      k[s] = LambConsts{static_cast<float>(b1),       static_cast<float>(1.0 - b1),
                        static_cast<float>(b2),       static_cast<float>(1.0 - b2),
                        static_cast<float>(h.eps),    static_cast<float>(wd),
                        static_cast<float>(step_size)};
    }
    return k;
  }

  // clamp(||p|| / ||u||, min_coeff, max_coeff), or 1 when either norm is 0, from the squares.
  static double trust_ratio(const LambHyper& h, double w2, double u2) {
    const double w = std::sqrt(w2), u = std::sqrt(u2);
    double coeff = 1.0;
    if (w != 0.0 && u != 0.0) coeff = std::clamp(w / u, h.min_coeff, h.max_coeff);
    return coeff;
  }

  dspp::DeviceLambConsts device_consts(const LambConsts& c) const {
    return dspp::DeviceLambConsts{
        c.beta1, c.one_minus_beta1,       c.beta2, c.one_minus_beta2, c.eps,
        c.wd,    eps_inside_sqrt_ ? 1 : 0};
  }

  static LambHyper read(const OptionReader& o, const LambHyper& d) {
    LambHyper h;
    h.lr = o.non_negative("lr", d.lr);
    h.bias_correction = o.flag("bias_correction", d.bias_correction);
    h.betas = o.betas("betas", d.betas);
    h.eps = o.non_negative("eps", d.eps);
    h.weight_decay = o.non_negative("weight_decay", d.weight_decay);
    h.max_coeff = o.non_negative("max_coeff", d.max_coeff);
    h.min_coeff = o.non_negative("min_coeff", d.min_coeff);
    if (h.min_coeff > h.max_coeff)
      fail("lamb: " + o.where() + "min_coeff must not exceed max_coeff, got min_coeff " +
           dspp::optim::fmt_double(h.min_coeff) + " and max_coeff " +
           dspp::optim::fmt_double(h.max_coeff));
    return h;
  }

  LambHyper base_;
  bool eps_inside_sqrt_ = false;
  std::vector<LambHyper> groups_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  std::vector<double> w2_, u2_;  // per-chunk squared norms of p and of the update
  // The GPU path's scratch (add_device_scratch): the largest parameter's update, and |p|^2 and
  // |u|^2 of every segment.
  float* u_device_ = nullptr;
  double* norms_device_ = nullptr;
};

using dspp::optim::kNonNegativeAuto;
using dspp::optim::option;

const dspp_option_desc kOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "0.001", "Learning rate.", kNonNegativeAuto),
    option("bias_correction", DSPP_VALUE_BOOL, "true",
           "Scale the step by sqrt(1 - beta2^t) / (1 - beta1^t)."),
    option("betas", DSPP_VALUE_ARRAY, "[0.9, 0.999]",
           "Coefficients of the running averages of the gradient and its square, each in [0, 1).",
           DSPP_OPTION_ALLOW_AUTO),
    option("eps", DSPP_VALUE_FLOAT, "1e-08", "Added to the denominator for numerical stability.",
           kNonNegativeAuto),
    option("eps_inside_sqrt", DSPP_VALUE_BOOL, "false",
           "Denominator sqrt(v + eps) instead of sqrt(v) + eps."),
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0",
           "Weight decay added to the update before the trust ratio.", kNonNegativeAuto),
    option("max_coeff", DSPP_VALUE_FLOAT, "10.0", "Upper clamp of the trust ratio.",
           DSPP_OPTION_HAS_MIN),
    option("min_coeff", DSPP_VALUE_FLOAT, "0.01", "Lower clamp of the trust ratio.",
           DSPP_OPTION_HAS_MIN),
    option("amsgrad", DSPP_VALUE_BOOL, "false", "Not supported (FusedLamb refuses it)."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Optimizer, Lamb>(
        DSPP_KIND_OPTIMIZER, "lamb", "1.0.0",
        "LAMB with a per-parameter trust ratio over flat fp32 buffers (DeepSpeed's FusedLamb).",
        kOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_optimizer_lamb", kPlugins)
