// dspp plugin ABI: the plain C structs that cross the boundary between libdspp (the host) and a
// plugin library. A plugin may be built by another compiler version than the host, so nothing here
// is a C++ standard-library type, and nothing here ever throws.
//
// A plugin library exports exactly one symbol, `dspp_plugin_entry_v<ABI major>` (see
// DSPP_PLUGIN_ENTRY_SYMBOL), returning a `dspp_plugin_library` table that lists one or more plugin
// descriptors. The host checks the ABI major (must equal), the ABI minor (the host accepts any
// minor
// <= its own; newer fields are appended at the end of structs and announced by `struct_size`).
//
// Objects made by a plugin cross as pointers to the abstract classes in <dspp/kinds/*.h>; their
// methods are all `noexcept` and return a `dspp_status`. A failing method reports its message
// through the host's `dspp_host_api::set_error`, which copies it into memory the host owns.
#ifndef DSPP_ABI_H
#define DSPP_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSPP_ABI_MAJOR 1
#define DSPP_ABI_MINOR 3

// The entry symbol carries the ABI major in its name, so a library built for another major is
// recognised as such (its symbol is simply not the one we look up) instead of being misread.
#define DSPP_PLUGIN_ENTRY_NAME_(major) dspp_plugin_entry_v##major
#define DSPP_PLUGIN_ENTRY_NAME(major) DSPP_PLUGIN_ENTRY_NAME_(major)
#define DSPP_PLUGIN_ENTRY DSPP_PLUGIN_ENTRY_NAME(DSPP_ABI_MAJOR)
#define DSPP_STR_(x) #x
#define DSPP_STR(x) DSPP_STR_(x)
#define DSPP_PLUGIN_ENTRY_SYMBOL "dspp_plugin_entry_v" DSPP_STR(DSPP_ABI_MAJOR)

#if defined(_WIN32)
#define DSPP_EXPORT __declspec(dllexport)
#else
#define DSPP_EXPORT __attribute__((visibility("default")))
#endif

// ---- status ------------------------------------------------------------------------------------
typedef int32_t dspp_status;
enum {
  DSPP_OK = 0,
  DSPP_ERR_INVALID_ARGUMENT = 1,  // bad input from the caller (shape, dtype, option value)
  DSPP_ERR_NOT_SUPPORTED = 2,     // a capability this plugin does not have
  DSPP_ERR_OUT_OF_MEMORY = 3,
  DSPP_ERR_RUNTIME = 4,   // anything else that went wrong inside the plugin
  DSPP_ERR_TIMEOUT = 5,   // a peer or device did not answer in time
  DSPP_ERR_COMM = 6,      // a collective or point-to-point transfer failed
  DSPP_ERR_INTERNAL = 7,  // a bug: an invariant of the plugin itself broke
};

// ---- tensors
// -------------------------------------------------------------------------------------
typedef enum dspp_dtype {
  DSPP_F32 = 0,
  DSPP_F16 = 1,
  DSPP_BF16 = 2,
  DSPP_I32 = 3,
  DSPP_I64 = 4,
  DSPP_U8 = 5,
  DSPP_F64 = 6,  // host-side references and reductions only
} dspp_dtype;

typedef enum dspp_device_type {
  DSPP_DEVICE_CPU = 0,
  DSPP_DEVICE_CUDA = 1,
} dspp_device_type;

typedef struct dspp_device {
  int32_t type;   // dspp_device_type
  int32_t index;  // device ordinal; 0 for the CPU
} dspp_device;

#define DSPP_MAX_DIMS 8

// A typed view of contiguous memory (row-major). The view never owns its memory.
typedef struct dspp_tensor_view {
  void* data;
  int32_t dtype;  // dspp_dtype
  int32_t ndim;
  int64_t shape[DSPP_MAX_DIMS];
  dspp_device device;
  void* stream;  // the device stream the memory is ordered on (cudaStream_t), NULL on the CPU
} dspp_tensor_view;

// ---- config view -------------------------------------------------------------------------------
// Read access to the resolved config, by dotted path ("optimizer.params.lr",
// "zero_optimization.stage"). Paths are relative to the plugin's own section when the host says so
// (see dspp_plugin_desc::config_section). Each getter returns DSPP_OK, or DSPP_ERR_INVALID_ARGUMENT
// when the key is absent or has another type (the host then has set no error message: absence is
// a normal answer, and the plugin decides what it means).
typedef struct dspp_config_view {
  uint32_t struct_size;
  void* self;
  int32_t (*has)(void* self, const char* path);
  dspp_status (*get_bool)(void* self, const char* path, int32_t* out);
  dspp_status (*get_int)(void* self, const char* path, int64_t* out);
  dspp_status (*get_double)(void* self, const char* path, double* out);
  // Copies a NUL-terminated string into buf (at most cap bytes) and stores the full length.
  dspp_status (*get_string)(void* self, const char* path, char* buf, size_t cap, size_t* len);
  // The value at path as compact JSON (for arrays and objects); same copy rules as get_string.
  dspp_status (*get_json)(void* self, const char* path, char* buf, size_t cap, size_t* len);
} dspp_config_view;

// ---- host services
// -------------------------------------------------------------------------------
typedef enum dspp_log_level {
  DSPP_LOG_DEBUG = 0,
  DSPP_LOG_INFO = 1,
  DSPP_LOG_WARNING = 2,
  DSPP_LOG_ERROR = 3,
} dspp_log_level;

// What the host hands to every plugin object it creates. Plugins never link libdspp: logging,
// error messages and memory all come through here.
typedef struct dspp_host_api {
  uint32_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  void* self;
  void (*log)(void* self, int32_t level, const char* plugin, const char* message);
  // Records the message for the calling thread and returns `code` so a plugin can write
  // `return host->set_error(host->self, DSPP_ERR_INVALID_ARGUMENT, "...");`. The host copies it.
  dspp_status (*set_error)(void* self, dspp_status code, const char* message);
  // Host memory from the core's allocator (aligned to at least 64 bytes); NULL when out of memory.
  void* (*alloc_host)(void* self, size_t bytes);
  void (*free_host)(void* self, void* ptr);
  int32_t rank;        // global rank of this process (0 when not distributed)
  int32_t world_size;  // 1 when not distributed
  // ABI 1.2: the accelerator this process computes on, a `dspp::Device*` (kinds/device.h), or
  // NULL when it computes on the CPU. Tensor views whose device.type is DSPP_DEVICE_CUDA live
  // in its memory; plugins run their work on its kernels. The host computes on the legacy default
  // stream (NULL) in this release, so plugins enqueue there too and stay in order with it.
  // Read it through dspp::plugin::host_device(), which checks struct_size.
  void* (*device)(void* self);
  // ABI 1.3: sets what the calling thread's later device allocations hold (DSPP_MEM_* of
  // kinds/device.h), for the caching allocator's per-category counters, and returns the previous
  // category. A no-op returning DSPP_MEM_OTHER (0) when the process computes on the CPU or its
  // device plugin predates ABI 1.3. Use dspp::plugin::MemoryCategory, which checks struct_size.
  int32_t (*memory_category)(void* self, int32_t category);
} dspp_host_api;

// ---- option schema
// ------------------------------------------------------------------------------- Each plugin
// publishes the options it reads; the config registry validates them (types, ranges, near-miss
// typos) and `docs/config.md` and `ds-plugins list --verbose` are generated from them.
typedef enum dspp_value_type {
  DSPP_VALUE_BOOL = 0,
  DSPP_VALUE_INT = 1,
  DSPP_VALUE_FLOAT = 2,  // any number
  DSPP_VALUE_STRING = 3,
  DSPP_VALUE_ARRAY = 4,
  DSPP_VALUE_OBJECT = 5,
  DSPP_VALUE_ANY = 6,
} dspp_value_type;

#define DSPP_OPTION_HAS_MIN 0x1u
#define DSPP_OPTION_HAS_MAX 0x2u
#define DSPP_OPTION_ALLOW_AUTO 0x4u  // "auto" is accepted and filled by the host

typedef struct dspp_option_desc {
  const char* key;           // relative to the plugin's config section, may be dotted
  int32_t type;              // dspp_value_type
  const char* default_json;  // the default as JSON text ("0.001", "[0.9, 0.999]", "null")
  const char* doc;           // one sentence
  uint32_t flags;            // DSPP_OPTION_*
  double min_value;
  double max_value;
  const char* choices;  // for strings: "a|b|c" (compared case-insensitively), else NULL
} dspp_option_desc;

// ---- plugin descriptors
// ------------------------------------------------------------------------------ Kinds are small
// and separate; the strings are the folder names under plugins/.
#define DSPP_KIND_OPTIMIZER "optimizer"
#define DSPP_KIND_ZERO "zero"
#define DSPP_KIND_PIPELINE_SCHEDULE "pipeline_schedule"
#define DSPP_KIND_TP "tp"
#define DSPP_KIND_FLAGGER "flagger"
#define DSPP_KIND_SCHEDULER "scheduler"
#define DSPP_KIND_COMM "comm"
#define DSPP_KIND_DEVICE "device"

// `create` makes one object of the kind's interface (e.g. dspp::Optimizer*). `config` views the
// plugin's own section (optimizer.params for an optimizer) and is valid only during the call.
typedef struct dspp_plugin_desc {
  uint32_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  const char* kind;      // one of DSPP_KIND_*
  const char* name;      // lower-case config name, e.g. "adamw"; matched case-insensitively
  const char* version;   // the plugin's own version, e.g. "1.0.0"
  const char* build_id;  // identifies the build (compiler, flags, commit); part of the rank digest
  const char* description;
  const dspp_option_desc* options;
  uint32_t num_options;
  dspp_status (*create)(const dspp_host_api* host, const dspp_config_view* config, void** out);
  void (*destroy)(void* object);
} dspp_plugin_desc;

typedef struct dspp_plugin_library {
  uint32_t struct_size;
  uint32_t abi_major;
  uint32_t abi_minor;
  const char* library_name;
  const dspp_plugin_desc* plugins;
  uint32_t num_plugins;
} dspp_plugin_library;

typedef const dspp_plugin_library* (*dspp_plugin_entry_fn)(void);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // DSPP_ABI_H
