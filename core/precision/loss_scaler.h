// DeepSpeed's fp16 loss scalers (deepspeed/runtime/fp16/loss_scaler.py, DeepSpeed 0.19):
// LossScaler (a static scale) and DynamicLossScaler, with the same state transitions, so that a
// run skips the same steps and scales by the same powers of two as DeepSpeed's.
//
// Dynamic rule, update_scale(overflow) after every step:
//   overflow:    if delayed_shift == 1 or cur_hysteresis == 1 the scale halves (not below
//                min_scale; an overflow already at min_scale is an error when
//                raise_error_at_min_scale), else cur_hysteresis -= 1; last_overflow_iter =
//                cur_iter.
//   no overflow: consecutive_hysteresis refills cur_hysteresis; stable = cur_iter -
//                last_overflow_iter - 1; if stable > 0 and stable % scale_window == 0 the scale
//                doubles (and, without consecutive_hysteresis, cur_hysteresis is refilled).
//   cur_iter += 1.
// So the first raise comes after scale_window + 1 clean steps (DeepSpeed 0.19's "stable
// interval"; releases before it raised after scale_window).
//
// DeepSpeed uses DynamicLossScaler under ZeRO 1-3. Without ZeRO, its FP16_Optimizer and
// FP16_UnfusedOptimizer apply the same rule with no hysteresis and no error at the floor: that
// is this class with delayed_shift 1 and raise_error_at_min_scale false (Fp16Path::kFp16Optimizer).
#pragma once

#include <cstdint>

namespace dspp {
class Config;
}

namespace dspp::precision {

// DynamicLossScaler's arguments, DeepSpeed's defaults (fp16 block keys in the comments).
struct DynamicLossScaleArgs {
  double init_scale = 65536.0;           // 2^fp16.initial_scale_power (16)
  int64_t scale_window = 1000;           // fp16.loss_scale_window
  double min_scale = 1.0;                // fp16.min_loss_scale
  int64_t delayed_shift = 2;             // fp16.hysteresis
  bool consecutive_hysteresis = false;   // fp16.consecutive_hysteresis
  bool raise_error_at_min_scale = true;  // not a config key: DeepSpeed's ZeRO path keeps true
};

// What a checkpoint keeps (DeepSpeed pickles the scaler object; these are its changing fields).
struct LossScalerState {
  double cur_scale = 1.0;
  int64_t cur_iter = 0;
  int64_t last_overflow_iter = -1;
  int64_t cur_hysteresis = 0;
  bool operator==(const LossScalerState&) const = default;
};

// Which of DeepSpeed's fp16 paths to follow (see the top of this file).
enum class Fp16Path { kZero, kFp16Optimizer };

class LossScaler {
 public:
  // A static scale: update_scale changes nothing (DeepSpeed's LossScaler).
  explicit LossScaler(double static_scale = 1.0);
  // DynamicLossScaler. Throws Error(kInvalidArgument) for scale_window < 1 or min_scale <= 0,
  // which DeepSpeed's config refuses too (a zero window would divide by zero).
  explicit LossScaler(const DynamicLossScaleArgs& args);

  // DeepSpeed's choice from the fp16 block: fp16.enabled with loss_scale 0 is dynamic with the
  // block's arguments, with loss_scale > 0 static at that scale; without fp16 (fp32, bf16) a
  // static scale of 1, as DeepSpeed's CreateLossScaler gives other dtypes.
  static LossScaler from_config(const Config& cfg, Fp16Path path = Fp16Path::kZero);

  bool dynamic() const { return dynamic_; }
  double loss_scale() const { return state_.cur_scale; }

  // After a step, with whether any gradient overflowed (inf or NaN) on any rank; the caller
  // skips the optimizer step on overflow. Throws Error(kRuntime) on an overflow that would have
  // to go below min_scale when raise_error_at_min_scale (the state is then left unchanged, as
  // DeepSpeed raises before touching it).
  void update_scale(bool overflow);

  const DynamicLossScaleArgs& args() const { return args_; }
  const LossScalerState& state() const { return state_; }
  // Restores a checkpoint's state (the arguments stay this scaler's, from the config).
  void load_state(const LossScalerState& state) { state_ = state; }

 private:
  bool dynamic_ = false;
  DynamicLossScaleArgs args_;
  LossScalerState state_;
};

}  // namespace dspp::precision
