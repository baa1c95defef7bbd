// DeepSpeed's fp16 loss scalers; see loss_scaler.h.
#include "precision/loss_scaler.h"

#include <dspp/config.h>
#include <dspp/error.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace dspp::precision {

namespace {
constexpr double kScaleFactor = 2.0;  // DeepSpeed's scale_factor, not configurable
}

LossScaler::LossScaler(double static_scale) {
  state_.cur_scale = static_scale;
}

LossScaler::LossScaler(const DynamicLossScaleArgs& args) : dynamic_(true), args_(args) {
  if (args.scale_window < 1) {
    throw Error(Errc::kInvalidArgument, "dynamic loss scale: scale_window must be >= 1, got " +
                                            std::to_string(args.scale_window));
  }
  if (!(args.min_scale > 0.0)) {
    throw Error(Errc::kInvalidArgument,
                "dynamic loss scale: min_scale must be > 0, got " + std::to_string(args.min_scale));
  }
  state_.cur_scale = args.init_scale;
  state_.cur_iter = 0;
  state_.last_overflow_iter = -1;
  state_.cur_hysteresis = args.delayed_shift;
}

LossScaler LossScaler::from_config(const Config& cfg, Fp16Path path) {
  if (!cfg.get_bool("fp16.enabled")) return LossScaler(1.0);
  const double static_scale = cfg.get_double("fp16.loss_scale");
  if (static_scale > 0.0) return LossScaler(static_scale);
  DynamicLossScaleArgs a;
  // 2**power in Python: exact, and a fraction for a negative power.
  a.init_scale = std::ldexp(1.0, static_cast<int>(cfg.get_int("fp16.initial_scale_power")));
  a.scale_window = cfg.get_int("fp16.loss_scale_window");
  a.min_scale = static_cast<double>(cfg.get_int("fp16.min_loss_scale"));
  a.delayed_shift = cfg.get_int("fp16.hysteresis");
  a.consecutive_hysteresis = cfg.get_bool("fp16.consecutive_hysteresis");
  if (path == Fp16Path::kFp16Optimizer) {
    a.delayed_shift = 1;
    a.consecutive_hysteresis = false;
    a.raise_error_at_min_scale = false;
  }
  return LossScaler(a);
}

void LossScaler::update_scale(bool overflow) {
  if (!dynamic_) return;
  LossScalerState& s = state_;
  if (overflow) {
    if (args_.delayed_shift == 1 || s.cur_hysteresis == 1) {
      if (s.cur_scale == args_.min_scale && args_.raise_error_at_min_scale) {
        throw Error(Errc::kRuntime,
                    "fp16: gradients overflowed at the minimum loss scale " +
                        std::to_string(args_.min_scale) +
                        " (fp16.min_loss_scale) with the hysteresis spent; the scale cannot "
                        "decrease any more, so the run stops (as DeepSpeed's does)");
      }
      s.cur_scale = std::max(s.cur_scale / kScaleFactor, args_.min_scale);
    } else {
      s.cur_hysteresis -= 1;
    }
    s.last_overflow_iter = s.cur_iter;
  } else {
    if (args_.consecutive_hysteresis) s.cur_hysteresis = args_.delayed_shift;
    const int64_t stable = s.cur_iter - s.last_overflow_iter - 1;
    if (stable > 0 && stable % args_.scale_window == 0) {
      if (!args_.consecutive_hysteresis) s.cur_hysteresis = args_.delayed_shift;
      s.cur_scale *= kScaleFactor;
    }
  }
  s.cur_iter += 1;
}

}  // namespace dspp::precision
