// DeepSpeed's LR schedules (deepspeed/runtime/lr_schedules.py, 0.19) as scheduler plugins:
// warmuplr, warmupdecaylr, warmupcosinelr, onecycle and lrrangetest, with DeepSpeed's parameter
// names, defaults and errors.
//
// Indexing (see dspp/kinds/scheduler.h): lr_at(n) is what DeepSpeed's param groups hold after n
// calls to step(). DeepSpeed writes its formulas in last_batch_iteration, which is n - 1 for n >=
// 1; n == 0 is whatever its constructor stores, which is not always the formula at -1
// (WarmupCosineLR stores 0, OneCycle stores cycle_min_mom as momentum). Each expression keeps
// DeepSpeed's operand order, so the doubles agree bit for bit with Python's on the same libm.
#include <dspp/abi.h>
#include <dspp/kinds/scheduler.h>
#include <dspp/plugin.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <string>
#include <system_error>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::StatusError;

[[noreturn]] void fail(const std::string& msg) {
  throw StatusError(DSPP_ERR_INVALID_ARGUMENT, msg);
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// JSON null is Python's None. Only keys whose DeepSpeed default is None (or that are required)
// read it as "not given"; elsewhere null is a type error, as it is in DeepSpeed.
bool given(const ConfigReader& cfg, const char* key) {
  return cfg.has(key) && cfg.get_json(key) != "null";
}

// A compact JSON array of numbers, e.g. "[0.001,2e-3]". from_chars, unlike strtod, ignores the
// host's locale.
std::vector<double> parse_numbers(const std::string& json, const std::string& where) {
  std::vector<double> out;
  const char* p = json.data();
  const char* end = json.data() + json.size();
  auto skip_space = [&] {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  };
  auto bad = [&]() { fail(where + " must be a number or a list of numbers, got " + json); };
  skip_space();
  if (p == end || *p != '[') bad();
  ++p;
  skip_space();
  if (p < end && *p == ']') {
    ++p;
  } else {
    for (;;) {
      skip_space();
      double v = 0;
      auto [next, ec] = std::from_chars(p, end, v);
      if (ec != std::errc()) bad();
      out.push_back(v);
      p = next;
      skip_space();
      if (p < end && *p == ',') {
        ++p;
        continue;
      }
      if (p < end && *p == ']') {
        ++p;
        break;
      }
      bad();
    }
  }
  skip_space();
  if (p != end) bad();
  return out;
}

// DeepSpeed's "float or list" parameters: a number applies to every parameter group, a list gives
// one value per group. The group count is known only at init(), so the length is checked there.
struct PerGroup {
  std::string key;
  std::vector<double> values;  // the one number, or the list
  bool is_list = false;
};

PerGroup read_per_group(const ConfigReader& cfg, const std::string& schedule, const char* key,
                        double dflt) {
  PerGroup p;
  p.key = key;
  if (!cfg.has(key)) {
    p.values = {dflt};
    return p;
  }
  const std::string json = cfg.get_json(key);
  if (!json.empty() && json[0] == '[') {
    p.values = parse_numbers(json, schedule + ": " + key);
    p.is_list = true;
    return p;
  }
  p.values = {cfg.get_double(key, dflt)};
  return p;
}

std::vector<double> per_group(const PerGroup& p, size_t groups, const std::string& schedule) {
  if (!p.is_list) return std::vector<double>(groups, p.values[0]);
  if (p.values.size() != groups) {
    fail(schedule + ": " + p.key + " has " + std::to_string(p.values.size()) +
         " values but the optimizer has " + std::to_string(groups) +
         " parameter groups (give one number, or one per group)");
  }
  return p.values;
}

int64_t read_required_int(const ConfigReader& cfg, const std::string& schedule, const char* key) {
  if (!given(cfg, key)) fail(schedule + ": " + key + " is required");
  return cfg.get_int(key, 0);
}

int64_t read_warmup_num_steps(const ConfigReader& cfg, const std::string& schedule) {
  const int64_t steps = cfg.get_int("warmup_num_steps", 1000);
  if (steps <= 0) {
    fail(schedule + ": warmup_num_steps must be a positive integer, got " + std::to_string(steps));
  }
  return steps;
}

enum class WarmupType { kLog, kLinear };

// DeepSpeed warns about any other string and warms up with "log"; a silent change of curve for a
// typo ("Linear") is worse than an error, so dspp refuses it.
WarmupType read_warmup_type(const ConfigReader& cfg, const std::string& schedule) {
  const std::string type = cfg.get_string("warmup_type", "log");
  if (type == "log") return WarmupType::kLog;
  if (type == "linear") return WarmupType::kLinear;
  fail(schedule + ": warmup_type must be \"log\" or \"linear\", got \"" + type +
       "\" (DeepSpeed would warn and fall back to \"log\")");
}

// The warmup fraction at last_batch_iteration `it` < warmup_steps: log(it + 1) / log(W) or it / W.
double warmup_gamma(WarmupType type, double inverse_log, int64_t it, int64_t warmup_steps) {
  if (type == WarmupType::kLog) return inverse_log * std::log(static_cast<double>(it + 1));
  return static_cast<double>(it) / static_cast<double>(warmup_steps);
}

// The ABI glue shared by all five: argument checks and exceptions -> statuses.
class Schedule : public dspp::Scheduler {
 public:
  virtual ~Schedule() = default;

  dspp_status init(const double* base_lrs, int32_t num_groups) noexcept final {
    return dspp::plugin::guard(host_, [&] {
      if (base_lrs == nullptr || num_groups < 1) {
        fail(name_ + ": init() needs the base lr of at least one parameter group");
      }
      groups_ = 0;  // stays unusable if configure() throws
      configure(std::vector<double>(base_lrs, base_lrs + num_groups));
      groups_ = num_groups;
    });
  }

  dspp_status lr_at(int64_t step, double* lrs_out) const noexcept final {
    return dspp::plugin::guard(host_, [&] {
      check(step, lrs_out);
      compute_lr(step, lrs_out);
    });
  }

  dspp_status momentum_at(int64_t step, double* betas_out) const noexcept final {
    return dspp::plugin::guard(host_, [&] {
      check(step, betas_out);
      compute_momentum(step, betas_out);
    });
  }

 protected:
  Schedule(const dspp_host_api* host, const char* name) : host_(host), name_(name) {}

  virtual void configure(const std::vector<double>& base_lrs) = 0;
  virtual void compute_lr(int64_t step, double* out) const = 0;
  virtual void compute_momentum(int64_t, double*) const {
    throw StatusError(DSPP_ERR_NOT_SUPPORTED, name_ + " has no momentum schedule");
  }

  void warn(const std::string& msg) const {
    dspp::plugin::log(host_, DSPP_LOG_WARNING, name_.c_str(), msg);
  }

  const dspp_host_api* host_;
  std::string name_;
  int32_t groups_ = 0;

 private:
  void check(int64_t step, const double* out) const {
    if (groups_ == 0) throw StatusError(DSPP_ERR_RUNTIME, name_ + ": init() has not succeeded");
    if (step < 0) fail(name_ + ": step must be >= 0, got " + std::to_string(step));
    if (out == nullptr) fail(name_ + ": null output array");
  }
};

// ---- WarmupLR and WarmupDecayLR -----------------------------------------------------------------
// From warmup_min_lr up to warmup_max_lr over warmup_num_steps (log or linear), then flat
// (WarmupLR) or linearly down to 0 at total_num_steps (WarmupDecayLR, DeepSpeed's subclass).
class Warmup : public Schedule {
 protected:
  Warmup(const dspp_host_api* host, const ConfigReader& cfg, const char* name, bool decay)
      : Schedule(host, name), decay_(decay) {
    if (decay_) total_num_steps_ = read_required_int(cfg, name_, "total_num_steps");
    const int64_t warmup_num_steps = read_warmup_num_steps(cfg, name_);
    min_lr_ = read_per_group(cfg, name_, "warmup_min_lr", 0.0);
    // WarmupLR's warmup_max_lr defaults to None, meaning each group's own lr; WarmupDecayLR
    // overrides that default with 0.001.
    if (decay_) {
      max_lr_ = read_per_group(cfg, name_, "warmup_max_lr", 0.001);
    } else if (given(cfg, "warmup_max_lr")) {
      max_lr_ = read_per_group(cfg, name_, "warmup_max_lr", 0.0);
    } else {
      max_lr_from_optimizer_ = true;
    }
    // DeepSpeed floors the warmup at 2 steps, so log(W) is never 0.
    warmup_steps_ = std::max<int64_t>(2, warmup_num_steps);
    type_ = read_warmup_type(cfg, name_);
    inverse_log_ = 1.0 / std::log(static_cast<double>(warmup_steps_));
    if (decay_ && total_num_steps_ < warmup_steps_) {
      warn("total_num_steps " + std::to_string(total_num_steps_) +
           " is less than warmup_num_steps " + std::to_string(warmup_num_steps) +
           ": the lr drops to warmup_min_lr right after the warmup (as in DeepSpeed)");
    }
  }

  void configure(const std::vector<double>& base_lrs) override {
    min_lrs_ = per_group(min_lr_, base_lrs.size(), name_);
    max_lrs_ = max_lr_from_optimizer_ ? base_lrs : per_group(max_lr_, base_lrs.size(), name_);
    delta_lrs_.resize(base_lrs.size());
    for (size_t g = 0; g < base_lrs.size(); ++g) delta_lrs_[g] = max_lrs_[g] - min_lrs_[g];
  }

  void compute_lr(int64_t step, double* out) const override {
    if (step == 0) {  // the constructor stores get_lr() before any step: the min lrs
      std::copy(min_lrs_.begin(), min_lrs_.end(), out);
      return;
    }
    const int64_t it = step - 1;  // DeepSpeed's last_batch_iteration
    double gamma = 1.0;
    if (it < warmup_steps_) {
      gamma = warmup_gamma(type_, inverse_log_, it, warmup_steps_);
    } else if (decay_) {
      const double left = static_cast<double>(total_num_steps_ - it) /
                          std::max(1.0, static_cast<double>(total_num_steps_ - warmup_steps_));
      gamma = left > 0.0 ? left : 0.0;
    }
    for (size_t g = 0; g < min_lrs_.size(); ++g) out[g] = min_lrs_[g] + delta_lrs_[g] * gamma;
  }

 private:
  bool decay_;
  int64_t total_num_steps_ = 0;
  int64_t warmup_steps_ = 2;
  WarmupType type_ = WarmupType::kLog;
  double inverse_log_ = 0.0;
  PerGroup min_lr_, max_lr_;
  bool max_lr_from_optimizer_ = false;
  std::vector<double> min_lrs_, max_lrs_, delta_lrs_;
};

class WarmupLR final : public Warmup {
 public:
  WarmupLR(const dspp_host_api* host, ConfigReader cfg) : Warmup(host, cfg, "WarmupLR", false) {}
};

class WarmupDecayLR final : public Warmup {
 public:
  WarmupDecayLR(const dspp_host_api* host, ConfigReader cfg)
      : Warmup(host, cfg, "WarmupDecayLR", true) {}
};

// ---- WarmupCosineLR ---------------------------------------------------------------------------
// Scales each group's own lr: from warmup_min_ratio up to 1 over the warmup, then a half cosine
// down to cos_min_ratio at total_num_steps, held there afterwards.
class WarmupCosineLR final : public Schedule {
 public:
  WarmupCosineLR(const dspp_host_api* host, ConfigReader cfg) : Schedule(host, "WarmupCosineLR") {
    total_num_steps_ = read_required_int(cfg, name_, "total_num_steps");
    // DeepSpeed rejects these (unexpected keyword): the schedule is defined by ratios.
    for (const char* key : {"warmup_min_lr", "warmup_max_lr"}) {
      if (cfg.has(key)) {
        fail(name_ + ": " + key +
             " is not a parameter of this schedule; it scales the optimizer's lr by "
             "warmup_min_ratio and cos_min_ratio");
      }
    }
    const int64_t warmup_num_steps = read_warmup_num_steps(cfg, name_);
    type_ = read_warmup_type(cfg, name_);
    warmup_min_ratio_ = cfg.get_double("warmup_min_ratio", 0.0);
    cos_min_ratio_ = cfg.get_double("cos_min_ratio", 0.0001);
    warmup_steps_ = std::max<int64_t>(2, warmup_num_steps);
    inverse_log_ = 1.0 / std::log(static_cast<double>(warmup_steps_));
    if (total_num_steps_ < warmup_steps_) {
      warn("total_num_steps " + std::to_string(total_num_steps_) +
           " is less than warmup_num_steps " + std::to_string(warmup_num_steps) +
           ": the lr drops to cos_min_ratio right after the warmup (as in DeepSpeed)");
    }
  }

 private:
  void configure(const std::vector<double>& base_lrs) override { base_lrs_ = base_lrs; }

  double ratio(int64_t it) const {
    if (it < warmup_steps_) {
      const double r = warmup_gamma(type_, inverse_log_, it, warmup_steps_);
      const double delta = 1. - warmup_min_ratio_;
      return warmup_min_ratio_ + r * delta;
    }
    const int64_t real_last_step = it - warmup_steps_ + 1;
    const int64_t real_total_steps = std::max<int64_t>(1, total_num_steps_ - warmup_steps_);
    double progress = static_cast<double>(real_last_step) / static_cast<double>(real_total_steps);
    if (!(progress < 1.0)) progress = 1.0;  // held at the floor past the end
    const double delta = 1. - cos_min_ratio_;
    const double r = (1.0 + std::cos(std::numbers::pi * progress)) / 2.0;
    const double out = cos_min_ratio_ + delta * r;
    return out > 0.0 ? out : 0.0;
  }

  void compute_lr(int64_t step, double* out) const override {
    // DeepSpeed's constructor stores 0 (its get_lr() before the first step), so its first
    // optimizer step runs at lr 0.
    if (step == 0) {
      std::fill(out, out + base_lrs_.size(), 0.0);
      return;
    }
    const double r = ratio(step - 1);
    for (size_t g = 0; g < base_lrs_.size(); ++g) out[g] = base_lrs_[g] * r;
  }

  int64_t total_num_steps_ = 0;
  int64_t warmup_steps_ = 2;
  WarmupType type_ = WarmupType::kLog;
  double warmup_min_ratio_ = 0.0;
  double cos_min_ratio_ = 0.0001;
  double inverse_log_ = 0.0;
  std::vector<double> base_lrs_;
};

// ---- OneCycle -----------------------------------------------------------------------------------
// One triangle from cycle_min_lr up to cycle_max_lr (first half) and back (second half), optionally
// in stairs, then a 1 / (1 + rate * t) decay. Momentum (beta1) mirrors it between cycle_max_mom
// and cycle_min_mom and, like DeepSpeed, grows by (1 + rate * t) in the decay phase.
class OneCycle final : public Schedule {
 public:
  OneCycle(const dspp_host_api* host, ConfigReader cfg) : Schedule(host, "OneCycle") {
    first_step_size_ = cfg.get_double("cycle_first_step_size", 2000.0);
    second_step_size_ = given(cfg, "cycle_second_step_size")
                            ? cfg.get_double("cycle_second_step_size", 0.0)
                            : first_step_size_;
    // A zero first half would divide by step_ratio == 0 in scale_factor().
    if (first_step_size_ <= 0) {
      fail(name_ + ": cycle_first_step_size must be positive, got " + num(first_step_size_));
    }
    if (second_step_size_ < 0) {
      fail(name_ + ": cycle_second_step_size must be non-negative, got " + num(second_step_size_));
    }
    total_size_ = first_step_size_ + second_step_size_;
    step_ratio_ = first_step_size_ / total_size_;
    first_stair_count_ = cfg.get_int("cycle_first_stair_count", 0);
    second_stair_count_ = given(cfg, "cycle_second_stair_count")
                              ? cfg.get_int("cycle_second_stair_count", 0)
                              : first_stair_count_;
    decay_step_size_ = cfg.get_double("decay_step_size", 0.0);
    // DeepSpeed tests these with math.isclose(x, 0), which is true only for exactly 0.
    skip_lr_decay_ = decay_step_size_ == 0.0;
    skip_mom_decay_ = decay_step_size_ == 0.0;

    for (const char* key : {"cycle_min_lr", "cycle_max_lr"}) {
      if (!given(cfg, key)) fail(name_ + ": " + key + " is required");
    }
    min_lr_ = read_per_group(cfg, name_, "cycle_min_lr", 0.0);
    max_lr_ = read_per_group(cfg, name_, "cycle_max_lr", 0.0);
    decay_lr_rate_ = cfg.get_double("decay_lr_rate", 0.0);
    if (decay_lr_rate_ == 0.0) skip_lr_decay_ = true;

    cycle_momentum_ = cfg.get_bool("cycle_momentum", true);
    if (cycle_momentum_) {
      decay_mom_rate_ = cfg.get_double("decay_mom_rate", 0.0);
      min_mom_ = read_per_group(cfg, name_, "cycle_min_mom", 0.8);
      max_mom_ = read_per_group(cfg, name_, "cycle_max_mom", 0.9);
      if (decay_mom_rate_ == 0.0) skip_mom_decay_ = true;
    }
  }

 private:
  void configure(const std::vector<double>& base_lrs) override {
    const size_t groups = base_lrs.size();
    min_lrs_ = per_group(min_lr_, groups, name_);
    max_lrs_ = per_group(max_lr_, groups, name_);
    if (cycle_momentum_) {
      min_moms_ = per_group(min_mom_, groups, name_);
      max_moms_ = per_group(max_mom_, groups, name_);
    }
  }

  // Position in the cycle at batch_iteration = last_batch_iteration + 1: 0 at cycle_min_lr,
  // 1 at the peak.
  double scale_factor(int64_t batch_iteration) const {
    const double bi = static_cast<double>(batch_iteration);
    const double cycle = std::floor(1 + bi / total_size_);
    const double x = 1. + bi / total_size_ - cycle;
    double scale = 0.0;
    int64_t stair_count = 0;
    if (x <= step_ratio_) {
      scale = x / step_ratio_;
      stair_count = first_stair_count_;
    } else {
      scale = (x - 1) / (step_ratio_ - 1);
      stair_count = second_stair_count_;
    }
    // Stairs are counted from the integer offset in the cycle, not from `scale`, as DeepSpeed
    // does (the float scale can sit just below a stair edge).
    if (stair_count > 0) {
      const double stairs = static_cast<double>(stair_count);
      const double cycle_iteration = std::fmod(bi, total_size_);
      double stair_position = 0.0;
      if (cycle_iteration <= first_step_size_) {
        stair_position = cycle_iteration * stairs / first_step_size_;
      } else {
        stair_position = (total_size_ - cycle_iteration) * stairs / second_step_size_;
      }
      scale = std::floor(stair_position) / stairs;
    }
    return scale;
  }

  // decay_batch_iteration for last_batch_iteration `it` >= total_size, divided into intervals.
  double decay_interval(int64_t it) const {
    const double decay_batch_iteration = static_cast<double>(it) - total_size_ + 1;
    return decay_batch_iteration / decay_step_size_;
  }

  void compute_lr(int64_t step, double* out) const override {
    const size_t groups = min_lrs_.size();
    if (step == 0) {  // the constructor stores cycle_min_lr
      std::copy(min_lrs_.begin(), min_lrs_.end(), out);
      return;
    }
    const int64_t it = step - 1;  // DeepSpeed's last_batch_iteration
    if (static_cast<double>(it) < total_size_) {
      const double scale = scale_factor(it + 1);
      for (size_t g = 0; g < groups; ++g) {
        const double base_height = (max_lrs_[g] - min_lrs_[g]) * scale;
        out[g] = min_lrs_[g] + base_height;
      }
      return;
    }
    if (skip_lr_decay_) {
      std::copy(min_lrs_.begin(), min_lrs_.end(), out);
      return;
    }
    const double factor = 1 + decay_lr_rate_ * decay_interval(it);
    for (size_t g = 0; g < groups; ++g) out[g] = min_lrs_[g] / factor;
  }

  void compute_momentum(int64_t step, double* out) const override {
    if (!cycle_momentum_) {
      throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                        name_ + ": cycle_momentum is false, so there is no momentum schedule");
    }
    const size_t groups = min_moms_.size();
    // The constructor stores cycle_min_mom, although the cycle itself starts at cycle_max_mom.
    if (step == 0) {
      std::copy(min_moms_.begin(), min_moms_.end(), out);
      return;
    }
    const int64_t it = step - 1;
    if (static_cast<double>(it) < total_size_) {
      const double scale = scale_factor(it + 1);
      for (size_t g = 0; g < groups; ++g) {
        const double base_height = (max_moms_[g] - min_moms_[g]) * scale;
        out[g] = max_moms_[g] - base_height;
      }
      return;
    }
    if (skip_mom_decay_) {
      std::copy(max_moms_.begin(), max_moms_.end(), out);
      return;
    }
    const double factor = 1 + decay_mom_rate_ * decay_interval(it);
    for (size_t g = 0; g < groups; ++g) out[g] = max_moms_[g] * factor;
  }

  double first_step_size_ = 2000.0, second_step_size_ = 2000.0;
  double total_size_ = 4000.0, step_ratio_ = 0.5;
  int64_t first_stair_count_ = 0, second_stair_count_ = 0;
  double decay_step_size_ = 0.0;
  bool skip_lr_decay_ = true, skip_mom_decay_ = true;
  PerGroup min_lr_, max_lr_, min_mom_, max_mom_;
  double decay_lr_rate_ = 0.0, decay_mom_rate_ = 0.0;
  bool cycle_momentum_ = true;
  std::vector<double> min_lrs_, max_lrs_, min_moms_, max_moms_;
};

// ---- LRRangeTest --------------------------------------------------------------------------------
// lr = lr_range_test_min_lr * (1 + step_rate * n / step_size), with n / step_size floored when
// lr_range_test_staircase is set.
class LRRangeTest final : public Schedule {
 public:
  LRRangeTest(const dspp_host_api* host, ConfigReader cfg) : Schedule(host, "LRRangeTest") {
    min_lr_ = read_per_group(cfg, name_, "lr_range_test_min_lr", 1e-3);
    step_size_ = cfg.get_int("lr_range_test_step_size", 2000);
    if (step_size_ <= 0) {
      fail(name_ + ": lr_range_test_step_size must be a positive integer, got " +
           std::to_string(step_size_));
    }
    step_rate_ = cfg.get_double("lr_range_test_step_rate", 1.0);
    staircase_ = cfg.get_bool("lr_range_test_staircase", false);
  }

 private:
  void configure(const std::vector<double>& base_lrs) override {
    min_lrs_ = per_group(min_lr_, base_lrs.size(), name_);
  }

  void compute_lr(int64_t step, double* out) const override {
    if (step == 0) {  // the constructor stores the min lrs
      std::copy(min_lrs_.begin(), min_lrs_.end(), out);
      return;
    }
    // (last_batch_iteration + 1) / step_size, with last_batch_iteration = step - 1.
    double interval = static_cast<double>(step) / static_cast<double>(step_size_);
    if (staircase_) interval = std::floor(interval);
    const double increase = 1 + step_rate_ * interval;
    for (size_t g = 0; g < min_lrs_.size(); ++g) out[g] = min_lrs_[g] * increase;
  }

  PerGroup min_lr_;
  int64_t step_size_ = 2000;
  double step_rate_ = 1.0;
  bool staircase_ = false;
  std::vector<double> min_lrs_;
};

// ---- option schemas -----------------------------------------------------------------------------
// Defaults are DeepSpeed's constructor defaults; "null" is its None (required, or derived).
constexpr dspp_option_desc option(const char* key, dspp_value_type type, const char* dflt,
                                  const char* doc, uint32_t flags = 0, double min = 0) {
  return dspp_option_desc{key, static_cast<int32_t>(type), dflt, doc, flags, min, 0.0, nullptr};
}

// No `choices` for warmup_type: the config registry would accept any case and rewrite "Linear" to
// "linear", where DeepSpeed warms up with "log" for anything but the exact strings; the plugin
// refuses other spellings instead, so a config never gives other values than DeepSpeed's.
constexpr const char* kWarmupTypeDoc = "Shape of the warmup: \"log\" or \"linear\" (exactly).";

const dspp_option_desc kWarmupLrOptions[] = {
    option("warmup_min_lr", DSPP_VALUE_ANY, "0.0",
           "Learning rate at the start of the warmup. A number, or one per parameter group."),
    option("warmup_max_lr", DSPP_VALUE_ANY, "null",
           "Learning rate reached at the end of the warmup; null takes each group's own lr. A "
           "number, or one per parameter group."),
    option("warmup_num_steps", DSPP_VALUE_INT, "1000",
           "Steps to warm up over (at least 2 are used).", DSPP_OPTION_HAS_MIN, 1),
    option("warmup_type", DSPP_VALUE_STRING, "\"log\"", kWarmupTypeDoc),
};

const dspp_option_desc kWarmupDecayLrOptions[] = {
    option("total_num_steps", DSPP_VALUE_INT, "null",
           "Required: the step at which the lr has decayed linearly to 0."),
    option("warmup_min_lr", DSPP_VALUE_ANY, "0.0",
           "Learning rate at the start of the warmup. A number, or one per parameter group."),
    option("warmup_max_lr", DSPP_VALUE_ANY, "0.001",
           "Learning rate reached at the end of the warmup. A number, or one per parameter "
           "group."),
    option("warmup_num_steps", DSPP_VALUE_INT, "1000",
           "Steps to warm up over (at least 2 are used).", DSPP_OPTION_HAS_MIN, 1),
    option("warmup_type", DSPP_VALUE_STRING, "\"log\"", kWarmupTypeDoc),
};

const dspp_option_desc kWarmupCosineLrOptions[] = {
    option("total_num_steps", DSPP_VALUE_INT, "null",
           "Required: the step at which the cosine reaches cos_min_ratio."),
    option("warmup_min_ratio", DSPP_VALUE_FLOAT, "0.0",
           "Fraction of the optimizer's lr at the start of the warmup."),
    option("warmup_num_steps", DSPP_VALUE_INT, "1000",
           "Steps to warm up over (at least 2 are used).", DSPP_OPTION_HAS_MIN, 1),
    option("cos_min_ratio", DSPP_VALUE_FLOAT, "0.0001",
           "Fraction of the optimizer's lr at the end of the cosine decay."),
    option("warmup_type", DSPP_VALUE_STRING, "\"log\"", kWarmupTypeDoc)};

const dspp_option_desc kOneCycleOptions[] = {
    option("cycle_min_lr", DSPP_VALUE_ANY, "null",
           "Required: lr at both ends of the cycle. A number, or one per parameter group."),
    option("cycle_max_lr", DSPP_VALUE_ANY, "null",
           "Required: lr at the peak of the cycle. A number, or one per parameter group."),
    option("decay_lr_rate", DSPP_VALUE_FLOAT, "0.0",
           "After the cycle, lr = cycle_min_lr / (1 + decay_lr_rate * steps / decay_step_size)."),
    option("cycle_first_step_size", DSPP_VALUE_FLOAT, "2000",
           "Steps of the rising half of the cycle (positive)."),
    option("cycle_second_step_size", DSPP_VALUE_FLOAT, "null",
           "Steps of the falling half; null means cycle_first_step_size.", DSPP_OPTION_HAS_MIN, 0),
    option("cycle_first_stair_count", DSPP_VALUE_INT, "0",
           "Stairs in the rising half; 0 changes the lr every step."),
    option("cycle_second_stair_count", DSPP_VALUE_INT, "null",
           "Stairs in the falling half; null means cycle_first_stair_count."),
    option("decay_step_size", DSPP_VALUE_FLOAT, "0",
           "Steps per decay interval after the cycle; 0 holds lr and momentum after the cycle."),
    option("cycle_momentum", DSPP_VALUE_BOOL, "true",
           "Cycle beta1 inversely to the lr (DeepSpeed also sets beta2 to 0.99)."),
    option("cycle_min_mom", DSPP_VALUE_ANY, "0.8",
           "beta1 at the peak of the cycle. A number, or one per parameter group."),
    option("cycle_max_mom", DSPP_VALUE_ANY, "0.9",
           "beta1 at both ends of the cycle. A number, or one per parameter group."),
    option("decay_mom_rate", DSPP_VALUE_FLOAT, "0.0",
           "After the cycle, beta1 = cycle_max_mom * (1 + decay_mom_rate * steps / "
           "decay_step_size)."),
};

const dspp_option_desc kLrRangeTestOptions[] = {
    option("lr_range_test_min_lr", DSPP_VALUE_ANY, "0.001",
           "Starting lr. A number, or one per parameter group."),
    option("lr_range_test_step_size", DSPP_VALUE_INT, "2000", "Steps per lr increase interval.",
           DSPP_OPTION_HAS_MIN, 1),
    option("lr_range_test_step_rate", DSPP_VALUE_FLOAT, "1.0",
           "lr = lr_range_test_min_lr * (1 + step_rate * steps / step_size)."),
    option("lr_range_test_staircase", DSPP_VALUE_BOOL, "false",
           "Raise the lr in stairs (whole intervals) instead of every step."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Scheduler, WarmupLR>(
        DSPP_KIND_SCHEDULER, "warmuplr", "1.0.0",
        "DeepSpeed's WarmupLR: log or linear warmup, then constant.", kWarmupLrOptions),
    dspp::plugin::describe<dspp::Scheduler, WarmupDecayLR>(
        DSPP_KIND_SCHEDULER, "warmupdecaylr", "1.0.0",
        "DeepSpeed's WarmupDecayLR: warmup, then linear decay to 0 at total_num_steps.",
        kWarmupDecayLrOptions),
    dspp::plugin::describe<dspp::Scheduler, WarmupCosineLR>(
        DSPP_KIND_SCHEDULER, "warmupcosinelr", "1.0.0",
        "DeepSpeed's WarmupCosineLR: warmup, then cosine decay, as ratios of the optimizer's lr.",
        kWarmupCosineLrOptions),
    dspp::plugin::describe<dspp::Scheduler, OneCycle>(
        DSPP_KIND_SCHEDULER, "onecycle", "1.0.0",
        "DeepSpeed's OneCycle: one lr (and beta1) cycle, optionally in stairs, then decay.",
        kOneCycleOptions),
    dspp::plugin::describe<dspp::Scheduler, LRRangeTest>(
        DSPP_KIND_SCHEDULER, "lrrangetest", "1.0.0",
        "DeepSpeed's LRRangeTest: lr growing linearly or in stairs, to find a good max lr.",
        kLrRangeTestOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("lr_schedules", kPlugins)
