// The allocator registry: one allocator per device type. The CPU one is built in; a device plugin
// (CUDA) installs its own through set_allocator without any change to Tensor.
#include <dspp/error.h>
#include <dspp/tensor.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <string>

#include "tensor/host_memory.h"

namespace dspp {
namespace host_memory {
namespace {

std::atomic<int64_t> g_in_use{0};
std::atomic<int64_t> g_peak{0};

int64_t parse_limit() {
  const char* v = std::getenv("DSPP_HOST_MEMORY_LIMIT");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  double unit = 1;
  if (end && (*end == 'K' || *end == 'k')) unit = 1024.0;
  if (end && (*end == 'M' || *end == 'm')) unit = 1024.0 * 1024;
  if (end && (*end == 'G' || *end == 'g')) unit = 1024.0 * 1024 * 1024;
  if (end == v || x < 0 || (unit == 1 && end && *end != '\0') || (unit != 1 && end[1] != '\0')) {
    throw Error(Errc::kInvalidArgument,
                std::string("DSPP_HOST_MEMORY_LIMIT='") + v +
                    "' is not a byte count (a number with an optional K, M or G suffix)");
  }
  return static_cast<int64_t>(x * unit);
}

}  // namespace

int64_t limit() {
  static const int64_t l = parse_limit();
  return l;
}

bool charge(size_t bytes) {
  const auto b = static_cast<int64_t>(bytes);
  const int64_t now = g_in_use.fetch_add(b) + b;
  if (limit() > 0 && now > limit()) {
    g_in_use.fetch_sub(b);
    return false;
  }
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
  return true;
}

void charge_or_throw(size_t bytes) {
  if (charge(bytes)) return;
  throw Error(Errc::kRuntime,
              "host memory limit DSPP_HOST_MEMORY_LIMIT=" + std::to_string(limit()) +
                  " bytes exceeded: allocating " + std::to_string(bytes) + " bytes with " +
                  std::to_string(g_in_use.load()) + " in use");
}

void uncharge(size_t bytes) {
  g_in_use.fetch_sub(static_cast<int64_t>(bytes));
}

}  // namespace host_memory

HostMemoryStats host_memory_stats() {
  return {host_memory::g_in_use.load(), host_memory::g_peak.load(), host_memory::limit()};
}

void reset_host_memory_peak() {
  host_memory::g_peak.store(host_memory::g_in_use.load());
}

namespace {

// 64 bytes: a cache line, and the widest vector load (AVX-512) the compiler may emit.
constexpr size_t kCpuAlignment = 64;

size_t rounded_size(size_t bytes) {
  size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
  return rounded == 0 ? kCpuAlignment : rounded;
}

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes, dspp_device device) override {
    if (device.type != DSPP_DEVICE_CPU) {
      throw Error(Errc::kInvalidArgument,
                  "the CPU allocator cannot allocate on " + device_name(device));
    }
    // aligned_alloc wants a multiple of the alignment; 0 bytes still gets a real block so that
    // every defined tensor has a non-null data pointer.
    const size_t rounded = rounded_size(bytes);
    if (rounded < bytes) {
      throw Error(Errc::kRuntime, "allocating " + std::to_string(bytes) + " bytes overflows");
    }
    host_memory::charge_or_throw(rounded);
    void* p = std::aligned_alloc(kCpuAlignment, rounded);
    if (p == nullptr) {
      host_memory::uncharge(rounded);
      throw Error(Errc::kRuntime,
                  "out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
    return p;
  }
  void deallocate(void* ptr, size_t bytes, dspp_device /*device*/) noexcept override {
    std::free(ptr);
    host_memory::uncharge(rounded_size(bytes));
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
