// The plugin registry: finds plugin libraries, checks their ABI, and creates objects by
// (kind, name) from config strings. Every object keeps its library loaded; libraries are never
// unloaded while the registry or any object lives.
#ifndef DSPP_PLUGINS_H
#define DSPP_PLUGINS_H

#include <dspp/abi.h>
#include <dspp/config.h>
#include <dspp/error.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dspp {

struct PluginInfo {
  std::string kind, name, version, build_id, description;
  std::string file;          // absolute path of the library
  std::string library_name;  // dspp_plugin_library::library_name
  uint32_t abi_major = 0, abi_minor = 0;
  std::vector<KeySpec> options;  // paths relative to the plugin's section
};

class PluginRegistry {
 public:
  // Folders in search order: built-ins (next to libdspp), `config_paths` (plugin_paths in the
  // config), DSPP_PLUGIN_PATH (colon-separated), the install's plugin folder. Missing folders are
  // skipped; a folder given twice is scanned once.
  static std::vector<std::string> search_path(const std::vector<std::string>& config_paths = {});

  PluginRegistry();
  ~PluginRegistry();
  PluginRegistry(const PluginRegistry&) = delete;
  PluginRegistry& operator=(const PluginRegistry&) = delete;

  // Loads every *.so in the folders. Throws Error(kPlugin) naming the file on a library that does
  // not load, lacks the entry symbol, has another ABI major, or repeats a (kind, name).
  void scan(const std::vector<std::string>& folders);
  // Loads one library by path (a name given as a path is used as is).
  void load_library(const std::string& path);

  // Case-insensitive; "AdamW" finds optimizer/adamw. Null when absent.
  const PluginInfo* find(std::string_view kind, std::string_view name) const;
  // Like find, but throws Error(kPlugin) listing the available names of that kind.
  const PluginInfo& require(std::string_view kind, std::string_view name) const;
  std::vector<const PluginInfo*> list(std::string_view kind = {}) const;
  // One line per plugin (kind, name, version, build id), sorted, hashed: equal on all ranks.
  std::string digest() const;

  // Creates an object of the plugin's interface type T (dspp::Optimizer, dspp::Scheduler, ...).
  // `config` views the plugin's section. The returned pointer keeps the library loaded.
  template <class T>
  std::shared_ptr<T> create(std::string_view kind, std::string_view name,
                            const dspp_config_view* config) const {
    return std::static_pointer_cast<T>(create_raw(kind, name, config));
  }

  struct Impl;

 private:
  std::shared_ptr<void> create_raw(std::string_view kind, std::string_view name,
                                   const dspp_config_view* config) const;
  std::unique_ptr<Impl> impl_;
};

// Loads a config as initialize() does: reads its `plugin_paths`, scans the search path into
// `registry`, then resolves the config validating plugin sections (optimizer.params,
// scheduler.params) against the named plugins' option schemas. `source` is a path, JSON text or
// base64 JSON.
Config load_config_with_plugins(std::string_view source, LoadOptions opts,
                                PluginRegistry& registry);
// Validates plugin sections with `registry`'s option schemas (sets opts.plugin_options).
void use_plugin_options(LoadOptions& opts, const PluginRegistry& registry);

// The host services handed to plugins (logger, thread-local error, aligned host memory).
const dspp_host_api* host_api();

}  // namespace dspp

#endif  // DSPP_PLUGINS_H
