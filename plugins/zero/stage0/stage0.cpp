// zero/stage0: DeepSpeed's ZeRO stage 0, plain data parallelism. Every rank keeps the whole model
// state; at the accumulation boundary the gradients are all-reduced in buckets of
// zero_optimization.reduce_bucket_size elements (all buckets issued, then waited, so the comm
// plugin can pipeline them), averaged (or summed) over the data-parallel group, and every rank
// steps the optimizer on the whole flat buffer. No hooks: nothing happens during backward.
#include <dspp/kinds/zero.h>
#include <dspp/plugin.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::StatusError;

dspp_tensor_view slice(dspp_tensor_view v, int64_t offset, int64_t n) {
  dspp_tensor_view s = v;
  s.data = static_cast<float*>(v.data) + offset;
  s.ndim = 1;
  s.shape[0] = n;
  return s;
}

class Stage0 final : public dspp::ZeroStage {
 public:
  Stage0(const dspp_host_api* host, ConfigReader cfg)
      : host_(host), bucket_(cfg.get_int("reduce_bucket_size", 500000000)) {
    if (bucket_ < 1) {
      throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                        "zero_optimization.reduce_bucket_size must be at least 1, got " +
                            std::to_string(bucket_));
    }
  }

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      setup_ = *s;
      if (setup_.flat_params.dtype != DSPP_F32 || setup_.flat_grads.dtype != DSPP_F32) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero/stage0: flat buffers must be fp32");
      }
      segments_.clear();
      for (int32_t i = 0; i < s->num_params; ++i) {
        const dspp::ZeroParam& p = s->params[i];
        if (p.group < 0) continue;  // in no parameter group: not trained
        dspp::ParamSegment seg{};
        seg.name = p.name;
        seg.group = p.group;
        seg.flags = p.flags;
        seg.ndim = p.ndim;
        for (int32_t d = 0; d < p.ndim && d < DSPP_MAX_DIMS; ++d) seg.shape[d] = p.shape[d];
        seg.offset_in_param = 0;
        seg.offset_in_flat = p.offset_in_flat;
        seg.numel = p.numel;
        segments_.push_back(seg);
      }
      flat_numel_ = setup_.flat_grads.shape[0];
      if (setup_.optimizer) {
        dspp::OptimizerSetup os{segments_.data(), static_cast<int32_t>(segments_.size()),
                                setup_.groups,    setup_.num_groups,
                                flat_numel_,      setup_.device};
        dspp::plugin::pass_through(setup_.optimizer->init(&os));
      }
    });
  }

  dspp_status before_forward(int32_t, int32_t) noexcept override { return DSPP_OK; }
  dspp_status after_forward(int32_t, int32_t) noexcept override { return DSPP_OK; }
  dspp_status before_backward(int32_t, int32_t) noexcept override { return DSPP_OK; }
  dspp_status after_backward(int32_t, int32_t) noexcept override { return DSPP_OK; }

  dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept override {
    return guard([&] {
      float* g = static_cast<float*>(setup_.flat_grads.data);
      const int32_t n = setup_.dp->size();
      if (n > 1) {
        const double f = setup_.predivide_factor > 0 ? setup_.predivide_factor : 1.0;
        if (f != 1.0) scale(g, 0, flat_numel_, static_cast<float>(1.0 / f));
        // Mean without a predivide factor is the comm plugin's avg; otherwise sum, then rescale.
        const int32_t op = (setup_.average && f == 1.0) ? dspp::kReduceAvg : dspp::kReduceSum;
        std::vector<dspp::CommWork*> works;
        dspp_status first_error = DSPP_OK;
        for (int64_t off = 0; off < flat_numel_; off += bucket_) {
          const int64_t len = std::min(bucket_, flat_numel_ - off);
          dspp::CommWork* w = nullptr;
          first_error = setup_.dp->all_reduce(slice(setup_.flat_grads, off, len), op, &w);
          if (first_error != DSPP_OK) break;
          works.push_back(w);
        }
        // Wait for every issued bucket even after a failure: the buffers must outlive the work.
        for (dspp::CommWork* w : works) {
          dspp_status s = w->wait();
          w->release();
          if (first_error == DSPP_OK) first_error = s;
        }
        dspp::plugin::pass_through(first_error);
        const double after = setup_.average ? (f == 1.0 ? 1.0 : f / n) : f;
        if (after != 1.0) scale(g, 0, flat_numel_, static_cast<float>(after));
      }
      // Every rank now holds the same reduced gradient: the norm is global as computed here.
      double sq = 0.0;
      bool bad = false;
      for (const dspp::ParamSegment& seg : segments_) {
        const float* p = g + seg.offset_in_flat;
        double part = 0.0;
        for (int64_t i = 0; i < seg.numel; ++i) part += static_cast<double>(p[i]) * p[i];
        sq += part;
        if (!std::isfinite(part)) bad = true;
      }
      *sq_norm = sq;
      *overflow = bad ? 1 : 0;
    });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      if (!setup_.optimizer) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero/stage0: no optimizer");
      }
      float* g = static_cast<float*>(setup_.flat_grads.data);
      if (grad_scale != 1.0) {
        for (const dspp::ParamSegment& seg : segments_) {
          scale(g, seg.offset_in_flat, seg.numel, static_cast<float>(grad_scale));
        }
      }
      dspp::StepArgs a = *args;
      a.params = setup_.flat_params;
      a.grads = setup_.flat_grads;
      dspp::plugin::pass_through(setup_.optimizer->step(&a));
    });
  }

  dspp_status zero_grad() noexcept override {
    std::memset(setup_.flat_grads.data, 0, static_cast<size_t>(flat_numel_) * sizeof(float));
    return DSPP_OK;
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      // fp32 training: the parameters are the master weights, so no separate master copy.
      out->param_bytes = flat_numel_ * 4;
      out->grad_bytes = flat_numel_ * 4;
      out->master_bytes = 0;
      out->optimizer_state_bytes = 0;
      if (!setup_.optimizer) return;
      for (int32_t i = 0; i < setup_.optimizer->num_states(); ++i) {
        const char* name = nullptr;
        dspp_tensor_view v{};
        dspp::plugin::pass_through(setup_.optimizer->state(i, &name, &v));
        int64_t n = 1;
        for (int32_t d = 0; d < v.ndim; ++d) n *= v.shape[d];
        out->optimizer_state_bytes += n * 4;
      }
    });
  }

 private:
  template <class Fn>
  dspp_status guard(Fn&& fn) const noexcept {
    return dspp::plugin::guard(host_, std::forward<Fn>(fn));
  }

  static void scale(float* g, int64_t off, int64_t n, float c) {
    float* p = g + off;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) p[i] *= c;
  }

  const dspp_host_api* host_;
  int64_t bucket_;
  dspp::ZeroSetup setup_{};
  std::vector<dspp::ParamSegment> segments_;
  int64_t flat_numel_ = 0;
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::ZeroStage, Stage0>(
    DSPP_KIND_ZERO, "stage0", "1.0.0",
    "ZeRO stage 0: whole model state on every rank, gradients all-reduced in buckets")};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_zero_stage0", kPlugins)
