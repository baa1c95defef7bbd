// ConfigSchema: the table of known keys, and the edit distance behind did-you-mean suggestions.
#include "config/json_util.h"
#include "config/validate.h"

#include <dspp/config.h>

#include <algorithm>
#include <vector>

namespace dspp {

using namespace config_detail;

namespace {

// A schema mistake is a bug in dspp or a plugin, found once at registration rather than each
// time a config is loaded.
void check_spec_json(const KeySpec& spec, const std::string& what, const std::string& json) {
  if (json.empty()) return;
  Document doc;
  if (!parse_fragment(json, doc)) {
    throw Error(Errc::kConfig,
                "schema: the " + what + " of '" + spec.path + "' is not valid JSON: " + json);
  }
  if (doc.IsNull()) return;
  std::string problem = check_value_type(spec, doc);
  if (!problem.empty()) {
    throw Error(Errc::kConfig, "schema: the " + what + " of '" + spec.path + "' (" + json +
                                   ") does not fit the key: " + problem);
  }
}

}  // namespace

void ConfigSchema::add(KeySpec spec) {
  if (spec.path.empty() || spec.path.front() == '.' || spec.path.back() == '.' ||
      spec.path.find("..") != std::string::npos) {
    throw Error(Errc::kConfig, "schema: invalid key path '" + spec.path + "'");
  }
  if (keys_.count(spec.path)) {
    throw Error(Errc::kConfig, "schema: key '" + spec.path + "' is registered twice (by " +
                                   keys_.at(spec.path).owner + " and " + spec.owner + ")");
  }
  check_spec_json(spec, "default", spec.default_json);
  check_spec_json(spec, "inert value", spec.inert_json);
  for (const auto& [json, note] : spec.unsupported_values) {
    check_spec_json(spec, "unsupported value", json);
  }
  std::string path = spec.path;
  keys_.emplace(std::move(path), std::move(spec));
}

const KeySpec* ConfigSchema::find(std::string_view path) const {
  auto it = keys_.find(path);
  return it == keys_.end() ? nullptr : &it->second;
}

std::vector<const KeySpec*> ConfigSchema::all() const {
  std::vector<const KeySpec*> out;
  out.reserve(keys_.size());
  for (const auto& [path, spec] : keys_) out.push_back(&spec);
  return out;
}

std::vector<const KeySpec*> ConfigSchema::children(std::string_view parent) const {
  std::vector<const KeySpec*> out;
  std::string prefix = parent.empty() ? std::string() : std::string(parent) + ".";
  for (auto it = keys_.lower_bound(prefix); it != keys_.end(); ++it) {
    const std::string& p = it->first;
    if (p.compare(0, prefix.size(), prefix) != 0) break;
    if (p.find('.', prefix.size()) == std::string::npos) out.push_back(&it->second);
  }
  return out;
}

const ConfigSchema& ConfigSchema::core() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    register_core_keys(s);
    return s;
  }();
  return schema;
}

const char* to_string(ValueSource s) {
  switch (s) {
    case ValueSource::kFile:
      return "file";
    case ValueSource::kDefault:
      return "default";
    case ValueSource::kAuto:
      return "auto";
    case ValueSource::kDerived:
      return "derived";
    case ValueSource::kDeprecated:
      return "deprecated";
  }
  return "?";
}

// Optimal string alignment distance: Levenshtein plus the swap of two adjacent characters, the
// most common typing slip ("stgae").
size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

}  // namespace dspp
