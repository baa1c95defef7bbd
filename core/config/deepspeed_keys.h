// Builders for the DeepSpeed key table (deepspeed_keys*.cpp): one short, readable row per key.
#ifndef DSPP_CORE_CONFIG_DEEPSPEED_KEYS_H
#define DSPP_CORE_CONFIG_DEEPSPEED_KEYS_H

#include <dspp/config.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace dspp::keys {

inline constexpr dspp_value_type kBool = DSPP_VALUE_BOOL;
inline constexpr dspp_value_type kInt = DSPP_VALUE_INT;
inline constexpr dspp_value_type kFloat = DSPP_VALUE_FLOAT;
inline constexpr dspp_value_type kString = DSPP_VALUE_STRING;
inline constexpr dspp_value_type kArray = DSPP_VALUE_ARRAY;
inline constexpr dspp_value_type kObject = DSPP_VALUE_OBJECT;
inline constexpr dspp_value_type kAny = DSPP_VALUE_ANY;

// One row of the table. Paths are relative to the section the row is added under.
class Key {
 public:
  Key(std::string path, dspp_value_type type, std::string default_json, std::string doc) {
    spec_.path = std::move(path);
    spec_.type = type;
    spec_.default_json = std::move(default_json);
    spec_.doc = std::move(doc);
  }
  Key& min(double v) {
    spec_.min = v;
    return *this;
  }
  Key& max(double v) {
    spec_.max = v;
    return *this;
  }
  Key& range(double lo, double hi) { return min(lo).max(hi); }
  Key& choices(std::vector<std::string> c) {
    spec_.choices = std::move(c);
    return *this;
  }
  Key& autoable() {
    spec_.allow_auto = true;
    return *this;
  }
  Key& open() {
    spec_.open = true;
    return *this;
  }
  // A DeepSpeed feature dspp lacks that would change results: an error unless the value is
  // `inert` (empty: any presence is an error).
  Key& unsupported(std::string note, std::string inert) {
    spec_.support = Support::kUnsupported;
    spec_.note = std::move(note);
    spec_.inert_json = std::move(inert);
    return *this;
  }
  // A hint or monitor dspp lacks: a warning unless the value is `inert`.
  Key& no_effect(std::string note, std::string inert) {
    spec_.support = Support::kNoEffect;
    spec_.note = std::move(note);
    spec_.inert_json = std::move(inert);
    return *this;
  }
  // A supported key with one value dspp refuses (e.g. "nvme" for an offload device).
  Key& reject(std::string value_json, std::string note) {
    spec_.unsupported_values.emplace_back(std::move(value_json), std::move(note));
    return *this;
  }
  // An old spelling moved to `new_path` (absolute) with a warning.
  Key& deprecated(std::string new_path,
                  std::function<std::string(const std::string&)> transform = {}) {
    spec_.deprecated_for = std::move(new_path);
    spec_.deprecated_transform = std::move(transform);
    return *this;
  }
  const KeySpec& spec() const { return spec_; }

 private:
  KeySpec spec_;
};

// How DeepSpeed reads a section. Its pydantic models drop "auto" values (the field keeps its
// default, None included), so every field of such a section accepts "auto"; its dict readers
// do not.
enum class Parse { kDict, kModel };

// Adds `rows` with `prefix` ("" for the top level) prepended to each path.
inline void add_section(ConfigSchema& schema, const std::string& prefix, Parse parse,
                        std::initializer_list<Key> rows) {
  for (const Key& row : rows) {
    KeySpec spec = row.spec();
    if (!prefix.empty()) spec.path = prefix + "." + spec.path;
    if (parse == Parse::kModel && spec.type != kObject && spec.deprecated_for.empty()) {
      spec.allow_auto = true;
      // "null" (rather than no default): an unfilled "auto" is dropped, as DeepSpeed drops it.
      if (spec.default_json.empty()) spec.default_json = "null";
    }
    schema.add(std::move(spec));
  }
}

// Sections of the table, one per file; register_core_keys calls them all.
void register_top_level_keys(ConfigSchema& s);
void register_zero_keys(ConfigSchema& s);
void register_parallel_keys(ConfigSchema& s);
void register_tooling_keys(ConfigSchema& s);

}  // namespace dspp::keys

#endif  // DSPP_CORE_CONFIG_DEEPSPEED_KEYS_H
