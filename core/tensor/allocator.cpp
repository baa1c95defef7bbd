// The allocator registry: one allocator per device type. The CPU one is built in; a device plugin
// (CUDA) installs its own through set_allocator without any change to Tensor.
#include <dspp/error.h>
#include <dspp/tensor.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <string>

namespace dspp {
namespace {

// 64 bytes: a cache line, and the widest vector load (AVX-512) the compiler may emit.
constexpr size_t kCpuAlignment = 64;

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, dspp_device device) override {
    if (device.type != DSPP_DEVICE_CPU) {
      throw Error(Errc::kInvalidArgument,
                  "the CPU allocator cannot allocate on " + device_name(device));
    }
    // aligned_alloc wants a multiple of the alignment; 0 bytes still gets a real block so that
    // every defined tensor has a non-null data pointer.
    size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    if (rounded == 0) rounded = kCpuAlignment;
    void* p = rounded < bytes ? nullptr : std::aligned_alloc(kCpuAlignment, rounded);
    if (p == nullptr) {
      throw Error(Errc::kRuntime,
                  "out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
    return p;
  }
  void deallocate(void* ptr, size_t /*bytes*/, dspp_device /*device*/) noexcept override {
    std::free(ptr);
  }
};

CpuAllocator g_cpu_allocator;

// Indexed by dspp_device_type. Atomic: a device plugin may register while another thread
// allocates host tensors.
std::array<std::atomic<Allocator*>, 2> g_allocators{&g_cpu_allocator, nullptr};

size_t slot_of(dspp_device_type type) {
  size_t slot = static_cast<size_t>(type);
  if (slot >= g_allocators.size()) {
    throw Error(Errc::kInvalidArgument, "unknown device type " + std::to_string(type));
  }
  return slot;
}

}  // namespace

void set_allocator(dspp_device_type type, Allocator* allocator) {
  if (allocator == nullptr && type == DSPP_DEVICE_CPU) allocator = &g_cpu_allocator;
  g_allocators[slot_of(type)].store(allocator);
}

Allocator& allocator_for(dspp_device_type type) {
  Allocator* a = g_allocators[slot_of(type)].load();
  if (a == nullptr) {
    std::string kind = type == DSPP_DEVICE_CUDA ? "cuda" : std::to_string(type);
    throw Error(Errc::kRuntime, "no allocator for " + kind +
                                    " tensors: the device plugin that provides it is not loaded");
  }
  return *a;
}

}  // namespace dspp
