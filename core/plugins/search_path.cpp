// The plugin search path: built-ins next to libdspp, config plugin_paths, DSPP_PLUGIN_PATH, then
// the install's plugin folder.
#include "plugins/search_path.h"

#include <dlfcn.h>

#include <dspp/plugins.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace fs = std::filesystem;

namespace dspp {
namespace {

bool is_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

void add(std::vector<PluginFolder>& out, std::string path, const char* origin) {
  if (path.empty()) return;
  bool exists = is_dir(path);
  out.push_back(PluginFolder{std::move(path), origin, exists});
}

}  // namespace

std::string builtin_plugin_dir() {
  // Ask the dynamic loader which file holds this code: that is libdspp (or the executable when
  // linked statically), wherever the build or the install put it.
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&builtin_plugin_dir), &info) == 0 || !info.dli_fname)
    return {};
  std::error_code ec;
  fs::path lib = fs::canonical(info.dli_fname, ec);
  if (ec) lib = fs::absolute(info.dli_fname, ec);
  return (lib.parent_path() / "dspp" / "plugins").string();
}

std::vector<PluginFolder> plugin_search_candidates(const std::vector<std::string>& config_paths) {
  std::vector<PluginFolder> out;
  add(out, builtin_plugin_dir(), "built-in");
  for (const std::string& p : config_paths) add(out, p, "plugin_paths");
  if (const char* env = std::getenv("DSPP_PLUGIN_PATH")) {
    std::string_view rest(env);
    while (!rest.empty()) {
      size_t colon = rest.find(':');
      add(out, std::string(rest.substr(0, colon)), "DSPP_PLUGIN_PATH");
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  add(out, DSPP_INSTALL_PLUGIN_DIR, "install");
  return out;
}

std::vector<std::string> PluginRegistry::search_path(const std::vector<std::string>& config_paths) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const PluginFolder& f : plugin_search_candidates(config_paths)) {
    if (!f.exists) continue;
    std::error_code ec;
    std::string canon = fs::canonical(f.path, ec).string();
    if (ec) continue;
    if (seen.insert(canon).second) out.push_back(canon);
  }
  return out;
}

}  // namespace dspp
