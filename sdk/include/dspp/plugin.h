// Header-only helpers for plugin authors: turn C++ exceptions into statuses at the boundary, read
// the config view with defaults, and declare the library's entry symbol in one line.
//
//   class MyAdam final : public dspp::Optimizer { ... };
//   static const dspp_option_desc kOptions[] = {{"lr", DSPP_VALUE_FLOAT, "0.001", "Step size.",
//   ...}}; static const dspp_plugin_desc kPlugins[] = {
//       dspp::plugin::describe<dspp::Optimizer, MyAdam>(DSPP_KIND_OPTIMIZER, "myadam", "1.0.0",
//                                                       "Adam, my way.", kOptions)};
//   DSPP_PLUGIN_LIBRARY("myadam", kPlugins)
//
// Nothing here needs libdspp: a plugin links only what it uses itself.
#ifndef DSPP_PLUGIN_H
#define DSPP_PLUGIN_H

#include <dspp/abi.h>

#include <cstddef>
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

// The build id defaults to the compiler and its version; builds may pass their own (a commit).
#ifndef DSPP_PLUGIN_BUILD_ID
#if defined(__clang__)
#define DSPP_PLUGIN_BUILD_ID "clang-" __clang_version__
#elif defined(__GNUC__)
#define DSPP_PLUGIN_BUILD_ID "gcc-" __VERSION__
#else
#define DSPP_PLUGIN_BUILD_ID "unknown"
#endif
#endif

namespace dspp::plugin {

// Thrown inside a plugin to fail with a specific status code; guard() maps it.
class StatusError : public std::runtime_error {
 public:
  StatusError(dspp_status code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  dspp_status code() const noexcept { return code_; }

 private:
  dspp_status code_;
};

// Passes a failed host or plugin call's status up unchanged, keeping the message it set.
inline void pass_through(dspp_status status) {
  if (status != DSPP_OK) throw StatusError(status, "");
}

// Runs fn and converts any exception into a status whose message the host copies.
template <class Fn>
dspp_status guard(const dspp_host_api* host, Fn&& fn) noexcept {
  auto fail = [host](dspp_status code, const char* msg) noexcept -> dspp_status {
    if (host && host->set_error) return host->set_error(host->self, code, msg);
    return code;
  };
  try {
    if constexpr (std::is_same_v<decltype(fn()), dspp_status>) {
      return fn();
    } else {
      fn();
      return DSPP_OK;
    }
  } catch (const StatusError& e) {
    // An empty message: a callee's failure passed through; its message is already set.
    if (e.what()[0] == '\0') return e.code();
    return fail(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return fail(DSPP_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::invalid_argument& e) {
    return fail(DSPP_ERR_INVALID_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    return fail(DSPP_ERR_RUNTIME, e.what());
  } catch (...) {
    return fail(DSPP_ERR_INTERNAL, "unknown exception");
  }
}

// The host's compute device (a dspp::Device*, kinds/device.h) or NULL: computing on the CPU, or a
// host older than ABI 1.2.
inline void* host_device(const dspp_host_api* host) noexcept {
  if (!host || host->struct_size < offsetof(dspp_host_api, device) + sizeof(host->device) ||
      !host->device) {
    return nullptr;
  }
  return host->device(host->self);
}

// Tags the device memory the calling thread allocates while this lives with `category`
// (DSPP_MEM_*, kinds/device.h), then restores the previous category. A no-op with a host older
// than ABI 1.3 or one computing on the CPU.
class MemoryCategory {
 public:
  MemoryCategory(const dspp_host_api* host, int32_t category) noexcept
      : host_(host &&
                      host->struct_size >= offsetof(dspp_host_api, memory_category) +
                                               sizeof(host->memory_category) &&
                      host->memory_category
                  ? host
                  : nullptr) {
    if (host_) previous_ = host_->memory_category(host_->self, category);
  }
  ~MemoryCategory() {
    if (host_) host_->memory_category(host_->self, previous_);
  }
  MemoryCategory(const MemoryCategory&) = delete;
  MemoryCategory& operator=(const MemoryCategory&) = delete;

 private:
  const dspp_host_api* host_;
  int32_t previous_ = 0;
};

inline void log(const dspp_host_api* host, dspp_log_level level, const char* plugin,
                const std::string& msg) noexcept {
  if (host && host->log) host->log(host->self, level, plugin, msg.c_str());
}

// Typed reads of a dspp_config_view with defaults. Absent keys give the default; a present key of
// the wrong type is an error naming the key (the registry has normally caught it already).
class ConfigReader {
 public:
  explicit ConfigReader(const dspp_config_view* view) : v_(view) {}

  bool has(const char* key) const { return v_ && v_->has(v_->self, key) != 0; }

  bool get_bool(const char* key, bool dflt) const {
    if (!has(key)) return dflt;
    int32_t out = 0;
    if (v_->get_bool(v_->self, key, &out) != DSPP_OK) bad(key, "a boolean");
    return out != 0;
  }
  int64_t get_int(const char* key, int64_t dflt) const {
    if (!has(key)) return dflt;
    int64_t out = 0;
    if (v_->get_int(v_->self, key, &out) != DSPP_OK) bad(key, "an integer");
    return out;
  }
  double get_double(const char* key, double dflt) const {
    if (!has(key)) return dflt;
    double out = 0;
    if (v_->get_double(v_->self, key, &out) != DSPP_OK) bad(key, "a number");
    return out;
  }
  std::string get_string(const char* key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    return copy(v_->get_string, key, "a string");
  }
  // Compact JSON of any value (arrays such as betas); "" when absent.
  std::string get_json(const char* key) const {
    if (!has(key)) return {};
    return copy(v_->get_json, key, "a JSON value");
  }

 private:
  using CopyFn = dspp_status (*)(void*, const char*, char*, size_t, size_t*);
  std::string copy(CopyFn fn, const char* key, const char* what) const {
    size_t len = 0;
    if (fn(v_->self, key, nullptr, 0, &len) != DSPP_OK) bad(key, what);
    std::string s(len, '\0');
    if (fn(v_->self, key, s.data(), len + 1, &len) != DSPP_OK) bad(key, what);
    return s;
  }
  [[noreturn]] static void bad(const char* key, const char* what) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                      std::string("config key '") + key + "' must be " + what);
  }
  const dspp_config_view* v_;
};

// Trampolines: create an Impl (constructed from (host, ConfigReader)) and hand it out as Iface*.
template <class Iface, class Impl>
dspp_status create_trampoline(const dspp_host_api* host, const dspp_config_view* config,
                              void** out) noexcept {
  if (!out) return DSPP_ERR_INVALID_ARGUMENT;
  *out = nullptr;
  return guard(host, [&] {
    Iface* obj = new Impl(host, ConfigReader(config));
    *out = static_cast<void*>(obj);
  });
}

// Deletes through Impl: the kind interfaces have protected, non-virtual destructors (objects die
// only through the descriptor's destroy()), so deleting through Iface* would not compile.
template <class Iface, class Impl>
void destroy_trampoline(void* object) noexcept {
  delete static_cast<Impl*>(static_cast<Iface*>(object));
}

template <class Iface, class Impl, size_t N>
constexpr dspp_plugin_desc describe(const char* kind, const char* name, const char* version,
                                    const char* description, const dspp_option_desc (&options)[N]) {
  return dspp_plugin_desc{sizeof(dspp_plugin_desc),
                          DSPP_ABI_MAJOR,
                          DSPP_ABI_MINOR,
                          kind,
                          name,
                          version,
                          DSPP_PLUGIN_BUILD_ID,
                          description,
                          options,
                          static_cast<uint32_t>(N),
                          &create_trampoline<Iface, Impl>,
                          &destroy_trampoline<Iface, Impl>};
}

template <class Iface, class Impl>
constexpr dspp_plugin_desc describe(const char* kind, const char* name, const char* version,
                                    const char* description) {
  return dspp_plugin_desc{sizeof(dspp_plugin_desc),
                          DSPP_ABI_MAJOR,
                          DSPP_ABI_MINOR,
                          kind,
                          name,
                          version,
                          DSPP_PLUGIN_BUILD_ID,
                          description,
                          nullptr,
                          0,
                          &create_trampoline<Iface, Impl>,
                          &destroy_trampoline<Iface, Impl>};
}

}  // namespace dspp::plugin

// Defines the library's one exported symbol. `plugins` is a C array of dspp_plugin_desc.
#define DSPP_PLUGIN_LIBRARY(library_name, plugins)                            \
  extern "C" DSPP_EXPORT const dspp_plugin_library* DSPP_PLUGIN_ENTRY(void) { \
    static const dspp_plugin_library lib = {                                  \
        sizeof(dspp_plugin_library),                                          \
        DSPP_ABI_MAJOR,                                                       \
        DSPP_ABI_MINOR,                                                       \
        library_name,                                                         \
        plugins,                                                              \
        static_cast<uint32_t>(sizeof(plugins) / sizeof(plugins[0]))};         \
    return &lib;                                                              \
  }

#endif  // DSPP_PLUGIN_H
