// Config: DeepSpeed-style JSON in, a validated and resolved config out.
//
// Loading runs in this order, each step on the parsed DOM:
//   1. parse (comments, trailing commas; NaN/Inf refused) and reject duplicate keys;
//   2. move deprecated spellings to their new paths (with a warning);
//   3. add the option schemas of the optimizer and scheduler plugins the config names;
//   4. walk every object against the schema: "auto" filled, types, ranges, choices, support
//      levels, unknown keys (near misses are errors, others warnings or strict errors);
//   5. fp16 + bf16 refused; the batch triple filled and checked with DeepSpeed's rule.
// The resolved DOM is what getters, to_json(), explain() and plugin views read.
#include "config/json_util.h"
#include "config/validate.h"
#include "log/log.h"

#include <dspp/config.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

namespace dspp {

using namespace config_detail;

namespace {

bool is_auto(const Value& v) {
  return v.IsString() && std::string_view(v.GetString(), v.GetStringLength()) == "auto";
}

bool absent(const Value* v) {
  return v == nullptr || v->IsNull();
}

// A default that means "not set" (DeepSpeed's None).
bool no_default(const KeySpec& spec) {
  return spec.default_json.empty() || spec.default_json == "null";
}

// Long inputs (a whole base64 blob) are cut in error messages.
std::string shorten(std::string_view s, size_t max = 60) {
  if (s.size() <= max) return std::string(s);
  return std::string(s.substr(0, max)) + "...";
}

std::string parent_of(std::string_view path) {
  size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? std::string() : std::string(path.substr(0, dot));
}

std::string last_segment(std::string_view path) {
  size_t dot = path.rfind('.');
  return std::string(dot == std::string_view::npos ? path : path.substr(dot + 1));
}

Document parse_or_die(const std::string& json, const std::string& what) {
  Document d;
  if (!parse_fragment(json, d)) {
    throw Error(Errc::kConfig, what + " is not valid JSON: " + json);
  }
  return d;
}

}  // namespace

// -------------------------------------------------------------------------------------------------
// Impl

namespace config_detail {
// One plugin view: the C table plus what its functions read.
struct ViewState {
  dspp_config_view view{};
  std::string prefix;
  const Config::Impl* impl = nullptr;
};
}  // namespace config_detail

struct Config::Impl {
  // Shared and immutable once loading ends: copies of a Config share it.
  std::shared_ptr<const ConfigSchema> schema;
  Document doc;
  std::string origin = "<empty>";
  BatchTriple batch;
  std::vector<ConfigMessage> warnings;
  // Sources that differ from "present means file, absent means default".
  std::map<std::string, ValueSource, std::less<>> sources;
  // Object paths validated with a plugin's option schema (so not free-form any more).
  std::set<std::string, std::less<>> plugin_sections;

  // Views handed to plugins; node-based so their addresses stay put. Not copied with the Impl:
  // a copy hands out its own views.
  mutable std::mutex views_mu;
  mutable std::map<std::string, ViewState, std::less<>> views;

  Impl() { doc.SetObject(); }
  Impl(const Impl& o)
      : schema(o.schema),
        origin(o.origin),
        batch(o.batch),
        warnings(o.warnings),
        sources(o.sources),
        plugin_sections(o.plugin_sections) {
    doc.CopyFrom(o.doc, doc.GetAllocator());
  }
  Impl& operator=(const Impl&) = delete;

  const Value* find_value(std::string_view path) const {
    const Value* v = lookup(doc, path);
    return absent(v) ? nullptr : v;
  }
  bool is_open(const KeySpec& spec) const { return spec.open && !plugin_sections.count(spec.path); }
  ValueSource source_of(std::string_view path) const;
  // The value a getter returns: the resolved one, else the schema's default (parsed into
  // `scratch`). Throws naming the key when there is neither.
  const Value& effective(std::string_view path, Document& scratch) const;
};

ValueSource Config::Impl::source_of(std::string_view path) const {
  auto it = sources.find(path);
  if (it != sources.end()) return it->second;
  // A value moved or filled as a whole object passes its source to what is inside.
  for (std::string p = parent_of(path); !p.empty(); p = parent_of(p)) {
    auto jt = sources.find(p);
    if (jt != sources.end() &&
        (jt->second == ValueSource::kDeprecated || jt->second == ValueSource::kAuto)) {
      return jt->second;
    }
  }
  return find_value(path) ? ValueSource::kFile : ValueSource::kDefault;
}

const Value& Config::Impl::effective(std::string_view path, Document& scratch) const {
  if (const Value* v = find_value(path)) return *v;
  const KeySpec* spec = schema->find(path);
  if (!spec) {
    throw Error(Errc::kConfig, "config key '" + std::string(path) + "' is not set in " + origin +
                                   " and is not a known key");
  }
  if (no_default(*spec)) {
    throw Error(Errc::kConfig, "config key '" + std::string(path) + "' is not set in " + origin +
                                   " and has no default");
  }
  scratch = parse_or_die(spec->default_json, "the default of '" + spec->path + "'");
  return scratch;
}

// -------------------------------------------------------------------------------------------------
// Loading

namespace {

class Loader {
 public:
  Loader(Config::Impl& impl, const LoadOptions& opts) : impl_(impl), opts_(opts) {}

  void run() {
    check_duplicate_keys(impl_.doc, "", impl_.origin);
    const Value* strict = lookup(impl_.doc, "strict_config");
    strict_ = strict && strict->IsBool() && strict->GetBool();
    move_deprecated();
    add_plugin_schemas();
    validate_object(impl_.doc, "");
    check_precision();
    resolve_batch_triple();
  }

 private:
  Allocator& alloc() { return impl_.doc.GetAllocator(); }
  const ConfigSchema& schema() const { return *impl_.schema; }

  void warn(const std::string& path, const std::string& text) {
    ConfigMessage m{path, text};
    impl_.warnings.push_back(m);
    if (opts_.on_warning) {
      opts_.on_warning(m);
    } else {
      log::warn("config", text);
    }
  }

  [[noreturn]] void fail(const std::string& text) {
    throw Error(Errc::kConfig, text + " (in " + impl_.origin + ")");
  }

  // The names a config may use directly under `parent`: the first segment of every schema key
  // below it (so a plugin key "a.b" makes "a" known even without its own spec).
  std::vector<std::string> known_children(const std::string& parent) const {
    std::set<std::string> names;
    std::string prefix = parent.empty() ? "" : parent + ".";
    for (const KeySpec* s : schema().all()) {
      if (s->path.compare(0, prefix.size(), prefix) != 0 || s->path.size() == prefix.size()) {
        continue;
      }
      std::string rest = s->path.substr(prefix.size());
      names.insert(rest.substr(0, rest.find('.')));
    }
    return {names.begin(), names.end()};
  }

  bool has_schema_children(const std::string& path) const {
    std::string prefix = path + ".";
    for (const KeySpec* s : schema().all()) {
      if (s->path.compare(0, prefix.size(), prefix) == 0) return true;
    }
    return false;
  }

  // ---- 2. deprecated spellings ------------------------------------------------------------------

  // Finds one deprecated key present in the DOM (outermost first), or "".
  std::string find_deprecated(const Value& obj, const std::string& path) const {
    for (auto it = obj.MemberBegin(); it != obj.MemberEnd(); ++it) {
      std::string child = join_path(path, it->name.GetString());
      const KeySpec* spec = schema().find(child);
      if (spec && !spec->deprecated_for.empty()) return child;
    }
    for (auto it = obj.MemberBegin(); it != obj.MemberEnd(); ++it) {
      if (!it->value.IsObject()) continue;
      std::string child = join_path(path, it->name.GetString());
      const KeySpec* spec = schema().find(child);
      if (spec && impl_.is_open(*spec)) continue;
      std::string found = find_deprecated(it->value, child);
      if (!found.empty()) return found;
    }
    return "";
  }

  // Moving one key can expose another (a deprecated object holding deprecated children), so
  // keys are moved one at a time until none is left.
  void move_deprecated() {
    for (int guard = 0; guard < 256; ++guard) {
      std::string old_path = find_deprecated(impl_.doc, "");
      if (old_path.empty()) return;
      move_one(old_path, *schema().find(old_path));
    }
    fail("deprecated keys refer to each other in a cycle");
  }

  void erase_path(const std::string& path) {
    Value* parent = lookup(impl_.doc, parent_of(path));
    std::string name = last_segment(path);
    parent->EraseMember(rapidjson::StringRef(name.data(), name.size()));
  }

  void move_one(const std::string& old_path, const KeySpec& spec) {
    const std::string& new_path = spec.deprecated_for;
    const Value* old_value = lookup(impl_.doc, old_path);
    std::string old_json = to_compact(*old_value);
    std::string new_json =
        spec.deprecated_transform ? spec.deprecated_transform(old_json) : old_json;
    if (new_json.empty()) {
      erase_path(old_path);
      warn(old_path, "'" + old_path + "' is deprecated (use '" + new_path + "'); its value " +
                         old_json + " sets nothing, so it was dropped");
      return;
    }
    Document moved =
        parse_or_die(new_json, "schema: the new value of deprecated '" + old_path + "'");
    if (const Value* existing = lookup(impl_.doc, new_path); !absent(existing)) {
      if (!json_equal(*existing, moved, false)) {
        std::string meaning = new_json == old_json ? "" : " (meaning " + new_json + ")";
        fail("'" + old_path + "' (deprecated) is " + old_json + meaning + " but '" + new_path +
             "' is " + to_compact(*existing) +
             ": both are given with different values; keep only '" + new_path + "'");
      }
      erase_path(old_path);
      warn(old_path, "'" + old_path + "' is deprecated and repeats '" + new_path +
                         "' with the same value; dropped it (write only '" + new_path + "')");
      return;
    }
    // Create the objects on the way to the new path.
    Value* cur = &impl_.doc;
    std::string walked;
    std::vector<std::string> parts = split_path(new_path);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      walked = join_path(walked, parts[i]);
      auto it = cur->FindMember(rapidjson::StringRef(parts[i].data(), parts[i].size()));
      if (it == cur->MemberEnd()) {
        cur->AddMember(
            Value(parts[i].data(), static_cast<rapidjson::SizeType>(parts[i].size()), alloc()),
            Value(rapidjson::kObjectType), alloc());
        cur = &(cur->MemberEnd() - 1)->value;
      } else {
        if (it->value.IsNull()) it->value.SetObject();
        if (!it->value.IsObject()) {
          fail("cannot move deprecated '" + old_path + "' to '" + new_path + "': '" + walked +
               "' is " + describe(it->value) + ", not an object");
        }
        cur = &it->value;
      }
    }
    const std::string& leaf = parts.back();
    Value copy(moved, alloc());
    auto it = cur->FindMember(rapidjson::StringRef(leaf.data(), leaf.size()));
    if (it != cur->MemberEnd()) {
      it->value = copy;  // an explicit null at the new path
    } else {
      cur->AddMember(Value(leaf.data(), static_cast<rapidjson::SizeType>(leaf.size()), alloc()),
                     copy, alloc());
    }
    erase_path(old_path);
    impl_.sources[new_path] = ValueSource::kDeprecated;
    std::string shown = new_json == old_json ? old_json : old_json + " (as " + new_json + ")";
    warn(old_path, "'" + old_path + "' is deprecated: moved its value " + shown + " to '" +
                       new_path + "'; write '" + new_path + "' instead");
  }

  // ---- 3. plugin option schemas -----------------------------------------------------------------

  void add_plugin_schemas() {
    if (!opts_.plugin_options) return;
    std::shared_ptr<ConfigSchema> merged;
    for (const char* kind : {"optimizer", "scheduler"}) {
      const Value* type = lookup(impl_.doc, std::string(kind) + ".type");
      if (absent(type) || !type->IsString()) continue;
      std::string name = lower(type->GetString());
      const std::vector<KeySpec>* specs = opts_.plugin_options(kind, name);
      if (!specs) continue;
      if (!merged) merged = std::make_shared<ConfigSchema>(*impl_.schema);
      std::string section = std::string(kind) + ".params";
      for (const KeySpec& s : *specs) {
        KeySpec full = s;
        full.path = join_path(section, s.path);
        if (full.owner == "core") full.owner = std::string(kind) + "/" + name;
        merged->add(std::move(full));
      }
      impl_.plugin_sections.insert(section);
    }
    if (merged) impl_.schema = std::move(merged);
  }

  // ---- 4. the schema walk -----------------------------------------------------------------------

  enum class AutoOutcome { kKeep, kRemove };

  AutoOutcome fill_auto(const KeySpec& spec, const std::string& path, Value& v) {
    auto it = opts_.auto_values.find(path);
    if (it != opts_.auto_values.end()) {
      Document d;
      if (!parse_fragment(it->second, d)) {
        fail(path + ": the host's value for 'auto' is not valid JSON: " + it->second);
      }
      v.CopyFrom(d, alloc());
      impl_.sources[path] = ValueSource::kAuto;
      return AutoOutcome::kKeep;
    }
    if (path == "train_batch_size") {
      // DeepSpeed's rule derives it from the micro batch, accumulation steps and dp size.
      impl_.sources[path] = ValueSource::kDerived;
      return AutoOutcome::kRemove;
    }
    if (spec.default_json == "null") {
      warn(path, path +
                     " is 'auto' and the host did not fill it; left unset (DeepSpeed's "
                     "default, None)");
      return AutoOutcome::kRemove;
    }
    if (!spec.default_json.empty()) {
      Document d = parse_or_die(spec.default_json, "the default of '" + path + "'");
      v.CopyFrom(d, alloc());
      impl_.sources[path] = ValueSource::kAuto;
      warn(path, path + " is 'auto' and the host did not fill it; using DeepSpeed's default " +
                     spec.default_json);
      return AutoOutcome::kKeep;
    }
    fail(path +
         ": 'auto' was not filled by the host and has no default (give it to initialize() "
         "in auto_values, or to ds-config as --auto " +
         path + "=VALUE)");
  }

  // Inside free-form objects only the host's "auto" values are applied; nothing is checked.
  void fill_auto_open(Value& obj, const std::string& path) {
    if (!obj.IsObject()) return;
    for (auto it = obj.MemberBegin(); it != obj.MemberEnd(); ++it) {
      std::string child = join_path(path, it->name.GetString());
      if (is_auto(it->value)) {
        auto jt = opts_.auto_values.find(child);
        if (jt == opts_.auto_values.end()) continue;
        Document d;
        if (!parse_fragment(jt->second, d)) {
          fail(child + ": the host's value for 'auto' is not valid JSON: " + jt->second);
        }
        it->value.CopyFrom(d, alloc());
        impl_.sources[child] = ValueSource::kAuto;
      } else if (it->value.IsObject()) {
        fill_auto_open(it->value, child);
      }
    }
  }

  void check_support(const KeySpec& spec, const Value& v, const std::string& path) {
    for (const auto& [json, note] : spec.unsupported_values) {
      Document bad = parse_or_die(json, "schema: an unsupported value of '" + spec.path + "'");
      if (json_equal(v, bad, true)) {
        fail(path + " = " + to_compact(v) + " is not supported by dspp: " + note);
      }
    }
    if (spec.support == Support::kSupported) return;
    bool inert = false;
    if (!spec.inert_json.empty()) {
      Document d = parse_or_die(spec.inert_json, "schema: the inert value of '" + spec.path + "'");
      inert = json_equal(v, d, true);
    }
    if (inert) return;
    std::string hint = spec.inert_json.empty()
                           ? " (remove the key)"
                           : " (remove the key or set it to " + spec.inert_json + ")";
    if (spec.support == Support::kUnsupported) {
      fail(path + " = " + shorten(to_compact(v)) + " is not supported by dspp: " + spec.note +
           hint);
    }
    warn(path, path + " has no effect in dspp: " + spec.note);
  }

  void unknown_key(const std::string& parent, const std::string& name, const std::string& path) {
    // Keys starting with '_' ("_comment") are deliberate notes, never typos of a real key.
    if (name.empty() || name[0] != '_') {
      std::string best;
      size_t best_distance = SIZE_MAX;
      std::string lname = lower(name);
      for (const std::string& cand : known_children(parent)) {
        size_t d = edit_distance(lname, lower(cand));
        size_t limit = cand.size() >= 6 ? 2 : 1;
        if (d <= limit && d < best_distance) {
          best = cand;
          best_distance = d;
        }
      }
      if (!best.empty()) {
        throw Error(Errc::kConfig, "unknown key '" + name + "' at " + path + " in " + impl_.origin +
                                       ": did you mean '" + join_path(parent, best) + "'?");
      }
    }
    // A real key at the wrong level is worth pointing at.
    std::string elsewhere;
    for (const KeySpec* s : schema().all()) {
      if (s->path != path && iequals(last_segment(s->path), name)) {
        elsewhere = " ('" + s->path + "' is a known key: is it at the wrong level?)";
        break;
      }
    }
    if (strict_) {
      throw Error(Errc::kConfig, "unknown key '" + name + "' at " + path + " in " + impl_.origin +
                                     ": strict_config is true, so unknown keys are errors" +
                                     elsewhere);
    }
    warn(path, "unknown key '" + name + "' at " + path + " in " + impl_.origin +
                   " is ignored: neither DeepSpeed 0.19 nor dspp knows it" + elsewhere);
  }

  void validate_object(Value& obj, const std::string& path) {
    for (auto it = obj.MemberBegin(); it != obj.MemberEnd();) {
      std::string name = it->name.GetString();
      std::string child = join_path(path, name);
      const KeySpec* spec = schema().find(child);
      Value& v = it->value;
      if (!spec) {
        if (has_schema_children(child)) {
          // An object implied by its children's keys (a plugin option "a.b").
          if (!v.IsObject()) fail(child + ": expected an object, got " + describe(v));
          validate_object(v, child);
        } else {
          unknown_key(path, name, child);
        }
        ++it;
        continue;
      }
      if (is_auto(v) && spec->allow_auto) {
        if (fill_auto(*spec, child, v) == AutoOutcome::kRemove) {
          it = obj.EraseMember(it);
          continue;
        }
      }
      if (v.IsNull()) {
        // null is DeepSpeed's None: the same as absent where the default is None.
        if (!no_default(*spec)) {
          fail(child + ": expected " + type_phrase(spec->type) + ", got null (its default is " +
               spec->default_json + "; remove the key to use it)");
        }
        ++it;
        continue;
      }
      std::string problem = check_value_type(*spec, v);
      if (!problem.empty()) fail(child + ": " + problem);
      normalize_value(*spec, v, alloc());
      check_support(*spec, v, child);
      if (v.IsObject()) {
        if (impl_.is_open(*spec) || spec->type == DSPP_VALUE_ANY) {
          fill_auto_open(v, child);
        } else {
          validate_object(v, child);
        }
      }
      ++it;
    }
  }

  // ---- 5. cross-key rules -----------------------------------------------------------------------

  void check_precision() {
    const Value* fp16 = lookup(impl_.doc, "fp16.enabled");
    const Value* bf16 = lookup(impl_.doc, "bf16.enabled");
    if (fp16 && bf16 && fp16->IsBool() && bf16->IsBool() && fp16->GetBool() && bf16->GetBool()) {
      fail(
          "fp16.enabled and bf16.enabled are both true: pick one precision (DeepSpeed refuses "
          "this too)");
    }
    // DeepSpeed 0.19's DeepSpeedFP16Config checks these only when dynamic scaling is on
    // (enabled, loss_scale 0): a window of 0 divides by zero, a floor <= 0 lets the scale collapse.
    if (fp16 && fp16->IsBool() && fp16->GetBool()) {
      const Value* scale = lookup(impl_.doc, "fp16.loss_scale");
      if (absent(scale) || (scale->IsNumber() && scale->GetDouble() == 0.0)) {
        for (const char* key : {"fp16.loss_scale_window", "fp16.min_loss_scale"}) {
          const Value* v = lookup(impl_.doc, key);
          if (!absent(v) && v->IsNumber() && v->GetDouble() <= 0.0) {
            fail(std::string(key) + " must be > 0 when dynamic loss scaling is enabled " +
                 "(fp16.loss_scale 0), got " + describe(*v));
          }
        }
      }
    }
  }

  std::optional<int64_t> batch_value(const char* key) {
    const Value* v = lookup(impl_.doc, key);
    if (absent(v)) return std::nullopt;
    if (!v->IsInt64()) fail(std::string(key) + ": expected an integer, got " + describe(*v));
    return v->GetInt64();
  }

  void resolve_batch_triple() {
    // The batch rule belongs to DeepSpeed's keys; a schema without them (a test's, a tool's)
    // has no batch.
    if (!schema().find("train_batch_size")) return;
    const int64_t ws = opts_.world_size;
    const int64_t model_parallel = opts_.tp_size * opts_.pp_size * opts_.sp_size;
    const std::string sizes = "tp " + std::to_string(opts_.tp_size) + " × pp " +
                              std::to_string(opts_.pp_size) + " × sp " +
                              std::to_string(opts_.sp_size);
    if (ws < 1 || opts_.tp_size < 1 || opts_.pp_size < 1 || opts_.sp_size < 1) {
      fail("world size " + std::to_string(ws) + " and " + sizes + " must all be >= 1");
    }
    if (ws % model_parallel != 0) {
      fail("world size " + std::to_string(ws) + " is not divisible by " + sizes + " = " +
           std::to_string(model_parallel) + ": no whole data-parallel size");
    }
    const int64_t dp = ws / model_parallel;
    std::string dp_source;
    const std::string& ws_source = opts_.world_size_source;
    if (ws == 1 && model_parallel == 1) {
      dp_source = ws_source.empty() ? "single process" : ws_source;
    } else {
      dp_source = "world size " + std::to_string(ws);
      if (!ws_source.empty() && ws_source != "single process") dp_source += " (" + ws_source + ")";
      dp_source += " / (" + sizes + ") = " + std::to_string(dp);
    }
    auto train = batch_value("train_batch_size");
    auto micro = batch_value("train_micro_batch_size_per_gpu");
    auto gas = batch_value("gradient_accumulation_steps");
    try {
      impl_.batch = resolve_batch(train, micro, gas, dp, dp_source);
    } catch (const Error& e) {
      fail(e.what());
    }
    auto set = [&](const char* key, int64_t value, bool given) {
      Value* v = lookup(impl_.doc, key);
      if (v) {
        v->SetInt64(value);
      } else {
        impl_.doc.AddMember(rapidjson::StringRef(key), Value(value), alloc());
      }
      if (!given) impl_.sources[key] = ValueSource::kDerived;
    };
    set("train_batch_size", impl_.batch.train_batch_size, train.has_value());
    set("train_micro_batch_size_per_gpu", impl_.batch.micro_batch_per_gpu, micro.has_value());
    set("gradient_accumulation_steps", impl_.batch.gradient_accumulation_steps, gas.has_value());
  }

  Config::Impl& impl_;
  const LoadOptions& opts_;
  bool strict_ = false;
};

std::shared_ptr<const ConfigSchema> schema_for(const LoadOptions& opts) {
  if (opts.schema) return std::make_shared<const ConfigSchema>(*opts.schema);
  // The core schema is a static: share it without owning it.
  return std::shared_ptr<const ConfigSchema>(&ConfigSchema::core(), [](const ConfigSchema*) {});
}

}  // namespace

// -------------------------------------------------------------------------------------------------
// Config

Config::Config() : impl_(std::make_unique<Impl>()) {
  impl_->schema =
      std::shared_ptr<const ConfigSchema>(&ConfigSchema::core(), [](const ConfigSchema*) {});
}
Config::Config(const Config& o) : impl_(std::make_unique<Impl>(*o.impl_)) {}
Config& Config::operator=(const Config& o) {
  if (this != &o) impl_ = std::make_unique<Impl>(*o.impl_);
  return *this;
}
Config::Config(Config&&) noexcept = default;
Config& Config::operator=(Config&&) noexcept = default;
Config::~Config() = default;

Config Config::from_string(std::string_view json, const LoadOptions& opts, std::string origin) {
  Config c;
  c.impl_->schema = schema_for(opts);
  c.impl_->origin = std::move(origin);
  c.impl_->doc = parse_config_text(json, c.impl_->origin);
  Loader(*c.impl_, opts).run();
  return c;
}

Config Config::from_file(const std::string& path, const LoadOptions& opts) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(Errc::kIo, "cannot read config file '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(Errc::kIo, "cannot read config file '" + path + "'");
  return from_string(ss.str(), opts, path);
}

Config Config::from_base64(std::string_view b64, const LoadOptions& opts) {
  std::string json;
  if (!base64_decode(b64, json)) {
    throw Error(Errc::kConfig, "config is not valid base64: '" + shorten(b64) + "'");
  }
  return from_string(json, opts, "<base64 config>");
}

Config Config::load(std::string_view input, const LoadOptions& opts) {
  std::string text(input);
  std::error_code ec;
  if (!text.empty() && text.size() < 4096 && std::filesystem::is_regular_file(text, ec)) {
    return from_file(text, opts);
  }
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') return from_string(text, opts);
  std::string json;
  if (base64_decode(text, json)) {
    size_t j = json.find_first_not_of(" \t\r\n");
    if (j != std::string::npos && json[j] == '{') return from_string(json, opts, "<base64 config>");
  }
  std::string hint;
  bool looks_like_path = text.find('/') != std::string::npos ||
                         (text.size() > 5 && lower(text.substr(text.size() - 5)) == ".json");
  if (looks_like_path) {
    hint = " (no such file)";
  }
  throw Error(Errc::kConfig, "config is neither a readable file, JSON, nor base64 JSON: '" +
                                 shorten(text) + "'" + hint);
}

bool Config::has(std::string_view path) const {
  return impl_->find_value(path) != nullptr;
}

bool Config::get_bool(std::string_view path) const {
  Document scratch;
  const Value& v = impl_->effective(path, scratch);
  if (!v.IsBool()) {
    throw Error(Errc::kConfig, std::string(path) + ": expected true or false, got " + describe(v));
  }
  return v.GetBool();
}

int64_t Config::get_int(std::string_view path) const {
  Document scratch;
  const Value& v = impl_->effective(path, scratch);
  if (v.IsInt64()) return v.GetInt64();
  if (v.IsDouble()) {
    double d = v.GetDouble();
    if (std::floor(d) == d && d >= -9.2e18 && d <= 9.2e18) return static_cast<int64_t>(d);
  }
  throw Error(Errc::kConfig, std::string(path) + ": expected an integer, got " + describe(v));
}

double Config::get_double(std::string_view path) const {
  Document scratch;
  const Value& v = impl_->effective(path, scratch);
  if (!v.IsNumber()) {
    throw Error(Errc::kConfig, std::string(path) + ": expected a number, got " + describe(v));
  }
  return v.GetDouble();
}

std::string Config::get_string(std::string_view path) const {
  Document scratch;
  const Value& v = impl_->effective(path, scratch);
  if (!v.IsString()) {
    throw Error(Errc::kConfig, std::string(path) + ": expected a string, got " + describe(v));
  }
  return std::string(v.GetString(), v.GetStringLength());
}

std::string Config::get_json(std::string_view path) const {
  Document scratch;
  return to_compact(impl_->effective(path, scratch));
}

ValueSource Config::source(std::string_view path) const {
  return impl_->source_of(path);
}

const BatchTriple& Config::batch() const {
  return impl_->batch;
}
const std::vector<ConfigMessage>& Config::warnings() const {
  return impl_->warnings;
}
const std::string& Config::origin() const {
  return impl_->origin;
}
std::string Config::to_json() const {
  return to_pretty(impl_->doc);
}

// -------------------------------------------------------------------------------------------------
// explain()

namespace {

class Explainer {
 public:
  explicit Explainer(const Config::Impl& impl) : impl_(impl) {}

  std::string run() {
    object("", &impl_.doc);
    return out_;
  }

 private:
  void line(const std::string& path, const std::string& value, const char* source) {
    out_ += path + " = " + value + "  (" + source + ")\n";
  }

  std::string default_text(const KeySpec* spec) {
    if (!spec || no_default(*spec)) return "(not set)";
    return to_compact(parse_or_die(spec->default_json, "the default of '" + spec->path + "'"));
  }

  // Names under `parent` that the schema knows, deprecated spellings left out (they were moved).
  std::vector<std::string> schema_children(const std::string& parent) {
    std::set<std::string> names;
    std::string prefix = parent.empty() ? "" : parent + ".";
    for (const KeySpec* s : impl_.schema->all()) {
      if (s->path.compare(0, prefix.size(), prefix) != 0 || s->path.size() == prefix.size()) {
        continue;
      }
      std::string rest = s->path.substr(prefix.size());
      std::string name = rest.substr(0, rest.find('.'));
      const KeySpec* own = impl_.schema->find(join_path(parent, name));
      if (own && !own->deprecated_for.empty()) continue;
      names.insert(name);
    }
    return {names.begin(), names.end()};
  }

  // An object whose children the schema lists (and which is not free-form).
  bool is_container(const std::string& path, const KeySpec* spec) {
    if (spec && (spec->type != DSPP_VALUE_OBJECT || impl_.is_open(*spec))) return false;
    return !schema_children(path).empty();
  }

  void object(const std::string& path, const Value* obj) {
    std::vector<std::string> names = schema_children(path);
    // A disabled feature shows only what the file wrote, not every default inside it.
    const Value* enabled = obj ? lookup(*obj, "enabled") : nullptr;
    bool disabled = !path.empty() && enabled && enabled->IsBool() && !enabled->GetBool();
    for (const std::string& name : names) {
      std::string child = join_path(path, name);
      const KeySpec* spec = impl_.schema->find(child);
      const Value* v = obj ? lookup(*obj, name) : nullptr;
      bool present = !absent(v);
      if (disabled && !present) continue;
      bool container = is_container(child, spec);
      if (present) {
        if (container && v->IsObject()) {
          object(child, v);
        } else {
          line(child, to_compact(*v), to_string(impl_.source_of(child)));
        }
        continue;
      }
      if (!container) {
        line(child, default_text(spec), to_string(impl_.source_of(child)));
        continue;
      }
      // An absent object: DeepSpeed's None shows as one line; an absent feature with an
      // "enabled" switch shows just the switch; otherwise its children's defaults apply.
      if (spec && no_default(*spec)) {
        line(child, "(not set)", "default");
      } else if (impl_.schema->find(child + ".enabled")) {
        line(child + ".enabled", default_text(impl_.schema->find(child + ".enabled")), "default");
      } else {
        object(child, nullptr);
      }
    }
    if (!obj || !obj->IsObject()) return;
    for (auto it = obj->MemberBegin(); it != obj->MemberEnd(); ++it) {
      std::string name = it->name.GetString();
      if (std::binary_search(names.begin(), names.end(), name)) continue;
      line(join_path(path, name), to_compact(it->value), "unknown");
    }
  }

  const Config::Impl& impl_;
  std::string out_;
};

}  // namespace

std::string Config::explain() const {
  return Explainer(*impl_).run();
}

// -------------------------------------------------------------------------------------------------
// Plugin views

namespace {

const Value* view_lookup(void* self, const char* path) {
  auto* st = static_cast<ViewState*>(self);
  if (!path) return nullptr;
  const Value* v = lookup(st->impl->doc, join_path(st->prefix, path));
  return absent(v) ? nullptr : v;
}

dspp_status copy_out(const std::string& s, char* buf, size_t cap, size_t* len) {
  if (len) *len = s.size();
  if (buf && cap > 0) {
    size_t n = std::min(s.size(), cap - 1);
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
  }
  return DSPP_OK;
}

int32_t view_has(void* self, const char* path) {
  try {
    return view_lookup(self, path) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

dspp_status view_get_bool(void* self, const char* path, int32_t* out) {
  try {
    const Value* v = view_lookup(self, path);
    if (!v || !v->IsBool() || !out) return DSPP_ERR_INVALID_ARGUMENT;
    *out = v->GetBool() ? 1 : 0;
    return DSPP_OK;
  } catch (...) {
    return DSPP_ERR_RUNTIME;
  }
}

dspp_status view_get_int(void* self, const char* path, int64_t* out) {
  try {
    const Value* v = view_lookup(self, path);
    if (!v || !out) return DSPP_ERR_INVALID_ARGUMENT;
    if (v->IsInt64()) {
      *out = v->GetInt64();
      return DSPP_OK;
    }
    // Free-form sections keep 5e8 as written; a whole number still reads as an integer.
    if (v->IsDouble() && std::floor(v->GetDouble()) == v->GetDouble() &&
        std::fabs(v->GetDouble()) <= 9.2e18) {
      *out = static_cast<int64_t>(v->GetDouble());
      return DSPP_OK;
    }
    return DSPP_ERR_INVALID_ARGUMENT;
  } catch (...) {
    return DSPP_ERR_RUNTIME;
  }
}

dspp_status view_get_double(void* self, const char* path, double* out) {
  try {
    const Value* v = view_lookup(self, path);
    if (!v || !v->IsNumber() || !out) return DSPP_ERR_INVALID_ARGUMENT;
    *out = v->GetDouble();
    return DSPP_OK;
  } catch (...) {
    return DSPP_ERR_RUNTIME;
  }
}

dspp_status view_get_string(void* self, const char* path, char* buf, size_t cap, size_t* len) {
  try {
    const Value* v = view_lookup(self, path);
    if (!v || !v->IsString()) return DSPP_ERR_INVALID_ARGUMENT;
    return copy_out(std::string(v->GetString(), v->GetStringLength()), buf, cap, len);
  } catch (...) {
    return DSPP_ERR_RUNTIME;
  }
}

dspp_status view_get_json(void* self, const char* path, char* buf, size_t cap, size_t* len) {
  try {
    const Value* v = view_lookup(self, path);
    if (!v) return DSPP_ERR_INVALID_ARGUMENT;
    return copy_out(to_compact(*v), buf, cap, len);
  } catch (...) {
    return DSPP_ERR_RUNTIME;
  }
}

}  // namespace

const dspp_config_view* Config::view(std::string_view section) const {
  std::lock_guard lock(impl_->views_mu);
  auto it = impl_->views.find(section);
  if (it != impl_->views.end()) return &it->second.view;
  ViewState& st = impl_->views[std::string(section)];
  st.prefix = std::string(section);
  st.impl = impl_.get();
  st.view.struct_size = sizeof(dspp_config_view);
  st.view.self = &st;
  st.view.has = view_has;
  st.view.get_bool = view_get_bool;
  st.view.get_int = view_get_int;
  st.view.get_double = view_get_double;
  st.view.get_string = view_get_string;
  st.view.get_json = view_get_json;
  return &st.view;
}

}  // namespace dspp
