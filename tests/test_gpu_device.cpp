// device/cuda on a real GPU: the caching allocator (reuse without cudaMalloc, accounting, OOM),
// copies in every direction, and stream/event ordering. Skipped (exit 77) without a GPU; see
// tests/gpu_main.cpp.
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "gpu_kernels.h"
#include "test_util.h"

namespace {

std::shared_ptr<dspp::Device> make_device(dspp::PluginRegistry& registry) {
  registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
  auto dev = registry.create<dspp::Device>("device", "cuda", nullptr);
  dspp::check_plugin(dev->set_current(0), "set_current(0)");
  return dev;
}

dspp::DeviceMemoryStats stats(const dspp::Device& dev) {
  dspp::DeviceMemoryStats s{};
  s.struct_size = sizeof s;
  dspp::check_plugin(dev.memory_stats(&s), "memory_stats");
  return s;
}

void* alloc(dspp::Device& dev, size_t bytes, void* stream = nullptr) {
  void* p = nullptr;
  dspp::check_plugin(dev.alloc(bytes, stream, &p), "alloc " + std::to_string(bytes));
  return p;
}

void release(dspp::Device& dev, void* p, void* stream = nullptr) {
  dspp::check_plugin(dev.free(p, stream), "free");
}

std::vector<unsigned char> random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

constexpr size_t kMiB = size_t(1) << 20;

}  // namespace

TEST_CASE("device/cuda: count, device choice and its errors", "[gpu][device]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  const int n = dev->count();
  REQUIRE(n >= 1);
  CHECK(dev->set_current(n) == DSPP_ERR_INVALID_ARGUMENT);
  CHECK(contains(dspp::last_plugin_error(), "does not exist"));
  void* p = alloc(*dev, 100);
  CHECK(reinterpret_cast<uintptr_t>(p) % 256 == 0);
  if (n > 1) {
    CHECK(dev->set_current(1) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "serves GPU 0"));
  }
  int x = 0;
  CHECK(dev->free(&x, nullptr) == DSPP_ERR_INVALID_ARGUMENT);
  CHECK(contains(dspp::last_plugin_error(), "was not allocated by this device"));
  release(*dev, p);
  CHECK(dev->free(p, nullptr) == DSPP_ERR_INVALID_ARGUMENT);
  CHECK(contains(dspp::last_plugin_error(), "already freed"));
}

TEST_CASE("device/cuda: a repeated allocation pattern calls cudaMalloc only in its first step",
          "[gpu][device]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  void* s1 = nullptr;
  void* s2 = nullptr;
  dspp::check_plugin(dev->create_stream(&s1), "create_stream");
  dspp::check_plugin(dev->create_stream(&s2), "create_stream");
  const std::vector<size_t> sizes = {1,    100,       512,          513,       4096,
                                     kMiB, kMiB + 1,  3 * kMiB + 7, 64 * kMiB, 1000,
                                     4096, 64 * kMiB, 12345678};
  auto step = [&] {
    std::vector<std::pair<void*, void*>> held;
    for (size_t i = 0; i < sizes.size(); ++i) {
      void* s = i % 2 ? s1 : s2;
      void* p = alloc(*dev, sizes[i], s);
      // Touch the memory on its stream, as real work would.
      dspp::check_plugin(dev->memset(p, 0x5A, sizes[i], s), "memset");
      held.emplace_back(p, s);
    }
    for (size_t i = held.size(); i-- > 0;) release(*dev, held[i].first, held[i].second);
  };
  step();
  const auto after_first = stats(*dev);
  CHECK(after_first.device_mallocs == sizes.size());
  for (int k = 0; k < 25; ++k) step();
  const auto after = stats(*dev);
  INFO("mallocs after the first step " << after_first.device_mallocs << ", after 26 "
                                       << after.device_mallocs);
  CHECK(after.device_mallocs == after_first.device_mallocs);
  CHECK(after.cache_hits - after_first.cache_hits == 25 * sizes.size());
  CHECK(after.allocated == 0);
  CHECK(after.requested == 0);
  CHECK(after.reserved == after_first.reserved);
  dspp::check_plugin(dev->synchronize(nullptr), "synchronize");
  dspp::check_plugin(dev->destroy_stream(s1), "destroy_stream");
  dspp::check_plugin(dev->destroy_stream(s2), "destroy_stream");
  // Destroying a stream releases its cached blocks.
  CHECK(stats(*dev).reserved == 0);
}

TEST_CASE("device/cuda: current and peak bytes, and empty_cache", "[gpu][device]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  dspp::check_plugin(dev->empty_cache(), "empty_cache");
  dspp::check_plugin(dev->reset_peak_stats(), "reset_peak_stats");
  const auto s0 = stats(*dev);
  CHECK(s0.allocated == 0);
  CHECK(s0.device_total_memory > s0.device_free_memory);

  void* a = alloc(*dev, 3 * kMiB);  // block: 4 MiB (a multiple of 2 MiB)
  void* b = alloc(*dev, 1000);      // block: 1 KiB (power of two)
  const auto s1 = stats(*dev);
  CHECK(s1.allocated == 4 * kMiB + 1024);
  CHECK(s1.requested == 3 * kMiB + 1000);
  CHECK(s1.peak_allocated == s1.allocated);
  CHECK(s1.reserved == s1.allocated);
  release(*dev, a);
  const auto s2 = stats(*dev);
  CHECK(s2.allocated == 1024);
  CHECK(s2.requested == 1000);
  CHECK(s2.peak_allocated == 4 * kMiB + 1024);
  CHECK(s2.reserved == 4 * kMiB + 1024);  // a stays cached
  dspp::check_plugin(dev->empty_cache(), "empty_cache");
  const auto s3 = stats(*dev);
  CHECK(s3.reserved == 1024);
  CHECK(s3.device_frees == s2.device_frees + 1);
  CHECK(s3.peak_reserved == 4 * kMiB + 1024);
  dspp::check_plugin(dev->reset_peak_stats(), "reset_peak_stats");
  CHECK(stats(*dev).peak_allocated == 1024);
  release(*dev, b);
  CHECK(stats(*dev).allocated == 0);
}

TEST_CASE("device/cuda: current and peak bytes per memory category, per thread", "[gpu][device]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  dspp::check_plugin(dev->empty_cache(), "empty_cache");
  dspp::check_plugin(dev->reset_peak_stats(), "reset_peak_stats");
  CHECK(dev->set_memory_category(DSPP_MEM_PARAMETERS) == DSPP_MEM_OTHER);  // the default
  void* p = alloc(*dev, 3 * kMiB);  // block 4 MiB, a parameter
  CHECK(dev->set_memory_category(DSPP_MEM_GRADIENTS) == DSPP_MEM_PARAMETERS);
  void* g = alloc(*dev, 1000);  // block 1 KiB, a gradient
  // Another thread's allocations keep that thread's category (the default, other).
  void* o = nullptr;
  std::thread([&] { o = alloc(*dev, 600); }).join();
  // An unknown category counts as other.
  dev->set_memory_category(42);
  void* u = alloc(*dev, 100);
  CHECK(dev->set_memory_category(DSPP_MEM_OPTIMIZER_STATE) == DSPP_MEM_OTHER);
  void* m = alloc(*dev, 2 * kMiB);  // block 2 MiB, optimizer state
  const auto s1 = stats(*dev);
  CHECK(s1.category_allocated[DSPP_MEM_PARAMETERS] == 4 * kMiB);
  CHECK(s1.category_requested[DSPP_MEM_PARAMETERS] == 3 * kMiB);
  CHECK(s1.category_allocated[DSPP_MEM_GRADIENTS] == 1024);
  CHECK(s1.category_requested[DSPP_MEM_GRADIENTS] == 1000);
  CHECK(s1.category_allocated[DSPP_MEM_OTHER] == 1024 + 512);
  CHECK(s1.category_requested[DSPP_MEM_OTHER] == 700);
  CHECK(s1.category_allocated[DSPP_MEM_OPTIMIZER_STATE] == 2 * kMiB);
  uint64_t sum = 0;
  for (int c = 0; c < DSPP_MEM_CATEGORIES; ++c) sum += s1.category_allocated[c];
  CHECK(sum == s1.allocated);
  // A freed parameter block reused as an activation counts as an activation now; the parameter
  // category keeps its peak until reset_peak_stats.
  release(*dev, p);
  dev->set_memory_category(DSPP_MEM_ACTIVATIONS);
  void* a = alloc(*dev, 3 * kMiB + 5);  // served by the cached 4 MiB block
  const auto s2 = stats(*dev);
  CHECK(s2.cache_hits == s1.cache_hits + 1);
  CHECK(s2.category_allocated[DSPP_MEM_PARAMETERS] == 0);
  CHECK(s2.category_peak[DSPP_MEM_PARAMETERS] == 4 * kMiB);
  CHECK(s2.category_allocated[DSPP_MEM_ACTIVATIONS] == 4 * kMiB);
  CHECK(s2.category_requested[DSPP_MEM_ACTIVATIONS] == 3 * kMiB + 5);
  dspp::check_plugin(dev->reset_peak_stats(), "reset_peak_stats");
  const auto s3 = stats(*dev);
  CHECK(s3.category_peak[DSPP_MEM_PARAMETERS] == 0);
  CHECK(s3.category_peak[DSPP_MEM_ACTIVATIONS] == 4 * kMiB);
  for (void* q : {g, o, u, m, a}) release(*dev, q);
  dev->set_memory_category(DSPP_MEM_OTHER);
  const auto s4 = stats(*dev);
  for (int c = 0; c < DSPP_MEM_CATEGORIES; ++c) {
    INFO("category " << c);
    CHECK(s4.category_allocated[c] == 0);
    CHECK(s4.category_requested[c] == 0);
  }
}

TEST_CASE("device/cuda: out of memory says how much, and a full cache is released and retried",
          "[gpu][device][oom]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  dspp::check_plugin(dev->empty_cache(), "empty_cache");
  const auto s0 = stats(*dev);

  SECTION("an impossible request fails with the sizes in the message") {
    void* p = reinterpret_cast<void*>(1);
    const size_t huge = size_t(1) << 40;  // 1 TiB
    CHECK(dev->alloc(huge, nullptr, &p) == DSPP_ERR_OUT_OF_MEMORY);
    CHECK(p == nullptr);
    const std::string msg = dspp::last_plugin_error();
    INFO(msg);
    CHECK(contains(msg, "out of memory on GPU 0"));
    CHECK(contains(msg, "1.00 TiB (1099511627776 bytes"));
    CHECK(contains(msg, "free of"));
    CHECK(contains(msg, "cudaErrorMemoryAllocation"));
    const auto s1 = stats(*dev);
    CHECK(s1.ooms == s0.ooms + 1);
    CHECK(s1.alloc_retries == s0.alloc_retries + 1);
    // Still usable.
    void* q = alloc(*dev, 4096);
    release(*dev, q);
  }
  SECTION("a cached block that blocks a larger one is released, then cudaMalloc retried") {
    const size_t free_now = s0.device_free_memory;
    const size_t a_bytes = free_now / 100 * 55;
    const size_t b_bytes = free_now / 100 * 60;
    void* a = alloc(*dev, a_bytes);
    release(*dev, a);  // cached: 55% of the GPU stays reserved
    CHECK(stats(*dev).reserved >= a_bytes);
    void* b = alloc(*dev, b_bytes);  // does not fit beside it
    const auto s1 = stats(*dev);
    CHECK(s1.alloc_retries == s0.alloc_retries + 1);
    CHECK(s1.device_frees >= s0.device_frees + 1);
    CHECK(s1.allocated >= b_bytes);
    release(*dev, b);
    dspp::check_plugin(dev->empty_cache(), "empty_cache");
  }
}

TEST_CASE("device/cuda: copies round trip through pageable, pinned and device memory",
          "[gpu][device]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  void* s = nullptr;
  dspp::check_plugin(dev->create_stream(&s), "create_stream");
  // Below, at and across the 8 MiB staging chunks.
  for (size_t n : {size_t(1), size_t(4097), 8 * kMiB, 8 * kMiB + 3, 20 * kMiB + 5}) {
    INFO("bytes " << n);
    const auto src = random_bytes(n, static_cast<unsigned>(n));
    void* d1 = alloc(*dev, n, s);
    void* d2 = alloc(*dev, n, s);
    dspp::check_plugin(dev->memset(d1, 0xAB, n, s), "memset");
    dspp::check_plugin(dev->memset(d2, 0xCD, n, s), "memset");

    // Pageable -> device: the source may change as soon as copy() returns.
    std::vector<unsigned char> host = src;
    dspp::check_plugin(dev->copy(d1, host.data(), n, s), "copy h2d");
    std::fill(host.begin(), host.end(), 0xEE);
    dspp::check_plugin(dev->copy(d2, d1, n, s), "copy d2d");
    std::vector<unsigned char> back(n, 0x11);
    dspp::check_plugin(dev->copy(back.data(), d2, n, s), "copy d2h");  // returns with the data
    CHECK(back == src);

    // Pinned host memory both ways (asynchronous: wait for the stream).
    void* pinned = nullptr;
    dspp::check_plugin(dev->alloc_host(n, &pinned), "alloc_host");
    std::memcpy(pinned, src.data(), n);
    dspp::check_plugin(dev->memset(d1, 0, n, s), "memset");
    dspp::check_plugin(dev->copy(d1, pinned, n, s), "copy pinned h2d");
    std::memset(back.data(), 0x22, n);
    dspp::check_plugin(dev->copy(back.data(), d1, n, s), "copy d2h");
    CHECK(back == src);
    std::memset(pinned, 0x33, n);
    dspp::check_plugin(dev->copy(pinned, d2, n, s), "copy d2h pinned");
    dspp::check_plugin(dev->synchronize(s), "synchronize");
    CHECK(std::memcmp(pinned, src.data(), n) == 0);
    dspp::check_plugin(dev->free_host(pinned), "free_host");
    release(*dev, d1, s);
    release(*dev, d2, s);
  }
  dspp::check_plugin(dev->destroy_stream(s), "destroy_stream");
}

TEST_CASE("device/cuda: events order streams, and a block freed on another stream waits for it",
          "[gpu][device]") {
  dspp::PluginRegistry registry;
  auto dev = make_device(registry);
  void* a = nullptr;
  void* b = nullptr;
  dspp::check_plugin(dev->create_stream(&a), "create_stream");
  dspp::check_plugin(dev->create_stream(&b), "create_stream");
  void* t0 = nullptr;
  void* t1 = nullptr;
  void* ev = nullptr;
  dspp::check_plugin(dev->create_event(1, &t0), "create_event");
  dspp::check_plugin(dev->create_event(1, &t1), "create_event");
  dspp::check_plugin(dev->create_event(0, &ev), "create_event");

  SECTION("stream b waits for a's event before it copies") {
    int* flag = static_cast<int*>(alloc(*dev, sizeof(int), a));
    int* copy = static_cast<int*>(alloc(*dev, sizeof(int), b));
    dspp::check_plugin(dev->memset(flag, 0, sizeof(int), a), "memset");
    dspp::check_plugin(dev->memset(copy, 0, sizeof(int), b), "memset");
    dspp::check_plugin(dev->synchronize(nullptr), "synchronize");
    dspp::check_plugin(dev->record_event(t0, a), "record");
    REQUIRE(launch_sleep_then_write(flag, 7, 200.0, static_cast<cudaStream_t>(a)) == cudaSuccess);
    dspp::check_plugin(dev->record_event(t1, a), "record");
    dspp::check_plugin(dev->record_event(ev, a), "record");
    int32_t done = -1;
    dspp::check_plugin(dev->query_event(ev, &done), "query");
    CHECK(done == 0);  // the kernel sleeps 200 ms
    dspp::check_plugin(dev->stream_wait_event(b, ev), "stream_wait_event");
    dspp::check_plugin(dev->copy(copy, flag, sizeof(int), b), "copy d2d");
    int host = 0;
    dspp::check_plugin(dev->copy(&host, copy, sizeof(int), b), "copy d2h");
    CHECK(host == 7);
    dspp::check_plugin(dev->synchronize_event(ev), "synchronize_event");
    dspp::check_plugin(dev->query_event(ev, &done), "query");
    CHECK(done == 1);
    float ms = 0;
    dspp::check_plugin(dev->elapsed_ms(t0, t1, &ms), "elapsed_ms");
    CHECK(ms >= 150.0f);
    release(*dev, flag, a);
    release(*dev, copy, b);
  }
  SECTION("a block used on b and freed there is not handed out on a until b is done") {
    int* p = static_cast<int*>(alloc(*dev, 4096, a));
    REQUIRE(launch_sleep_then_write(p, 1, 200.0, static_cast<cudaStream_t>(b)) == cudaSuccess);
    release(*dev, p, b);
    int* q = static_cast<int*>(alloc(*dev, 4096, a));
    CHECK(q != p);  // b's kernel still writes p
    dspp::check_plugin(dev->synchronize(b), "synchronize");
    int* r = static_cast<int*>(alloc(*dev, 4096, a));
    CHECK(r == p);  // b has finished: reusable now
    release(*dev, q, a);
    release(*dev, r, a);
  }
  dspp::check_plugin(dev->destroy_event(t0), "destroy_event");
  dspp::check_plugin(dev->destroy_event(t1), "destroy_event");
  dspp::check_plugin(dev->destroy_event(ev), "destroy_event");
  dspp::check_plugin(dev->destroy_stream(a), "destroy_stream");
  dspp::check_plugin(dev->destroy_stream(b), "destroy_stream");
}
