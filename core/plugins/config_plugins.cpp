// The one way a config and its plugins are resolved together (initialize(), ds-config).
#include <dspp/plugins.h>

#include <rapidjson/document.h>

#include <string>
#include <vector>

namespace dspp {

void use_plugin_options(LoadOptions& opts, const PluginRegistry& registry) {
  const PluginRegistry* reg = &registry;
  opts.plugin_options = [reg](std::string_view kind,
                              std::string_view name) -> const std::vector<KeySpec>* {
    const PluginInfo* info = reg->find(kind, name);
    return info ? &info->options : nullptr;
  };
}

Config load_config_with_plugins(std::string_view source, LoadOptions opts,
                                PluginRegistry& registry) {
  // First read: only to find plugin_paths (warnings come with the second read).
  LoadOptions quiet = opts;
  quiet.on_warning = [](const ConfigMessage&) {};
  quiet.plugin_options = nullptr;
  Config first = Config::load(source, quiet);
  std::vector<std::string> extra;
  if (first.has("plugin_paths")) {
    rapidjson::Document doc;
    doc.Parse(first.get_json("plugin_paths").c_str());
    for (const auto& v : doc.GetArray()) {
      if (!v.IsString()) {
        throw Error(Errc::kConfig, "plugin_paths in " + first.origin() +
                                       ": every entry must be a folder path string");
      }
      extra.emplace_back(v.GetString());
    }
  }
  registry.scan(PluginRegistry::search_path(extra));
  use_plugin_options(opts, registry);
  Config cfg = Config::load(source, opts);
  // A plugin the config names must exist: the error lists what is available of that kind.
  if (cfg.has("optimizer.type"))
    registry.require(DSPP_KIND_OPTIMIZER, cfg.get_string("optimizer.type"));
  if (cfg.has("scheduler.type"))
    registry.require(DSPP_KIND_SCHEDULER, cfg.get_string("scheduler.type"));
  return cfg;
}

}  // namespace dspp
