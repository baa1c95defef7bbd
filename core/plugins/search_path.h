// Core-internal: where plugin libraries are looked for, with where each folder came from, so tools
// can say where they looked even when a folder does not exist.
#pragma once

#include <string>
#include <vector>

namespace dspp {

struct PluginFolder {
  std::string path;    // as configured (absolute for the built-in and install folders)
  std::string origin;  // "built-in", "plugin_paths", "DSPP_PLUGIN_PATH" or "install"
  bool exists = false;
};

// `<dir of libdspp>/dspp/plugins`: the build tree and install tree share this layout.
std::string builtin_plugin_dir();

// Every candidate folder in search order, missing ones included and nothing deduplicated.
// PluginRegistry::search_path() is this list, filtered and canonicalised.
std::vector<PluginFolder> plugin_search_candidates(const std::vector<std::string>& config_paths);

}  // namespace dspp
