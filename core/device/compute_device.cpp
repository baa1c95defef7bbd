// The process's compute device: the device/cuda plugin object for the GPU LOCAL_RANK names, its
// caching allocator installed for CUDA tensors, and the plain copies Tensor needs. libdspp links
// no CUDA library: everything goes through the plugin, found on the plugin search path.
#include <dspp/device.h>
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>
#include <dspp/tensor.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "device/compute_device.h"
#include "log/log.h"
#include "plugins/host_api.h"

namespace dspp {

static_assert(static_cast<int>(MemoryCategory::kOther) == DSPP_MEM_OTHER &&
                  static_cast<int>(MemoryCategory::kParameters) == DSPP_MEM_PARAMETERS &&
                  static_cast<int>(MemoryCategory::kGradients) == DSPP_MEM_GRADIENTS &&
                  static_cast<int>(MemoryCategory::kOptimizerState) == DSPP_MEM_OPTIMIZER_STATE &&
                  static_cast<int>(MemoryCategory::kActivations) == DSPP_MEM_ACTIVATIONS &&
                  static_cast<int>(MemoryCategory::kCommBuffers) == DSPP_MEM_COMM_BUFFERS &&
                  kMemoryCategories == DSPP_MEM_CATEGORIES,
              "<dspp/device.h>'s MemoryCategory mirrors DSPP_MEM_*");

namespace {

// Tensors on the GPU get their memory from the device plugin's caching allocator, in the order
// of the legacy default stream (where every kernel of the layers and plugins runs).
class DeviceAllocator final : public Allocator {
 public:
  explicit DeviceAllocator(Device* d) : device_(d) {}
  void* allocate(size_t bytes, dspp_device) override {
    void* p = nullptr;
    check_plugin(device_->alloc(bytes, nullptr, &p), "device/cuda alloc");
    return p;
  }
  void deallocate(void* ptr, size_t, dspp_device) noexcept override {
    if (ptr) device_->free(ptr, nullptr);
  }

 private:
  Device* device_;
};

struct State {
  std::mutex mu;
  std::shared_ptr<PluginRegistry> registry;
  std::shared_ptr<Device> device;
  DeviceKernels* kernels = nullptr;
  std::unique_ptr<DeviceAllocator> allocator;
  dspp_device current{DSPP_DEVICE_CPU, 0};
  bool categories = false;  // the plugin has Device::set_memory_category (ABI 1.3)
};

State& state() {
  static State* s = new State();  // never destroyed: tensors may outlive static destructors
  return *s;
}

int local_rank() {
  const char* v = std::getenv("LOCAL_RANK");
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long r = std::strtol(v, &end, 10);
  if (*end != '\0' || r < 0) {
    throw Error(Errc::kInvalidArgument,
                std::string("LOCAL_RANK must be a non-negative integer, got '") + v + "'");
  }
  return static_cast<int>(r);
}

// Loads the plugin; null (and a reason) when it is missing or sees no GPU.
std::shared_ptr<Device> load_cuda(std::shared_ptr<PluginRegistry>& reg, std::string* why,
                                  uint32_t* abi_minor) {
  reg = std::make_shared<PluginRegistry>();
  reg->scan(PluginRegistry::search_path());
  const PluginInfo* info = reg->find(DSPP_KIND_DEVICE, "cuda");
  if (!info) {
    *why = "no device/cuda plugin on the plugin search path (built without CUDA?)";
    return nullptr;
  }
  if (info->abi_minor < 1) {
    *why = "the device/cuda plugin " + info->file + " is built for ABI 1." +
           std::to_string(info->abi_minor) + " and has no layer kernels (needs 1.1)";
    return nullptr;
  }
  *abi_minor = info->abi_minor;
  auto dev = reg->create<Device>(DSPP_KIND_DEVICE, "cuda", empty_config_view());
  if (dev->count() <= 0) {
    *why = "the device/cuda plugin sees no GPU (no driver, or CUDA_VISIBLE_DEVICES is empty)";
    return nullptr;
  }
  return dev;
}

}  // namespace

dspp_device use_device(const std::string& request) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (request == "cpu") {
    if (s.current.type != DSPP_DEVICE_CPU) {
      throw Error(Errc::kInvalidArgument, "use_device(\"cpu\"): this process already computes on " +
                                              device_name(s.current));
    }
    return s.current;
  }
  int index = -1;
  if (request == "cuda" || request == "auto") {
    index = local_rank();
  } else if (request.rfind("cuda:", 0) == 0) {
    char* end = nullptr;
    const long i = std::strtol(request.c_str() + 5, &end, 10);
    if (*end != '\0' || i < 0 || request.size() == 5) {
      throw Error(Errc::kInvalidArgument, "use_device: '" + request + "' is not cuda:<index>");
    }
    index = static_cast<int>(i);
  } else {
    throw Error(Errc::kInvalidArgument,
                "use_device: '" + request + "' is not one of auto, cpu, cuda, cuda:<index>");
  }
  if (s.current.type == DSPP_DEVICE_CUDA) {
    if (s.current.index == index) return s.current;
    throw Error(Errc::kInvalidArgument, "use_device(\"" + request +
                                            "\"): this process already computes on " +
                                            device_name(s.current) + "; one GPU per process");
  }
  std::string why;
  std::shared_ptr<PluginRegistry> reg;
  uint32_t abi_minor = 0;
  std::shared_ptr<Device> dev = load_cuda(reg, &why, &abi_minor);
  if (!dev) {
    if (request == "auto") return s.current;  // the CPU
    throw Error(Errc::kRuntime, "use_device(\"" + request + "\"): " + why);
  }
  if (index >= dev->count()) {
    const std::string msg = "use_device(\"" + request + "\"): GPU " + std::to_string(index) +
                            (request == "cuda:" + std::to_string(index) ? "" : " (LOCAL_RANK)") +
                            " does not exist; " + std::to_string(dev->count()) + " visible";
    throw Error(Errc::kInvalidArgument, msg);
  }
  check_plugin(dev->set_current(index), "device/cuda set_current(" + std::to_string(index) + ")");
  DeviceKernels* k = dev->kernels();
  if (!k) throw Error(Errc::kRuntime, "use_device: the device/cuda plugin has no layer kernels");
  s.registry = reg;
  s.device = dev;
  s.kernels = k;
  s.categories = abi_minor >= 3;
  s.allocator = std::make_unique<DeviceAllocator>(dev.get());
  set_allocator(DSPP_DEVICE_CUDA, s.allocator.get());
  s.current = dspp_device{DSPP_DEVICE_CUDA, index};
  return s.current;
}

dspp_device current_device() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.current;
}

Device* compute_device() {
  return state().device.get();
}

DeviceKernels* compute_kernels() {
  return state().kernels;
}

void synchronize_device() {
  if (Device* d = compute_device())
    check_plugin(d->synchronize(nullptr), "device/cuda synchronize");
}

DeviceMemory device_memory() {
  DeviceMemory m;
  Device* d = compute_device();
  if (!d) return m;
  DeviceMemoryStats st{};
  st.struct_size = sizeof st;
  check_plugin(d->memory_stats(&st), "device/cuda memory_stats");
  m.allocated = static_cast<int64_t>(st.allocated);
  m.peak_allocated = static_cast<int64_t>(st.peak_allocated);
  m.reserved = static_cast<int64_t>(st.reserved);
  m.total = static_cast<int64_t>(st.device_total_memory);
  if (state().categories) {
    for (int c = 0; c < kMemoryCategories; ++c) {
      m.category_allocated[c] = static_cast<int64_t>(st.category_allocated[c]);
      m.category_peak[c] = static_cast<int64_t>(st.category_peak[c]);
      m.category_requested[c] = static_cast<int64_t>(st.category_requested[c]);
    }
  }
  return m;
}

const char* memory_category_name(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::kOther:
      return "other";
    case MemoryCategory::kParameters:
      return "parameters";
    case MemoryCategory::kGradients:
      return "gradients";
    case MemoryCategory::kOptimizerState:
      return "optimizer states";
    case MemoryCategory::kActivations:
      return "activations";
    case MemoryCategory::kCommBuffers:
      return "comm buffers";
  }
  return "unknown";
}

void reset_device_peak_memory() {
  if (Device* d = compute_device())
    check_plugin(d->reset_peak_stats(), "device/cuda reset_peak_stats");
}

namespace device {

Device& require(dspp_device where, const char* what) {
  Device* d = compute_device();
  if (where.type != DSPP_DEVICE_CUDA || !d || state().current.index != where.index) {
    throw Error(Errc::kInvalidArgument, std::string(what) + ": a tensor on " + device_name(where) +
                                            " but this process computes on " +
                                            device_name(current_device()) +
                                            " (call dspp::use_device first)");
  }
  return *d;
}

DeviceKernels& kernels(const char* what) {
  DeviceKernels* k = compute_kernels();
  if (!k) {
    throw Error(Errc::kInvalidArgument,
                std::string(what) + ": CUDA tensors but no GPU chosen (call dspp::use_device)");
  }
  return *k;
}

void copy_bytes(void* dst, dspp_device dst_dev, const void* src, dspp_device src_dev, size_t n) {
  if (n == 0) return;
  if (dst_dev.type == DSPP_DEVICE_CPU && src_dev.type == DSPP_DEVICE_CPU) {
    std::memcpy(dst, src, n);
    return;
  }
  Device& d = require(dst_dev.type == DSPP_DEVICE_CUDA ? dst_dev : src_dev, "copy");
  check_plugin(d.copy(dst, src, n, nullptr), "device/cuda copy");
}

void zero_bytes(void* dst, dspp_device dev, size_t n) {
  if (n == 0) return;
  if (dev.type == DSPP_DEVICE_CPU) {
    std::memset(dst, 0, n);
    return;
  }
  check_plugin(require(dev, "zero_").memset(dst, 0, n, nullptr), "device/cuda memset");
}

void* host_device_callback(void*) {
  return compute_device();
}

int32_t host_memory_category_callback(void*, int32_t category) {
  Device* d = compute_device();
  if (!d || !state().categories) return DSPP_MEM_OTHER;
  return d->set_memory_category(category);
}

}  // namespace device
}  // namespace dspp
