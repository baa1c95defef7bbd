// The plugin registry: loads plugin libraries with Boost.DLL, checks every table the plugin hands
// over before trusting any of it, and creates objects that keep their library loaded.
#include <dlfcn.h>

#include <dspp/plugins.h>
#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "log/log.h"
#include "plugins/host_api.h"
#include "plugins/options.h"

namespace fs = std::filesystem;

namespace dspp {
namespace {

constexpr std::string_view kKinds[] = {
    DSPP_KIND_OPTIMIZER, DSPP_KIND_ZERO,    DSPP_KIND_PIPELINE_SCHEDULE,
    DSPP_KIND_TP,        DSPP_KIND_FLAGGER, DSPP_KIND_SCHEDULER,
    DSPP_KIND_COMM,      DSPP_KIND_DEVICE};

// The sizes of the ABI 1.0 structs. When a minor appends fields, these stay at the 1.0 sizes (the
// offset of the first appended field) so that older plugins still load.
constexpr uint32_t kLibrarySize_1_0 = sizeof(dspp_plugin_library);
constexpr uint32_t kDescSize_1_0 = sizeof(dspp_plugin_desc);

// Other majors we can name when a library lacks our entry symbol.
constexpr int kProbeMajors[] = {0, 2, 3, 4, 5, 6, 7, 8, 9};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool known_kind(std::string_view kind) {
  return std::find(std::begin(kKinds), std::end(kKinds), kind) != std::end(kKinds);
}

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& s : items) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string str(const char* s) {
  return s ? s : "";
}

std::string abi_text(uint32_t major, uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

[[noreturn]] void refuse(const std::string& file, const std::string& problem) {
  throw Error(Errc::kPlugin, file + ": " + problem);
}

// One library, open for as long as a registry entry or a plugin object refers to it.
struct LoadedLibrary {
  boost::dll::shared_library lib;
  std::string file;
};

struct Entry {
  PluginInfo info;
  // A copy of the plugin's descriptor; fields past the plugin's struct_size are zero.
  dspp_plugin_desc desc{};
  std::shared_ptr<LoadedLibrary> library;
};

// Deleter of every object handed out: destroys it through its own plugin and only then lets go of
// the library, so the code of `destroy` is still mapped when it runs.
struct PluginObjectDeleter {
  void (*destroy)(void*);
  std::shared_ptr<LoadedLibrary> library;
  void operator()(void* object) const noexcept { destroy(object); }
};

// Whether the library itself defines `symbol`. dlsym on a handle also searches the library's
// dependencies, so a library linked against another plugin would otherwise borrow its entry.
bool defines(const LoadedLibrary& l, const std::string& symbol) {
  void* addr = dlsym(l.lib.native(), symbol.c_str());
  Dl_info info{};
  if (!addr || dladdr(addr, &info) == 0 || !info.dli_fname) return false;
  std::error_code ec;
  return fs::canonical(info.dli_fname, ec).string() == l.file;
}

std::string plugin_label(const dspp_plugin_desc& d, uint32_t index) {
  if (d.kind && d.name) return std::string(d.kind) + "/" + d.name;
  return "descriptor #" + std::to_string(index);
}

// The checks on one descriptor; the message names the plugin, the caller adds the file.
void check_descriptor(const std::string& file, const dspp_plugin_desc& d, uint32_t index) {
  const std::string label = plugin_label(d, index);
  if (d.abi_major != DSPP_ABI_MAJOR) {
    refuse(file, "plugin " + label + " is built for dspp plugin ABI major " +
                     std::to_string(d.abi_major) + ", this dspp speaks ABI major " +
                     std::to_string(DSPP_ABI_MAJOR) + "; rebuild it against this dspp's SDK");
  }
  if (d.abi_minor > DSPP_ABI_MINOR) {
    refuse(file, "plugin " + label + " needs dspp plugin ABI " +
                     abi_text(d.abi_major, d.abi_minor) + ", newer than this dspp's ABI " +
                     abi_text(DSPP_ABI_MAJOR, DSPP_ABI_MINOR) +
                     "; upgrade dspp or rebuild the plugin against this dspp's SDK");
  }
  if (!d.kind || !d.name) refuse(file, label + " has no kind or no name");
  // A kind whose interface gained methods within the major: older plugins lack those vtable
  // slots, so they are refused rather than called past their end.
  if (std::string_view(d.kind) == DSPP_KIND_ZERO && d.abi_minor < 1) {
    refuse(file, "plugin " + label + " is built for dspp plugin ABI " +
                     abi_text(d.abi_major, d.abi_minor) +
                     "; zero plugins need ABI 1.1 (the kind gained parameter views, write_back, "
                     "shard and after_load); rebuild it against this dspp's SDK");
  }
  if (!known_kind(d.kind)) {
    std::vector<std::string> kinds(std::begin(kKinds), std::end(kKinds));
    refuse(file,
           "plugin " + label + " has unknown kind '" + d.kind + "'; kinds: " + join(kinds, ", "));
  }
  std::string_view name(d.name);
  if (name.empty() || name.find_first_of("/ \t\n") != std::string_view::npos)
    refuse(file, "plugin " + label + " has an invalid name (empty, or with '/' or spaces)");
  if (!d.create || !d.destroy)
    refuse(file, "plugin " + label + " has no create or destroy function");
  if (d.num_options > 0 && !d.options)
    refuse(file, "plugin " + label + " declares " + std::to_string(d.num_options) +
                     " options but no option table");
  for (uint32_t i = 0; i < d.num_options; ++i) {
    const dspp_option_desc& o = d.options[i];
    if (!o.key || !*o.key)
      refuse(file, "plugin " + label + " option #" + std::to_string(i) + " has no key");
    if (o.type < DSPP_VALUE_BOOL || o.type > DSPP_VALUE_ANY)
      refuse(file, "plugin " + label + " option '" + o.key + "' has unknown type " +
                       std::to_string(o.type));
  }
}

}  // namespace

struct PluginRegistry::Impl {
  std::map<std::string, std::shared_ptr<LoadedLibrary>> libraries;  // canonical file -> library
  std::map<std::string, Entry, std::less<>> plugins;  // "kind/name", lower-case -> entry
  std::vector<std::string> searched;  // folders scanned and files loaded, for messages
  // Libraries a scan found but the loader could not open (a missing dependency such as
  // libnccl.so.2 on a machine without NCCL): skipped with a warning, named when a plugin is
  // missing.
  std::vector<std::string> unloadable;

  const Entry* lookup(std::string_view kind, std::string_view name) const {
    auto it = plugins.find(lower(kind) + "/" + lower(name));
    return it == plugins.end() ? nullptr : &it->second;
  }

  // `scanning`: a library the loader cannot open is skipped (and remembered) instead of refused.
  void load(const std::string& path, bool scanning = false);
};

void PluginRegistry::Impl::load(const std::string& path, bool scanning) {
  std::error_code fs_ec;
  fs::path canon = fs::canonical(fs::absolute(path, fs_ec), fs_ec);
  if (fs_ec) refuse(path, "cannot load plugin library: " + fs_ec.message());
  const std::string file = canon.string();
  // The same file twice (a folder listed twice, a symlink) is already registered: nothing to do.
  if (libraries.count(file)) return;

  auto loaded = std::make_shared<LoadedLibrary>();
  loaded->file = file;
  // An exact path, never decorated or searched for (NCCL #1732: a path must not be mangled).
  // RTLD_NOW: a missing symbol fails here, not in the middle of a run.
  std::error_code ec;
  loaded->lib.load(canon, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec) {
    // Boost.DLL keeps only a generic code; the loader's own message says what was missing.
    const char* why = dlerror();
    const std::string problem =
        std::string("cannot load plugin library: ") + (why ? why : ec.message());
    if (scanning) {
      // One plugin's missing dependency (NCCL, a CUDA driver) must not stop every run on a
      // machine that does not need it: skip it, say so, and name it if its plugin is asked for.
      log::warn("plugins", file + ": " + problem + " (skipped; its plugins are unavailable)");
      unloadable.push_back(file + " (" + problem + ")");
      return;
    }
    refuse(file, problem);
  }

  if (!defines(*loaded, DSPP_PLUGIN_ENTRY_SYMBOL)) {
    for (int major : kProbeMajors) {
      std::string other = "dspp_plugin_entry_v" + std::to_string(major);
      if (defines(*loaded, other)) {
        refuse(file, "built for dspp plugin ABI major " + std::to_string(major) + " (exports " +
                         other + "), this dspp speaks ABI major " + std::to_string(DSPP_ABI_MAJOR) +
                         " (looks for " + DSPP_PLUGIN_ENTRY_SYMBOL +
                         "); rebuild it against this dspp's SDK");
      }
    }
    refuse(file, std::string("no entry symbol ") + DSPP_PLUGIN_ENTRY_SYMBOL +
                     " (not a dspp plugin, or built without DSPP_PLUGIN_LIBRARY)");
  }
  auto& entry = loaded->lib.get<const dspp_plugin_library*()>(DSPP_PLUGIN_ENTRY_SYMBOL);
  const dspp_plugin_library* table = entry();
  if (!table) refuse(file, DSPP_PLUGIN_ENTRY_SYMBOL " returned no library table");
  if (table->abi_major != DSPP_ABI_MAJOR) {
    refuse(file, "library table says dspp plugin ABI major " + std::to_string(table->abi_major) +
                     ", this dspp speaks ABI major " + std::to_string(DSPP_ABI_MAJOR) +
                     "; rebuild it against this dspp's SDK");
  }
  if (table->abi_minor > DSPP_ABI_MINOR) {
    refuse(file, "built for dspp plugin ABI " + abi_text(table->abi_major, table->abi_minor) +
                     ", newer than this dspp's ABI " + abi_text(DSPP_ABI_MAJOR, DSPP_ABI_MINOR) +
                     "; upgrade dspp or rebuild the plugin against this dspp's SDK");
  }
  if (table->struct_size < kLibrarySize_1_0) {
    refuse(file, "library table has struct_size " + std::to_string(table->struct_size) +
                     ", smaller than ABI 1.0's " + std::to_string(kLibrarySize_1_0));
  }
  if (table->num_plugins > 0 && !table->plugins) refuse(file, "library table lists no plugins");

  // Descriptors are an array of the plugin's own struct, so its struct_size is the stride.
  std::vector<Entry> found;
  std::set<std::string> keys;
  const char* base = reinterpret_cast<const char*>(table->plugins);
  const uint32_t stride = table->num_plugins > 0 ? table->plugins[0].struct_size : 0;
  for (uint32_t i = 0; i < table->num_plugins; ++i) {
    const auto* raw = reinterpret_cast<const dspp_plugin_desc*>(base + size_t{i} * stride);
    if (raw->struct_size < kDescSize_1_0 || raw->struct_size != stride) {
      refuse(file, "descriptor #" + std::to_string(i) + " has struct_size " +
                       std::to_string(raw->struct_size) + " (ABI 1.0 needs at least " +
                       std::to_string(kDescSize_1_0) + ", all descriptors the same)");
    }
    Entry e;
    std::memcpy(&e.desc, raw, std::min<size_t>(raw->struct_size, sizeof(dspp_plugin_desc)));
    check_descriptor(file, e.desc, i);

    PluginInfo& info = e.info;
    info.kind = e.desc.kind;
    info.name = lower(e.desc.name);
    info.version = str(e.desc.version);
    info.build_id = str(e.desc.build_id);
    info.description = str(e.desc.description);
    info.file = file;
    info.library_name = str(table->library_name);
    info.abi_major = e.desc.abi_major;
    info.abi_minor = e.desc.abi_minor;
    const std::string key = info.kind + "/" + info.name;
    for (uint32_t k = 0; k < e.desc.num_options; ++k)
      info.options.push_back(option_to_key_spec(e.desc.options[k], key));

    if (!keys.insert(key).second) refuse(file, "provides plugin " + key + " twice");
    if (const Entry* other = lookup(info.kind, info.name)) {
      throw Error(Errc::kPlugin, "duplicate plugin " + key + ": provided by " + file +
                                     " and already by " + other->info.file +
                                     "; remove one of them from the plugin path");
    }
    e.library = loaded;
    found.push_back(std::move(e));
  }

  // Everything checked: register the whole library at once, or nothing of it.
  for (Entry& e : found) {
    std::string key = e.info.kind + "/" + e.info.name;
    log::debug("plugins", "registered " + key + " " + e.info.version + " from " + file);
    plugins.emplace(std::move(key), std::move(e));
  }
  if (found.empty()) log::debug("plugins", file + " provides no plugins");
  libraries.emplace(file, std::move(loaded));
}

PluginRegistry::PluginRegistry() : impl_(std::make_unique<Impl>()) {}

// Drops the registry's references only: a library stays mapped while objects made from it live.
PluginRegistry::~PluginRegistry() = default;

void PluginRegistry::scan(const std::vector<std::string>& folders) {
  std::vector<std::string> errors;
  for (const std::string& folder : folders) {
    impl_->searched.push_back(folder);
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) {
      log::debug("plugins", "skipping missing plugin folder " + folder);
      continue;
    }
    std::vector<std::string> files;
    for (const fs::directory_entry& de : fs::directory_iterator(folder, ec)) {
      std::error_code type_ec;
      if (de.path().extension() == ".so" && de.is_regular_file(type_ec))
        files.push_back(de.path().string());
    }
    if (ec) {
      errors.push_back(folder + ": cannot list plugin folder: " + ec.message());
      continue;
    }
    std::sort(files.begin(), files.end());  // same order on every rank and every run
    for (const std::string& f : files) {
      try {
        impl_->load(f, /*scanning=*/true);
      } catch (const Error& e) {
        errors.push_back(e.what());
      }
    }
  }
  // A bad library does not hide the good ones: they stay registered, and all refusals are
  // reported together.
  if (errors.size() == 1) throw Error(Errc::kPlugin, errors[0]);
  if (errors.size() > 1) {
    throw Error(Errc::kPlugin, std::to_string(errors.size()) +
                                   " plugin libraries were refused:\n  " + join(errors, "\n  "));
  }
}

void PluginRegistry::load_library(const std::string& path) {
  impl_->searched.push_back(path);
  impl_->load(path);
}

const PluginInfo* PluginRegistry::find(std::string_view kind, std::string_view name) const {
  const Entry* e = impl_->lookup(kind, name);
  return e ? &e->info : nullptr;
}

const PluginInfo& PluginRegistry::require(std::string_view kind, std::string_view name) const {
  if (const PluginInfo* info = find(kind, name)) return *info;
  const std::string k = lower(kind);
  if (!known_kind(k)) {
    std::vector<std::string> kinds(std::begin(kKinds), std::end(kKinds));
    throw Error(Errc::kPlugin,
                "unknown plugin kind '" + std::string(kind) + "'; kinds: " + join(kinds, ", "));
  }
  std::vector<std::string> names;
  for (const PluginInfo* info : list(k)) names.push_back(info->name);
  std::string msg = "no " + k + " plugin named '" + std::string(name) + "'; available: ";
  msg += names.empty() ? std::string("none") : join(names, ", ");
  msg += " (searched: ";
  msg += impl_->searched.empty() ? std::string("no folders") : join(impl_->searched, ", ");
  msg += ")";
  if (!impl_->unloadable.empty()) {
    msg += "; libraries that could not be loaded: " + join(impl_->unloadable, "; ");
  }
  throw Error(Errc::kPlugin, msg);
}

std::vector<const PluginInfo*> PluginRegistry::list(std::string_view kind) const {
  const std::string k = lower(kind);
  std::vector<const PluginInfo*> out;
  for (const auto& [key, e] : impl_->plugins) {
    if (k.empty() || e.info.kind == k) out.push_back(&e.info);
  }
  return out;
}

std::string PluginRegistry::digest() const {
  std::vector<std::string> lines;
  for (const auto& [key, e] : impl_->plugins) {
    lines.push_back(key + " " + e.info.version + " " +
                    abi_text(e.info.abi_major, e.info.abi_minor) + " " + e.info.build_id);
  }
  std::sort(lines.begin(), lines.end());
  std::string text;
  for (const std::string& l : lines) text += l + "\n";
  // FNV-1a, 64 bit: short, stable across compilers and platforms, enough to spot a difference.
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return text + "fnv1a64 " + hex;
}

std::shared_ptr<void> PluginRegistry::create_raw(std::string_view kind, std::string_view name,
                                                 const dspp_config_view* config) const {
  const PluginInfo& info = require(kind, name);
  const Entry& e = *impl_->lookup(info.kind, info.name);
  const std::string label = info.kind + "/" + info.name;
  clear_plugin_error();
  void* object = nullptr;
  dspp_status status = e.desc.create(host_api(), config ? config : empty_config_view(), &object);
  check_plugin(status, "cannot create " + label + " (" + info.file + ")");
  if (!object) {
    throw Error(Errc::kPlugin,
                "cannot create " + label + " (" + info.file + "): create returned no object");
  }
  // If the control block cannot be allocated, shared_ptr calls the deleter itself.
  return std::shared_ptr<void>(object, PluginObjectDeleter{e.desc.destroy, e.library});
}

}  // namespace dspp
