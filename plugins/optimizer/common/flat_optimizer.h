// Shared by the CPU optimizer plugins (adam, sgd, lamb, lion, adagrad). Header-only: each plugin
// library compiles its own copy, so plugins share no code (and no ABI) at run time.
//
// What lives here:
//  - JsonConfigView: a parsed JSON object seen through dspp_config_view, so a parameter group's
//    `options_json` is read with the same ConfigReader code as `optimizer.params`.
//  - OptionReader: typed option reads with validation; errors name the key and where it came from.
//  - FlatOptimizer: the part every flat-buffer optimizer shares (segment checks, state buffers from
//    the host allocator, work split into chunks, the ABI methods wrapped in guard()).
//
// On a GPU (OptimizerSetup::device is CUDA) the flat buffers and the states are device memory of
// the host's compute device (dspp::plugin::host_device()): the states are allocated there and set
// with DeviceKernels::fill, and step() hands the device views to run_step_device(), which an
// optimizer with device kernels overrides (every built-in one: adam and adamw with kernels of
// version 2, sgd, lion, adagrad, lamb and muon with version 3, as device_kernels_need() says).
// An optimizer without one, or a device whose kernels are older than it needs, is refused in
// init(), before anything is allocated. The device steps use the CPU path's constants (the same
// code computes them) and kernels that evaluate the CPU kernels' fp32 expressions.
//
// Kernels run in fp32 like DeepSpeed's and PyTorch's (constants are computed in double, then
// rounded once to float). The work is split into chunks of at most kChunk elements, each inside one
// segment; chunks run in parallel with OpenMP when the step is large enough to pay for the threads.
// Every chunk's result depends only on its own elements, so results do not depend on the number of
// threads.
#ifndef DSPP_PLUGINS_OPTIMIZER_FLAT_OPTIMIZER_H
#define DSPP_PLUGINS_OPTIMIZER_FLAT_OPTIMIZER_H

#include <dspp/kinds/device.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/plugin.h>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace dspp::optim {

using plugin::ConfigReader;
using plugin::StatusError;

[[noreturn]] inline void fail(const std::string& msg) {
  throw StatusError(DSPP_ERR_INVALID_ARGUMENT, msg);
}

inline std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// ---- JsonConfigView ----------------------------------------------------------------------------
// A JSON object (a parameter group's overrides) behind the dspp_config_view callbacks. Paths are
// dotted ("a.b"); the view is valid while this object lives (it is neither copied nor moved, since
// the callbacks point back at it).
class JsonConfigView {
 public:
  // `json` NULL or empty means an empty object. Anything but an object is an error naming `what`.
  JsonConfigView(const char* json, const std::string& what) {
    view_ = dspp_config_view{sizeof(dspp_config_view),
                             this,
                             &has_cb,
                             &bool_cb,
                             &int_cb,
                             &double_cb,
                             &string_cb,
                             &json_cb};
    if (json == nullptr || json[0] == '\0') {
      doc_.SetObject();
      return;
    }
    doc_.Parse<rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag>(json);
    if (doc_.HasParseError())
      fail(what + " is not valid JSON: " + rapidjson::GetParseError_En(doc_.GetParseError()) +
           " at offset " + std::to_string(doc_.GetErrorOffset()));
    if (!doc_.IsObject()) fail(what + " must be a JSON object");
  }
  JsonConfigView(const JsonConfigView&) = delete;
  JsonConfigView& operator=(const JsonConfigView&) = delete;

  const dspp_config_view* view() const { return &view_; }

  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (auto it = doc_.MemberBegin(); it != doc_.MemberEnd(); ++it)
      out.push_back(it->name.GetString());
    return out;
  }

 private:
  const rapidjson::Value* find(const char* path) const {
    const rapidjson::Value* v = &doc_;
    std::string p = path ? path : "";
    size_t start = 0;
    while (true) {
      const size_t dot = p.find('.', start);
      const std::string part =
          p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!v->IsObject()) return nullptr;
      auto it = v->FindMember(part.c_str());
      if (it == v->MemberEnd()) return nullptr;
      v = &it->value;
      if (dot == std::string::npos) return v;
      start = dot + 1;
    }
  }
  static const rapidjson::Value* at(void* self, const char* path) {
    return static_cast<const JsonConfigView*>(self)->find(path);
  }
  static dspp_status copy_out(const std::string& s, char* buf, size_t cap, size_t* len) {
    if (len) *len = s.size();
    if (buf && cap > 0) {
      const size_t n = std::min(cap - 1, s.size());
      std::memcpy(buf, s.data(), n);
      buf[n] = '\0';
    }
    return DSPP_OK;
  }
  static int32_t has_cb(void* self, const char* path) { return at(self, path) != nullptr; }
  static dspp_status bool_cb(void* self, const char* path, int32_t* out) {
    const rapidjson::Value* v = at(self, path);
    if (!v || !v->IsBool()) return DSPP_ERR_INVALID_ARGUMENT;
    *out = v->GetBool() ? 1 : 0;
    return DSPP_OK;
  }
  static dspp_status int_cb(void* self, const char* path, int64_t* out) {
    const rapidjson::Value* v = at(self, path);
    if (!v || !v->IsInt64()) return DSPP_ERR_INVALID_ARGUMENT;
    *out = v->GetInt64();
    return DSPP_OK;
  }
  static dspp_status double_cb(void* self, const char* path, double* out) {
    const rapidjson::Value* v = at(self, path);
    if (!v || !v->IsNumber()) return DSPP_ERR_INVALID_ARGUMENT;
    *out = v->GetDouble();
    return DSPP_OK;
  }
  static dspp_status string_cb(void* self, const char* path, char* buf, size_t cap, size_t* len) {
    const rapidjson::Value* v = at(self, path);
    if (!v || !v->IsString()) return DSPP_ERR_INVALID_ARGUMENT;
    return copy_out(std::string(v->GetString(), v->GetStringLength()), buf, cap, len);
  }
  static dspp_status json_cb(void* self, const char* path, char* buf, size_t cap, size_t* len) {
    const rapidjson::Value* v = at(self, path);
    if (!v) return DSPP_ERR_INVALID_ARGUMENT;
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    v->Accept(w);
    return copy_out(std::string(sb.GetString(), sb.GetSize()), buf, cap, len);
  }

  rapidjson::Document doc_;
  dspp_config_view view_{};
};

// ---- OptionReader ----------------------------------------------------------------------------
// Reads options from one source (optimizer.params, or one group's overrides) with range checks.
// Every error reads "<plugin>: <where><key> must be <what>, got <value>", e.g.
// "adam: optimizer.params.betas must be two numbers in [0, 1), got [0.9,0.99,0.5]".
class OptionReader {
 public:
  OptionReader(const char* plugin, ConfigReader reader, std::string where)
      : plugin_(plugin), r_(reader), where_(std::move(where)) {}

  bool has(const char* key) const { return r_.has(key); }
  const std::string& where() const { return where_; }

  // A number in [lo, hi] (or (lo, ...) when lo_open); `dflt` when absent.
  double number(const char* key, double dflt, double lo, double hi, const char* what) const {
    if (!has(key)) return dflt;
    double v = 0;
    try {
      v = r_.get_double(key, dflt);
    } catch (const StatusError&) {
      bad(key, what);
    }
    if (!(v >= lo && v <= hi)) bad(key, what);  // also rejects NaN
    return v;
  }
  double non_negative(const char* key, double dflt) const {
    return number(key, dflt, 0.0, std::numeric_limits<double>::infinity(), "a non-negative number");
  }
  bool flag(const char* key, bool dflt) const {
    if (!has(key)) return dflt;
    try {
      return r_.get_bool(key, dflt);
    } catch (const StatusError&) {
      bad(key, "true or false");
    }
  }
  // Two coefficients in [0, 1), as torch and DeepSpeed require of `betas`.
  std::array<double, 2> betas(const char* key, std::array<double, 2> dflt) const {
    if (!has(key)) return dflt;
    const std::string text = r_.get_json(key);
    rapidjson::Document d;
    d.Parse(text.c_str());
    const char* what = "two numbers in [0, 1)";
    if (d.HasParseError() || !d.IsArray() || d.Size() != 2 || !d[0].IsNumber() || !d[1].IsNumber())
      bad(key, what);
    std::array<double, 2> out{d[0].GetDouble(), d[1].GetDouble()};
    for (double b : out)
      if (!(b >= 0.0 && b < 1.0)) bad(key, what);
    return out;
  }
  // A key DeepSpeed refuses for every optimizer.
  void refuse(const char* key, const std::string& why) const {
    if (has(key)) fail(std::string(plugin_) + ": " + where_ + key + " is not supported: " + why);
  }

  [[noreturn]] void bad(const char* key, const char* what) const {
    std::string got;
    try {
      got = r_.get_json(key);
    } catch (const StatusError&) {
      got = "?";
    }
    fail(std::string(plugin_) + ": " + where_ + key + " must be " + what + ", got " + got);
  }

 private:
  const char* plugin_;
  ConfigReader r_;
  std::string where_;
};

// One entry of a plugin's option schema. `flags` are DSPP_OPTION_*; with DSPP_OPTION_HAS_MIN the
// minimum is 0 (every bounded option here is non-negative).
constexpr dspp_option_desc option(const char* key, int32_t type, const char* default_json,
                                  const char* doc, uint32_t flags = 0) {
  return dspp_option_desc{key, type, default_json, doc, flags, 0.0, 0.0, nullptr};
}
// A non-negative number that Hugging Face style configs may leave "auto".
constexpr uint32_t kNonNegativeAuto = DSPP_OPTION_HAS_MIN | DSPP_OPTION_ALLOW_AUTO;

// DeepSpeed's engine refuses max_grad_norm for every optimizer type (runtime/engine.py).
inline void refuse_max_grad_norm(const OptionReader& o) {
  o.refuse("max_grad_norm",
           "DeepSpeed does not accept it as an optimizer parameter; use the top-level "
           "\"gradient_clipping\" instead");
}

// ---- FlatOptimizer ---------------------------------------------------------------------------
// A piece of work: elements [begin, end) of the flat buffers, all in segment `segment`. `slot`
// indexes the per-step constants: 2 * group, plus 1 when the segment is flagged
// DSPP_PARAM_NO_DECAY (its group's constants with weight decay 0).
struct Chunk {
  int64_t begin;
  int64_t end;
  int32_t group;
  int32_t segment;
  int32_t slot;
};

// Per-step values resolved for each group (the scheduler's lr and beta1/momentum).
struct GroupStep {
  double lr;
  double beta1;  // NaN when the scheduler gave none (use the configured one)
};

// A piece of work for a device kernel: elements [begin, end) of the flat buffers, the union of
// segments adjacent in the flat buffer that share one constants slot (see Chunk::slot), so one
// kernel launch covers it.
struct DeviceRun {
  int64_t begin;
  int64_t end;
  int32_t slot;
};

// What run_step_device() needs of the device's kernels: DeviceKernels version `version` or later,
// for `what` (named in the refusal).
struct DeviceKernelsNeed {
  uint32_t version;
  const char* what;
};

inline std::string device_name(const dspp_device& d) {
  if (d.type == DSPP_DEVICE_CPU) return "cpu";
  if (d.type == DSPP_DEVICE_CUDA) return "cuda:" + std::to_string(d.index);
  return "device type " + std::to_string(d.type);
}

class FlatOptimizer : public dspp::Optimizer {
 public:
  static constexpr int64_t kChunk = 1 << 15;
  // Below this many elements a step runs on the calling thread: waking the pool costs more.
  static constexpr int64_t kParallelMin = 1 << 16;

  FlatOptimizer(const dspp_host_api* host, const char* name) : host_(host), name_(name) {}
  virtual ~FlatOptimizer() { free_states(); }  // and the device scratch
  FlatOptimizer(const FlatOptimizer&) = delete;
  FlatOptimizer& operator=(const FlatOptimizer&) = delete;

  dspp_status init(const OptimizerSetup* setup) noexcept final {
    return plugin::guard(host_, [&] {
      if (!setup) fail(std::string(name_) + ": init() needs a setup");
      initialized_ = false;  // until configure() succeeds: step() must not see half a setup
      free_states();
      setup_device(setup->device);
      setup_segments(*setup);
      configure(*setup);
      initialized_ = true;
    });
  }

  dspp_status step(const StepArgs* args) noexcept final {
    return plugin::guard(host_, [&] {
      if (!args) fail(std::string(name_) + ": step() needs arguments");
      if (!initialized_) fail(std::string(name_) + ": step() called before init()");
      check_buffer(args->params, "params");
      check_buffer(args->grads, "grads");
      if (args->step < 1)
        fail(std::string(name_) + ": step count must be 1-based, got " +
             std::to_string(args->step));
      std::vector<GroupStep> gs(num_groups_);
      for (int32_t g = 0; g < num_groups_; ++g) {
        gs[g].lr = args->lrs ? args->lrs[g] : setup_lrs_[g];
        gs[g].beta1 = args->betas1 ? args->betas1[g] : std::numeric_limits<double>::quiet_NaN();
        if (!(gs[g].lr >= 0.0))
          fail(std::string(name_) + ": learning rate of group " + std::to_string(g) +
               " must be non-negative, got " + fmt_double(gs[g].lr));
        if (args->betas1 && !(gs[g].beta1 >= 0.0 && gs[g].beta1 < 1.0))
          fail(std::string(name_) + ": beta1/momentum of group " + std::to_string(g) +
               " from the scheduler must be in [0, 1), got " + fmt_double(gs[g].beta1));
      }
      if (kernels_) {
        run_step_device(static_cast<float*>(args->params.data),
                        static_cast<const float*>(args->grads.data), args->step, gs);
      } else {
        run_step(static_cast<float*>(args->params.data),
                 static_cast<const float*>(args->grads.data), args->step, gs);
      }
    });
  }

  int32_t needs_whole_params() const noexcept override { return 0; }
  int32_t num_states() const noexcept final { return static_cast<int32_t>(states_.size()); }
  dspp_status state(int32_t index, const char** name, dspp_tensor_view* view) noexcept final {
    return plugin::guard(host_, [&] {
      if (index < 0 || index >= num_states())
        fail(std::string(name_) + ": state index " + std::to_string(index) + " out of range [0, " +
             std::to_string(num_states()) + ")");
      if (name) *name = states_[index].name;
      if (view) {
        *view = dspp_tensor_view{};
        view->data = states_[index].data;
        view->dtype = DSPP_F32;
        view->ndim = 1;
        view->shape[0] = flat_numel_;
        view->device = where_;
      }
    });
  }

 protected:
  // Reads the options of every group (GroupOptions helps) and allocates the states.
  virtual void configure(const OptimizerSetup& setup) = 0;
  virtual void run_step(float* params, const float* grads, int64_t step,
                        const std::vector<GroupStep>& gs) = 0;
  // Whether run_step_device() is implemented: init() refuses a CUDA setup otherwise, before any
  // state is allocated.
  virtual bool runs_on_device() const { return false; }
  // The kernels version it needs (init() refuses a device with older kernels).
  virtual DeviceKernelsNeed device_kernels_need() const { return {2, "adam_step"}; }
  // The step on device memory (OptimizerSetup::device CUDA): params, grads and every state are
  // device pointers of device(); kernels go to device_kernels() on the legacy default stream
  // (nullptr), in order with the host's own work.
  virtual void run_step_device(float* params, const float* grads, int64_t step,
                               const std::vector<GroupStep>& gs) {
    (void)params, (void)grads, (void)step, (void)gs;
    refuse_device();
  }
  [[noreturn]] void refuse_device() const {
    throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                      std::string(name_) +
                          ": no CUDA kernel for this optimizer yet; run with --device cpu (the "
                          "buffers in host memory)");
  }

  const char* plugin_name() const { return name_; }
  const dspp_host_api* host() const { return host_; }
  int32_t num_groups() const { return num_groups_; }
  int64_t flat_numel() const { return flat_numel_; }
  const std::vector<Chunk>& chunks() const { return chunks_; }
  int32_t num_segments() const { return static_cast<int32_t>(seg_begin_.size()); }
  int64_t segment_begin(int32_t s) const { return seg_begin_[s]; }
  int64_t segment_end(int32_t s) const { return seg_end_[s]; }
  const std::string& segment_name(int32_t s) const { return seg_names_[s]; }
  int32_t segment_group(int32_t s) const { return seg_group_[s]; }
  int32_t segment_slot(int32_t s) const { return seg_slot_[s]; }  // see Chunk::slot
  bool segment_is_whole(int32_t s) const { return seg_whole_[s]; }
  bool parallel() const { return covered_ >= kParallelMin; }
  // Constants slots (see Chunk::slot): slot s belongs to group s / 2 and has no weight decay when
  // s is odd.
  int32_t num_slots() const { return 2 * num_groups_; }
  static int32_t slot_group(int32_t slot) { return slot / 2; }
  static bool slot_no_decay(int32_t slot) { return (slot & 1) != 0; }

  // The device the buffers and states live on (CPU unless the setup said CUDA); its kernels are
  // non-null only on a CUDA setup.
  bool on_device() const { return kernels_ != nullptr; }
  const dspp_device& where() const { return where_; }
  dspp::Device* device() const { return device_; }
  dspp::DeviceKernels* device_kernels() const { return kernels_; }
  // The segments merged into runs for device kernels, in flat order.
  const std::vector<DeviceRun>& device_runs() const { return runs_; }
  // The same over the segments s with keep(s) true only (Muon's AdamW half). A segment left out
  // lies between any two kept ones it separates, so they are not adjacent and stay apart.
  template <class Keep>
  std::vector<DeviceRun> device_runs_where(Keep&& keep) const {
    std::vector<DeviceRun> out;
    for (const int32_t i : flat_order_) {
      if (seg_end_[i] == seg_begin_[i] || !keep(i)) continue;
      if (!out.empty() && out.back().end == seg_begin_[i] && out.back().slot == seg_slot_[i]) {
        out.back().end = seg_end_[i];
      } else {
        out.push_back(DeviceRun{seg_begin_[i], seg_end_[i], seg_slot_[i]});
      }
    }
    return out;
  }
  // A 1-d f32 view of n elements of this optimizer's device memory.
  dspp_tensor_view device_view(const float* data, int64_t n) const {
    dspp_tensor_view v{};
    v.data = const_cast<float*>(data);
    v.dtype = DSPP_F32;
    v.ndim = 1;
    v.shape[0] = n;
    v.device = where_;
    return v;
  }

  void log(dspp_log_level level, const std::string& msg) const {
    plugin::log(host_, level, name_, msg);
  }

  // A fresh flat fp32 state of flat_numel elements, every element set to `init` (device memory
  // on a CUDA setup).
  float* add_state(const char* name, float init) {
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(flat_numel_, 1)) * sizeof(float);
    void* p = nullptr;
    if (kernels_) {
      {
        const plugin::MemoryCategory tag(host_, DSPP_MEM_OPTIMIZER_STATE);
        plugin::pass_through(device_->alloc(bytes, nullptr, &p));
      }
      if (!p)
        throw StatusError(DSPP_ERR_OUT_OF_MEMORY,
                          std::string(name_) + ": no device memory for " + name);
      states_.push_back(State{name, static_cast<float*>(p)});  // freed with the others from now
      if (flat_numel_ > 0) {
        const dspp_tensor_view v = device_view(static_cast<float*>(p), flat_numel_);
        plugin::pass_through(kernels_->fill(&v, static_cast<double>(init), nullptr));
      }
      return static_cast<float*>(p);
    }
    if (host_ && host_->alloc_host) {
      p = host_->alloc_host(host_->self, bytes);
    } else {
      p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    }
    if (!p)
      throw StatusError(DSPP_ERR_OUT_OF_MEMORY, std::string(name_) + ": no memory for " + name);
    float* f = static_cast<float*>(p);
    std::fill(f, f + flat_numel_, init);
    states_.push_back(State{name, f});
    return f;
  }
  // Device memory of `bytes` for the optimizer's own work (Muon's Newton-Schulz buffers, LAMB's
  // update and norms; not a state: no checkpoint sees it), not initialised, freed with the states
  // (at the next init() and in the destructor). CUDA setups only; allocate it in configure(), once.
  void* add_device_scratch(size_t bytes, const std::string& what) {
    if (!kernels_) {
      throw StatusError(DSPP_ERR_INTERNAL,
                        std::string(name_) + ": device scratch (" + what + ") on a CPU setup");
    }
    void* p = nullptr;
    {
      const plugin::MemoryCategory tag(host_, DSPP_MEM_OTHER);
      plugin::pass_through(device_->alloc(std::max<size_t>(bytes, 1), nullptr, &p));
    }
    if (!p)
      throw StatusError(DSPP_ERR_OUT_OF_MEMORY,
                        std::string(name_) + ": no device memory for " + what);
    scratch_.push_back(p);
    return p;
  }

  float* find_state(const char* name) const {
    for (const State& s : states_)
      if (std::strcmp(s.name, name) == 0) return s.data;
    return nullptr;
  }

  // The overrides of group g (its options_json) behind an OptionReader. Keys this optimizer does
  // not know are logged and ignored, as torch ignores extra keys in a param group.
  struct GroupOptions {
    JsonConfigView json;
    OptionReader reader;
    GroupOptions(const char* plugin, const ParamGroupSetup& g, int32_t index,
                 const std::vector<const char*>& known)
        : json(g.options_json,
               std::string(plugin) + ": options_json of param group " + std::to_string(index)),
          reader(plugin, ConfigReader(json.view()), "param group " + std::to_string(index) + ": ") {
      for (const std::string& k : json.keys()) {
        bool ok = false;
        for (const char* kn : known) ok = ok || k == kn;
        if (!ok) unknown.push_back(k);
      }
    }
    std::vector<std::string> unknown;
  };

  // Resolves lr and weight_decay of group g: the setup's value, or when it is NaN the group's
  // override in options_json, or else the optimizer's configured value.
  double group_value(double setup_value, const OptionReader& group, const char* key,
                     double configured) const {
    if (!std::isnan(setup_value)) {
      if (!(setup_value >= 0.0))
        fail(std::string(name_) + ": " + group.where() + key +
             " must be a non-negative number, got " + fmt_double(setup_value));
      return setup_value;
    }
    return group.non_negative(key, configured);
  }

  void warn_unknown(const GroupOptions& go, int32_t index) const {
    for (const std::string& k : go.unknown)
      log(DSPP_LOG_WARNING, "param group " + std::to_string(index) + ": option '" + k +
                                "' is not an option of this optimizer; ignored");
  }

  // Records the base lr of each group (used when StepArgs::lrs is NULL).
  void set_setup_lrs(std::vector<double> lrs) { setup_lrs_ = std::move(lrs); }

  // Runs fn(chunk) for every chunk, in parallel when the step is large.
  template <class Fn>
  void for_each_chunk(Fn&& fn) const {
    const int64_t n = static_cast<int64_t>(chunks_.size());
    [[maybe_unused]] const bool par = parallel();  // unused without OpenMP
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t c = 0; c < n; ++c) fn(chunks_[c], c);
  }

 private:
  struct State {
    const char* name;
    float* data;
  };

  void free_states() {
    for (void* p : scratch_) (void)device_->free(p, nullptr);  // only ever on a device setup
    scratch_.clear();
    for (State& s : states_) {
      if (device_) {
        // Stream-ordered on the legacy default stream, after the kernels that used it. A failure
        // has nowhere to go here (the device has recorded its message).
        (void)device_->free(s.data, nullptr);
      } else if (host_ && host_->free_host) {
        host_->free_host(host_->self, s.data);
      } else {
        std::free(s.data);
      }
    }
    states_.clear();
  }

  // Where the buffers live: the CPU, or the host's CUDA device with kernels of the version
  // device_kernels_need() names or later (for an optimizer that has a device step; the others
  // refuse here, before allocating).
  void setup_device(const dspp_device& d) {
    const std::string me = name_;
    device_ = nullptr;
    kernels_ = nullptr;
    where_ = dspp_device{DSPP_DEVICE_CPU, 0};
    if (d.type == DSPP_DEVICE_CPU) return;
    if (d.type != DSPP_DEVICE_CUDA)
      throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                        me + ": the buffers are on an unknown " + device_name(d) +
                            "; this optimizer runs on the CPU or a CUDA device");
    if (!runs_on_device()) refuse_device();
    auto* dev = static_cast<dspp::Device*>(plugin::host_device(host_));
    if (!dev)
      throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                        me + ": the buffers are on " + device_name(d) +
                            " but the host gives no compute device (dspp_host_api::device is "
                            "unset: a host older than plugin ABI 1.2, or one computing on the "
                            "CPU); run with --device cpu");
    dspp::DeviceKernels* k = dev->kernels();
    const DeviceKernelsNeed need = device_kernels_need();
    if (!k || k->version() < need.version)
      throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                        me + ": the host's device plugin has " +
                            (k ? "kernels of version " + std::to_string(k->version())
                               : std::string("no kernels")) +
                            "; the optimizer step on " + device_name(d) + " needs version " +
                            std::to_string(need.version) + " or later (" + need.what +
                            "); update the device plugin or run with --device cpu");
    device_ = dev;
    kernels_ = k;
    where_ = d;
  }

  void setup_segments(const OptimizerSetup& s) {
    const std::string me = name_;
    if (s.num_groups < 1 || !s.groups) fail(me + ": at least one parameter group is required");
    if (s.num_segments < 0 || (s.num_segments > 0 && !s.segments)) fail(me + ": bad segment list");
    if (s.flat_numel < 0) fail(me + ": flat_numel must be >= 0");
    flat_numel_ = s.flat_numel;
    num_groups_ = s.num_groups;
    seg_begin_.clear();
    seg_end_.clear();
    seg_names_.clear();
    seg_whole_.clear();
    seg_group_.clear();
    chunks_.clear();
    runs_.clear();
    covered_ = 0;
    std::vector<std::pair<int64_t, int32_t>> order;
    seg_slot_.clear();
    flat_order_.clear();
    for (int32_t i = 0; i < s.num_segments; ++i) {
      const ParamSegment& seg = s.segments[i];
      const std::string nm = seg.name ? seg.name : ("segment " + std::to_string(i));
      if (seg.group < 0 || seg.group >= s.num_groups)
        fail(me + ": " + nm + " names group " + std::to_string(seg.group) + " of " +
             std::to_string(s.num_groups));
      if (seg.ndim < 0 || seg.ndim > DSPP_MAX_DIMS)
        fail(me + ": " + nm + " has ndim " + std::to_string(seg.ndim));
      int64_t whole = 1;
      for (int32_t d = 0; d < seg.ndim; ++d) whole *= seg.shape[d];
      if (seg.numel < 0 || seg.offset_in_param < 0 || seg.offset_in_param + seg.numel > whole)
        fail(me + ": " + nm + " covers elements [" + std::to_string(seg.offset_in_param) + ", " +
             std::to_string(seg.offset_in_param + seg.numel) + ") of a parameter of " +
             std::to_string(whole));
      if (seg.offset_in_flat < 0 || seg.offset_in_flat + seg.numel > s.flat_numel)
        fail(me + ": " + nm + " lies outside the flat buffer of " + std::to_string(s.flat_numel) +
             " elements");
      seg_begin_.push_back(seg.offset_in_flat);
      seg_end_.push_back(seg.offset_in_flat + seg.numel);
      seg_names_.push_back(nm);
      seg_whole_.push_back(seg.offset_in_param == 0 && seg.numel == whole);
      seg_group_.push_back(seg.group);
      order.emplace_back(seg.offset_in_flat, i);
      covered_ += seg.numel;
      const int32_t slot = 2 * seg.group + ((seg.flags & DSPP_PARAM_NO_DECAY) ? 1 : 0);
      seg_slot_.push_back(slot);
      for (int64_t b = seg.offset_in_flat; b < seg.offset_in_flat + seg.numel; b += kChunk)
        chunks_.push_back(
            Chunk{b, std::min(b + kChunk, seg.offset_in_flat + seg.numel), seg.group, i, slot});
    }
    // Overlapping segments would be stepped twice.
    std::sort(order.begin(), order.end());
    for (size_t k = 1; k < order.size(); ++k) {
      const int32_t a = order[k - 1].second, b = order[k].second;
      if (seg_end_[a] > seg_begin_[b])
        fail(me + ": segments " + seg_names_[a] + " and " + seg_names_[b] +
             " overlap in the flat buffer");
    }
    // Device runs: segments in flat order, merged where one ends where the next begins with the
    // same constants.
    for (const auto& [begin, i] : order) flat_order_.push_back(i);
    runs_ = device_runs_where([](int32_t) { return true; });
    setup_lrs_.assign(s.num_groups, 0.0);
    for (int32_t g = 0; g < s.num_groups; ++g) setup_lrs_[g] = s.groups[g].lr;
  }

  void check_buffer(const dspp_tensor_view& t, const char* what) const {
    const std::string me = name_;
    if (t.dtype != DSPP_F32) fail(me + ": " + what + " must be fp32");
    if (kernels_) {
      if (t.device.type != where_.type || t.device.index != where_.index)
        fail(me + ": " + what + " must be memory of " + device_name(where_) +
             " (the device init() was given), got " + device_name(t.device));
    } else if (t.device.type != DSPP_DEVICE_CPU) {
      throw StatusError(DSPP_ERR_NOT_SUPPORTED, me + ": " + what + " must be host memory");
    }
    int64_t n = 1;
    for (int32_t d = 0; d < t.ndim; ++d) n *= t.shape[d];
    if (t.ndim < 0 || n < flat_numel_)
      fail(me + ": " + what + " holds " + std::to_string(n) + " elements, the setup said " +
           std::to_string(flat_numel_));
    if (!t.data && flat_numel_ > 0) fail(me + ": " + what + " has no data");
  }

  const dspp_host_api* host_;
  const char* name_;
  bool initialized_ = false;
  int64_t flat_numel_ = 0;
  int32_t num_groups_ = 0;
  int64_t covered_ = 0;
  std::vector<int64_t> seg_begin_, seg_end_;
  std::vector<std::string> seg_names_;
  std::vector<bool> seg_whole_;
  std::vector<int32_t> seg_group_;
  std::vector<int32_t> seg_slot_;    // Chunk::slot of each segment
  std::vector<int32_t> flat_order_;  // the segments by offset in the flat buffer
  std::vector<Chunk> chunks_;
  std::vector<DeviceRun> runs_;
  std::vector<double> setup_lrs_;
  std::vector<State> states_;
  std::vector<void*> scratch_;  // add_device_scratch()'s blocks
  // A CUDA setup: the host's device and its kernels (both null on the CPU).
  dspp::Device* device_ = nullptr;
  dspp::DeviceKernels* kernels_ = nullptr;
  dspp_device where_{DSPP_DEVICE_CPU, 0};
};

}  // namespace dspp::optim

#endif  // DSPP_PLUGINS_OPTIMIZER_FLAT_OPTIMIZER_H
