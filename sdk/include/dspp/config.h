// The config registry: DeepSpeed-style JSON in, a validated config out.
//
// Every key has a schema (type, default, range, doc, support level). Core keys (all that DeepSpeed
// 0.19 knows) are registered by the core in core/config/deepspeed_keys.cpp; plugin keys come from
// each plugin's option schema and live under the plugin's section (optimizer.params for the
// optimizer named by optimizer.type, scheduler.params for the scheduler).
#ifndef DSPP_CONFIG_H
#define DSPP_CONFIG_H

#include <dspp/abi.h>
#include <dspp/error.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dspp {

// What dspp does with a key DeepSpeed knows.
enum class Support {
  kSupported,    // implemented
  kUnsupported,  // would change results and dspp lacks it: an error naming the key when enabled
  kNoEffect,     // only a hint or a monitor dspp lacks: a warning saying it has no effect
};

struct KeySpec {
  std::string path;  // dotted JSON path, e.g. "zero_optimization.stage"
  dspp_value_type type = DSPP_VALUE_ANY;
  std::string default_json;  // DeepSpeed's default as JSON text; empty = no default (None)
  std::string doc;           // one sentence for docs/config.md
  std::optional<double> min, max;
  std::vector<std::string> choices;  // allowed strings, compared case-insensitively
  bool allow_auto = false;           // "auto" accepted (Hugging Face Trainer style)
  bool open = false;                 // an object whose children are free-form (not validated)
  Support support = Support::kSupported;
  std::string note;  // why unsupported / no effect; shown in messages and docs
  // When the key is unsupported or no-effect: the JSON value at which it is harmless (its
  // disabled state, usually the default). Empty: any presence triggers the rule.
  std::string inert_json;
  // Non-empty: this path is a deprecated spelling of that one (moved there with a warning).
  std::string deprecated_for;
  std::string owner = "core";  // "core" or "<kind>/<name>" of the plugin that registered it
  // For a deprecated spelling whose value does not move unchanged: maps the old value (compact
  // JSON) to the new path's value (JSON text). An empty result drops the old key without setting
  // the new one (DeepSpeed's `cpu_offload: false` means "no offload", not a value to copy).
  std::function<std::string(const std::string& old_json)> deprecated_transform;
  // Values that are errors although the key is supported: (JSON value, note). E.g. for
  // zero_optimization.offload_optimizer.device: {"\"nvme\"", "NVMe offload is not implemented"}.
  // Strings compare case-insensitively.
  std::vector<std::pair<std::string, std::string>> unsupported_values;
};

class ConfigSchema {
 public:
  // Throws Error(kConfig) on a duplicate path.
  void add(KeySpec spec);
  const KeySpec* find(std::string_view path) const;
  // All keys in path order.
  std::vector<const KeySpec*> all() const;
  // Direct children of an object path ("" for the top level).
  std::vector<const KeySpec*> children(std::string_view parent) const;
  // The built-in schema: every DeepSpeed 0.19 key plus dspp's own (strict_config, plugin_paths).
  static const ConfigSchema& core();

 private:
  std::map<std::string, KeySpec, std::less<>> keys_;
};

// Fills `schema` with the core keys; the one place they are listed.
void register_core_keys(ConfigSchema& schema);

enum class ValueSource { kFile, kDefault, kAuto, kDerived, kDeprecated };
const char* to_string(ValueSource s);

struct ConfigMessage {
  std::string path;  // the key's JSON path, e.g. "zero_optimization.cpu_offload"
  std::string text;
};

struct BatchTriple {
  int64_t train_batch_size = 0;
  int64_t micro_batch_per_gpu = 0;
  int64_t gradient_accumulation_steps = 0;
  int64_t dp_world_size = 1;
  std::string dp_source;  // e.g. "world size 8 / (tp 2 * pp 1 * sp 1)"
};

// What the host knows when the config is loaded.
struct LoadOptions {
  int64_t world_size = 1;
  std::string world_size_source = "single process";
  int64_t tp_size = 1, pp_size = 1, sp_size = 1;
  // Values for keys written "auto": dotted path -> JSON text ("8", "0.0003", "true").
  std::map<std::string, std::string> auto_values;
  // Option schema of a plugin section, e.g. ("optimizer", "adamw") -> its keys relative to
  // optimizer.params. Null: plugin sections are not validated here (a later step does it).
  std::function<const std::vector<KeySpec>*(std::string_view kind, std::string_view name)>
      plugin_options;
  // Called for each warning as it is found (defaults to the core logger).
  std::function<void(const ConfigMessage&)> on_warning;
  // The schema to validate against; null = ConfigSchema::core(). Tests and tools pass their own.
  const ConfigSchema* schema = nullptr;
};

class Config {
 public:
  // DeepSpeed's `config` argument: a file path, a JSON text, or a base64-encoded JSON text.
  static Config load(std::string_view path_json_or_base64, const LoadOptions& opts = {});
  static Config from_file(const std::string& path, const LoadOptions& opts = {});
  static Config from_string(std::string_view json, const LoadOptions& opts = {},
                            std::string origin = "<string>");
  static Config from_base64(std::string_view b64, const LoadOptions& opts = {});
  // From an in-memory RapidJSON value (a Document or any object Value). Defined in
  // <dspp/config_rapidjson.h>, which includes RapidJSON; config.h itself does not need it.
  template <class JsonValue>
  static Config from_document(const JsonValue& doc, const LoadOptions& opts = {},
                              std::string origin = "<document>");

  Config();
  Config(const Config&);
  Config& operator=(const Config&);
  Config(Config&&) noexcept;
  Config& operator=(Config&&) noexcept;
  ~Config();

  // Present in the resolved config (from the file, filled or derived); a null value counts as
  // absent, as DeepSpeed reads null as None.
  bool has(std::string_view path) const;
  // Reads with the schema's default when the key is absent; throws Error(kConfig) naming the key
  // when it has no default or the wrong type.
  bool get_bool(std::string_view path) const;
  int64_t get_int(std::string_view path) const;
  double get_double(std::string_view path) const;
  std::string get_string(std::string_view path) const;
  std::string get_json(std::string_view path) const;  // compact JSON of the effective value
  ValueSource source(std::string_view path) const;

  const BatchTriple& batch() const;
  const std::vector<ConfigMessage>& warnings() const;
  const std::string& origin() const;  // the file path or "<string>"
  // The resolved config as pretty JSON (deprecated keys moved, auto filled, triple set).
  std::string to_json() const;
  // Every schema key that applies: "path = value  (file|default|auto|derived|deprecated)".
  std::string explain() const;

  // A view for a plugin rooted at `section` ("optimizer.params"); lives as long as this Config.
  const dspp_config_view* view(std::string_view section) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// DeepSpeed's batch rule (runtime/config.py): fills the missing members of the triple from the
// given ones and the dp world size, then checks train = micro * gas * dp. Throws Error(kConfig)
// whose message names the dp size and where it came from.
BatchTriple resolve_batch(std::optional<int64_t> train_batch, std::optional<int64_t> micro_batch,
                          std::optional<int64_t> grad_accum, int64_t dp_world_size,
                          const std::string& dp_source);

// "bool", "int", "float", "string", "array", "object", "any" (docs, tools, messages).
const char* value_type_name(dspp_value_type type);

// The edit distance used for did-you-mean suggestions (Damerau–Levenshtein, adjacent swaps = 1).
size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace dspp

#endif  // DSPP_CONFIG_H
