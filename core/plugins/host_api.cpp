// The services libdspp hands to every plugin: logging into the core logger, a per-thread error
// message the host owns, and aligned host memory.
#include "plugins/host_api.h"

#include <dspp/error.h>
#include <dspp/plugins.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "device/compute_device.h"
#include "log/log.h"
#include "tensor/host_memory.h"

namespace dspp {
namespace {

// One message per thread: a plugin reports it just before returning its status, and the host
// reads it on the same thread right after.
thread_local std::string t_plugin_error;

constexpr size_t kHostAlignment = 64;

void host_log(void* /*self*/, int32_t level, const char* plugin, const char* message) {
  log::Level l = log::Level::kInfo;
  switch (level) {
    case DSPP_LOG_DEBUG:
      l = log::Level::kDebug;
      break;
    case DSPP_LOG_INFO:
      l = log::Level::kInfo;
      break;
    case DSPP_LOG_WARNING:
      l = log::Level::kWarning;
      break;
    default:
      l = log::Level::kError;
      break;
  }
  log::write(l, plugin ? plugin : "plugin", message ? message : "");
}

dspp_status host_set_error(void* /*self*/, dspp_status code, const char* message) {
  // Called from noexcept plugin code: a failed copy must not throw across the boundary.
  try {
    t_plugin_error = message ? message : "";
  } catch (...) {
    t_plugin_error.clear();
  }
  return code;
}

// Each block starts with a header that records its size, so host_free can uncharge it.
void* host_alloc(void* /*self*/, size_t bytes) {
  // aligned_alloc wants a size that is a multiple of the alignment; 0 still gets a real block so
  // that NULL always means out of memory.
  size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment + kHostAlignment;
  if (rounded < bytes) return nullptr;  // overflow
  if (!host_memory::charge(rounded)) return nullptr;
  auto* base = static_cast<char*>(std::aligned_alloc(kHostAlignment, rounded));
  if (base == nullptr) {
    host_memory::uncharge(rounded);
    return nullptr;
  }
  std::memcpy(base, &rounded, sizeof rounded);
  return base + kHostAlignment;
}

void host_free(void* /*self*/, void* ptr) {
  if (ptr == nullptr) return;
  char* base = static_cast<char*>(ptr) - kHostAlignment;
  size_t rounded = 0;
  std::memcpy(&rounded, base, sizeof rounded);
  std::free(base);
  host_memory::uncharge(rounded);
}

dspp_host_api make_host_api() {
  dspp_host_api api{};
  api.struct_size = sizeof(dspp_host_api);
  api.abi_major = DSPP_ABI_MAJOR;
  api.abi_minor = DSPP_ABI_MINOR;
  api.self = nullptr;
  api.log = &host_log;
  api.set_error = &host_set_error;
  api.alloc_host = &host_alloc;
  api.free_host = &host_free;
  api.rank = 0;
  api.world_size = 1;
  api.device = &device::host_device_callback;
  api.memory_category = &device::host_memory_category_callback;
  return api;
}

dspp_host_api& mutable_host_api() {
  static dspp_host_api api = make_host_api();
  return api;
}

// The empty config view: nothing is present, so every getter answers "absent".
int32_t empty_has(void*, const char*) {
  return 0;
}
dspp_status empty_get_bool(void*, const char*, int32_t*) {
  return DSPP_ERR_INVALID_ARGUMENT;
}
dspp_status empty_get_int(void*, const char*, int64_t*) {
  return DSPP_ERR_INVALID_ARGUMENT;
}
dspp_status empty_get_double(void*, const char*, double*) {
  return DSPP_ERR_INVALID_ARGUMENT;
}
dspp_status empty_get_text(void*, const char*, char*, size_t, size_t*) {
  return DSPP_ERR_INVALID_ARGUMENT;
}

}  // namespace

const dspp_host_api* host_api() {
  return &mutable_host_api();
}

void set_host_rank(int rank, int world_size) {
  dspp_host_api& api = mutable_host_api();
  api.rank = rank;
  api.world_size = world_size;
}

void clear_plugin_error() {
  t_plugin_error.clear();
}

const std::string& last_plugin_error() {
  return t_plugin_error;
}

const dspp_config_view* empty_config_view() {
  static const dspp_config_view view = {sizeof(dspp_config_view), nullptr,        &empty_has,
                                        &empty_get_bool,          &empty_get_int, &empty_get_double,
                                        &empty_get_text,          &empty_get_text};
  return &view;
}

}  // namespace dspp
