// device/cuda: one GPU's memory, streams, events and copies through the CUDA runtime.
//
// Caching allocator. Requests are rounded to a block size: up to 1 MiB, the next power of two (at
// least 512 bytes); above, a multiple of 2 MiB. Freed blocks stay reserved in a free list of the
// stream they were allocated on (stream order makes reuse on that stream safe without waiting),
// keyed by block size; alloc() takes the smallest cached block of the stream that fits and wastes
// at most 1/8 of it, else it calls cudaMalloc. So a training loop that asks for the same sizes
// every step calls cudaMalloc only in its first steps. A block freed after use on another stream
// becomes reusable only once an event recorded on that stream has completed. When cudaMalloc
// fails, every cached block is released (cudaFree) and the allocation is tried once more; if that
// fails too the error says what was asked, what dspp holds and what the GPU has free.
//
// Every block is counted in the category (DSPP_MEM_*) its allocating thread had set
// (set_memory_category) when it was handed out, so current and peak bytes are known per category:
// parameters, gradients, optimizer states, activations, comm buffers, other.
//
// Copies with pageable host memory go through two page-locked staging buffers, so that the
// device side is an ordinary asynchronous copy in stream order and the host side overlaps it.
//
// The CUDA runtime is linked statically (see CMakeLists.txt): the plugin then loads on a machine
// without CUDA, where count() is 0, and its runtime shares the driver's per-device primary context
// with any other runtime copy in the process, so pointers, streams and events cross freely.
#include <dspp/kinds/device.h>
#include <dspp/plugin.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../../common/cuda_check.h"
#include "kernels.h"

namespace {

using dspp::plugin::StatusError;

// The category of the calling thread's allocations (set_memory_category).
thread_local int32_t t_category = DSPP_MEM_OTHER;

constexpr const char* kWho = "device/cuda";
#define CHECK(call) DSPP_CUDA_CHECK(kWho, call)

constexpr size_t kSmallLimit = size_t(1) << 20;    // up to here: power-of-two classes
constexpr size_t kMinBlock = 512;                  // smallest class (and alignment of sizes)
constexpr size_t kLargeGranule = size_t(2) << 20;  // larger blocks: multiples of 2 MiB
constexpr size_t kStagingBytes = size_t(8) << 20;  // each of the two staging buffers

size_t round_block(size_t bytes) {
  if (bytes <= kSmallLimit) {
    size_t b = kMinBlock;
    while (b < bytes) b <<= 1;
    return b;
  }
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

// "1.50 GiB"
std::string human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

class CudaDevice final : public dspp::Device {
 public:
  CudaDevice(const dspp_host_api* host, const dspp::plugin::ConfigReader&)
      : host_(host),
        kernels_(dspp::cuda::create_kernels(host, *this, [this] { bind_locked(); }),
                 &dspp::cuda::destroy_kernels) {}

  ~CudaDevice() {
    // Errors are ignored here: at process exit the runtime may already be unloading.
    std::lock_guard<std::mutex> lock(mutex_);
    if (index_ >= 0) cudaSetDevice(index_);
    for (Pending& p : pending_) {
      cudaEventSynchronize(p.event);
      cudaEventDestroy(p.event);
    }
    for (cudaEvent_t e : spare_events_) cudaEventDestroy(e);
    uint64_t live = 0, live_bytes = 0;
    for (auto& [ptr, b] : blocks_) {
      if (b.in_use) {
        // Still referenced by someone: leaked on purpose, freeing it could corrupt their data.
        ++live;
        live_bytes += b.size;
      } else {
        cudaFree(ptr);
      }
    }
    for (Staging& s : staging_) {
      if (s.done) cudaEventDestroy(s.done);
      if (s.host) cudaFreeHost(s.host);
    }
    if (live > 0) {
      dspp::plugin::log(host_, DSPP_LOG_WARNING, kWho,
                        std::to_string(live) + " device block(s) (" + human(live_bytes) +
                            ") were still allocated when the device was released; left to the "
                            "process's exit");
    }
  }

  int32_t count() const noexcept override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }

  dspp_status set_current(int32_t index) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      std::lock_guard<std::mutex> lock(mutex_);
      int n = 0;
      const cudaError_t err = cudaGetDeviceCount(&n);
      if (err != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                          std::string(kWho) + ": no CUDA device is visible (cudaGetDeviceCount: " +
                              (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices") + ")");
      }
      if (index < 0 || index >= n) {
        throw std::invalid_argument(std::string(kWho) + ": device " + std::to_string(index) +
                                    " does not exist; " + std::to_string(n) +
                                    " visible (CUDA_VISIBLE_DEVICES=" + env_or("(unset)") + ")");
      }
      if (index_ >= 0 && index != index_ && in_use_) {
        throw std::invalid_argument(std::string(kWho) + ": this device object serves GPU " +
                                    std::to_string(index_) + " and already has memory, streams " +
                                    "or events there; make another one for GPU " +
                                    std::to_string(index));
      }
      index_ = index;
      CHECK(cudaSetDevice(index_));
    });
  }

  dspp_status alloc(size_t bytes, void* stream, void** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument(std::string(kWho) + " alloc: out is NULL");
      *out = nullptr;
      if (bytes == 0) return;
      std::lock_guard<std::mutex> lock(mutex_);
      bind();
      const cudaStream_t s = static_cast<cudaStream_t>(stream);
      const size_t size = round_block(bytes);
      collect_pending(false);

      // The cache: the smallest block of this stream that fits, wasting at most 1/8 of it.
      auto pool_it = free_.find(s);
      if (pool_it != free_.end()) {
        auto& pool = pool_it->second;
        auto it = pool.lower_bound(size);
        if (it != pool.end() && it->first - size <= it->first / 8) {
          void* p = it->second;
          pool.erase(it);
          Block& b = blocks_.at(p);
          b.in_use = true;
          b.requested = bytes;
          b.category = t_category;
          account_alloc(b);
          ++stats_.cache_hits;
          *out = p;
          return;
        }
      }

      void* p = nullptr;
      cudaError_t err = cudaMalloc(&p, size);
      if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        const uint64_t cached = stats_.reserved - stats_.allocated;
        release_cache();
        ++stats_.alloc_retries;
        err = cudaMalloc(&p, size);
        if (err == cudaErrorMemoryAllocation) {
          (void)cudaGetLastError();
          ++stats_.ooms;
          size_t free_b = 0, total_b = 0;
          if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
          throw StatusError(DSPP_ERR_OUT_OF_MEMORY,
                            std::string(kWho) + ": out of memory on GPU " + std::to_string(index_) +
                                " allocating " + human(bytes) + " (" + std::to_string(bytes) +
                                " bytes, block " + human(size) + "): dspp holds " +
                                human(stats_.allocated) + " in use and had " + human(cached) +
                                " cached (released, then retried); the GPU reports " +
                                human(free_b) + " free of " + human(total_b) + " (cudaMalloc at " +
                                DSPP_CUDA_FILE + ":" + std::to_string(__LINE__) + ": " +
                                cudaGetErrorName(err) + ")");
        }
      }
      CHECK(err);
      in_use_ = true;
      Block& b = blocks_[p];
      b = Block{size, bytes, s, true, t_category};
      stats_.reserved += size;
      stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
      ++stats_.device_mallocs;
      account_alloc(b);
      *out = p;
    });
  }

  dspp_status free(void* ptr, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!ptr) return;
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = blocks_.find(ptr);
      if (it == blocks_.end() || !it->second.in_use) {
        throw std::invalid_argument(
            std::string(kWho) + " free: " + hex(ptr) +
            (it == blocks_.end() ? " was not allocated by this device" : " was already freed"));
      }
      Block& b = it->second;
      b.in_use = false;
      stats_.allocated -= b.size;
      stats_.requested -= b.requested;
      stats_.category_allocated[b.category] -= b.size;
      stats_.category_requested[b.category] -= b.requested;
      const cudaStream_t s = static_cast<cudaStream_t>(stream);
      if (!s || s == b.stream) {
        free_[b.stream].emplace(b.size, ptr);
        return;
      }
      // Last used on another stream: reusable once that stream's work so far has finished.
      bind();
      cudaEvent_t ev = take_event();
      CHECK(cudaEventRecord(ev, s));
      pending_.push_back(Pending{ptr, ev});
    });
  }

  dspp_status empty_cache() noexcept override {
    return dspp::plugin::guard(host_, [&] {
      std::lock_guard<std::mutex> lock(mutex_);
      if (index_ < 0) return;
      bind();
      collect_pending(true);
      release_cache();
    });
  }

  dspp_status memory_stats(dspp::DeviceMemoryStats* out) const noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out || out->struct_size < sizeof(uint32_t) * 2) {
        throw std::invalid_argument(std::string(kWho) +
                                    " memory_stats: out is NULL or its struct_size is unset");
      }
      dspp::DeviceMemoryStats s;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        s = stats_;
        s.device = static_cast<uint32_t>(std::max(index_, 0));
        if (index_ >= 0) {
          size_t free_b = 0, total_b = 0;
          CHECK(cudaSetDevice(index_));
          CHECK(cudaMemGetInfo(&free_b, &total_b));
          s.device_free_memory = free_b;
          s.device_total_memory = total_b;
        }
      }
      // Copy only what the caller's (possibly older, smaller) struct has room for.
      const uint32_t n = std::min<uint32_t>(out->struct_size, sizeof s);
      s.struct_size = n;
      std::memcpy(out, &s, n);
    });
  }

  dspp_status reset_peak_stats() noexcept override {
    return dspp::plugin::guard(host_, [&] {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.peak_allocated = stats_.allocated;
      stats_.peak_reserved = stats_.reserved;
      for (int c = 0; c < DSPP_MEM_CATEGORIES; ++c) {
        stats_.category_peak[c] = stats_.category_allocated[c];
      }
    });
  }

  dspp_status alloc_host(size_t bytes, void** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument(std::string(kWho) + " alloc_host: out is NULL");
      *out = nullptr;
      if (bytes == 0) return;
      bind_locked();
      const cudaError_t err = cudaHostAlloc(out, bytes, cudaHostAllocPortable);
      if (err != cudaSuccess) {
        *out = nullptr;
        dspp::cuda::throw_failure(kWho, err,
                                  ("cudaHostAlloc(" + std::to_string(bytes) + " bytes)").c_str(),
                                  DSPP_CUDA_FILE, __LINE__);
      }
    });
  }

  dspp_status free_host(void* ptr) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!ptr) return;
      bind_locked();
      CHECK(cudaFreeHost(ptr));
    });
  }

  dspp_status create_stream(void** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument(std::string(kWho) + " create_stream: out is NULL");
      *out = nullptr;
      std::lock_guard<std::mutex> lock(mutex_);
      bind();
      cudaStream_t s = nullptr;
      // Non-blocking: our streams never wait implicitly for the legacy default stream.
      CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      in_use_ = true;
      *out = s;
    });
  }

  dspp_status destroy_stream(void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!stream) throw std::invalid_argument(std::string(kWho) + " destroy_stream: NULL");
      std::lock_guard<std::mutex> lock(mutex_);
      bind();
      const cudaStream_t s = static_cast<cudaStream_t>(stream);
      // A later stream may get the same handle: its cached blocks must not be handed out while
      // this stream's work may still use them, so finish that work and release them.
      CHECK(cudaStreamSynchronize(s));
      auto it = free_.find(s);
      if (it != free_.end()) {
        for (auto& [size, ptr] : it->second) release_block(ptr);
        free_.erase(it);
      }
      CHECK(cudaStreamDestroy(s));
    });
  }

  dspp_status synchronize(void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      bind_locked();
      if (stream) {
        CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
      } else {
        CHECK(cudaDeviceSynchronize());
      }
    });
  }

  dspp_status create_event(int32_t timing, void** out) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!out) throw std::invalid_argument(std::string(kWho) + " create_event: out is NULL");
      *out = nullptr;
      std::lock_guard<std::mutex> lock(mutex_);
      bind();
      cudaEvent_t e = nullptr;
      CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
      in_use_ = true;
      *out = e;
    });
  }

  dspp_status destroy_event(void* event) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!event) throw std::invalid_argument(std::string(kWho) + " destroy_event: NULL");
      bind_locked();
      CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
    });
  }

  dspp_status record_event(void* event, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!event) throw std::invalid_argument(std::string(kWho) + " record_event: event is NULL");
      bind_locked();
      CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
    });
  }

  dspp_status stream_wait_event(void* stream, void* event) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!event) {
        throw std::invalid_argument(std::string(kWho) + " stream_wait_event: event is NULL");
      }
      bind_locked();
      CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event),
                                0));
    });
  }

  dspp_status query_event(void* event, int32_t* done) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!event || !done) {
        throw std::invalid_argument(std::string(kWho) + " query_event: event or done is NULL");
      }
      bind_locked();
      const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
      if (err == cudaErrorNotReady) {
        *done = 0;
        return;
      }
      CHECK(err);
      *done = 1;
    });
  }

  dspp_status synchronize_event(void* event) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!event) throw std::invalid_argument(std::string(kWho) + " synchronize_event: NULL");
      bind_locked();
      CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
    });
  }

  dspp_status elapsed_ms(void* start, void* end, float* ms) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (!start || !end || !ms) {
        throw std::invalid_argument(std::string(kWho) + " elapsed_ms: an argument is NULL");
      }
      bind_locked();
      CHECK(
          cudaEventElapsedTime(ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
    });
  }

  dspp_status copy(void* dst, const void* src, size_t bytes, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (bytes == 0) return;
      if (!dst || !src) throw std::invalid_argument(std::string(kWho) + " copy: NULL pointer");
      bind_locked();
      const cudaStream_t s = static_cast<cudaStream_t>(stream);
      const bool dst_pageable = pageable(dst);
      const bool src_pageable = pageable(src);
      if (!dst_pageable && !src_pageable) {
        CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
      } else if (dst_pageable && src_pageable) {
        std::memcpy(dst, src, bytes);  // host to host: nothing to order on the device
      } else if (src_pageable) {
        copy_from_pageable(dst, static_cast<const char*>(src), bytes, s);
      } else {
        copy_to_pageable(static_cast<char*>(dst), src, bytes, s);
      }
    });
  }

  dspp_status memset(void* dst, int32_t value, size_t bytes, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (bytes == 0) return;
      if (!dst) throw std::invalid_argument(std::string(kWho) + " memset: dst is NULL");
      bind_locked();
      CHECK(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(stream)));
    });
  }

  // The layer kernels (kernels.cpp): created with the device, they touch CUDA only when called.
  dspp::DeviceKernels* kernels() noexcept override { return kernels_.get(); }

  int32_t set_memory_category(int32_t category) noexcept override {
    const int32_t previous = t_category;
    t_category = category >= 0 && category < DSPP_MEM_CATEGORIES ? category : DSPP_MEM_OTHER;
    return previous;
  }

 private:
  struct Block {
    size_t size = 0;       // what cudaMalloc gave
    size_t requested = 0;  // what the caller asked (while in use)
    cudaStream_t stream = nullptr;
    bool in_use = false;
    int32_t category = DSPP_MEM_OTHER;  // while in use: what it holds (DSPP_MEM_*)
  };
  struct Pending {
    void* ptr;
    cudaEvent_t event;
  };
  struct Staging {
    void* host = nullptr;
    cudaEvent_t done = nullptr;  // recorded after the last device copy that used `host`
  };

  static std::string env_or(const char* dflt) {
    const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
    return v ? v : dflt;
  }

  // Makes this object's GPU current on the calling thread (device 0 when set_current was never
  // called). Caller holds mutex_.
  void bind() {
    if (index_ < 0) index_ = 0;
    int cur = -1;
    CHECK(cudaGetDevice(&cur));
    if (cur != index_) CHECK(cudaSetDevice(index_));
  }
  void bind_locked() {
    std::lock_guard<std::mutex> lock(mutex_);
    bind();
  }

  void account_alloc(const Block& b) {
    stats_.allocated += b.size;
    stats_.requested += b.requested;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    const int32_t c = b.category;
    stats_.category_allocated[c] += b.size;
    stats_.category_requested[c] += b.requested;
    stats_.category_peak[c] = std::max(stats_.category_peak[c], stats_.category_allocated[c]);
  }

  cudaEvent_t take_event() {
    if (!spare_events_.empty()) {
      cudaEvent_t e = spare_events_.back();
      spare_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  // Moves blocks whose cross-stream event has completed into their stream's free list; with
  // `wait`, waits for all of them first.
  void collect_pending(bool wait) {
    for (size_t i = 0; i < pending_.size();) {
      Pending& p = pending_[i];
      if (wait) CHECK(cudaEventSynchronize(p.event));
      const cudaError_t err = cudaEventQuery(p.event);
      if (err == cudaErrorNotReady) {
        ++i;
        continue;
      }
      CHECK(err);
      const Block& b = blocks_.at(p.ptr);
      free_[b.stream].emplace(b.size, p.ptr);
      spare_events_.push_back(p.event);
      pending_[i] = pending_.back();
      pending_.pop_back();
    }
  }

  void release_block(void* ptr) {
    const size_t size = blocks_.at(ptr).size;
    CHECK(cudaFree(ptr));
    blocks_.erase(ptr);
    stats_.reserved -= size;
    ++stats_.device_frees;
  }

  // cudaFree of every cached block (cudaFree waits for the device, so in-flight uses finish).
  void release_cache() {
    for (auto& [stream, pool] : free_) {
      for (auto& [size, ptr] : pool) release_block(ptr);
    }
    free_.clear();
  }

  static bool pageable(const void* p) {
    cudaPointerAttributes a{};
    const cudaError_t err = cudaPointerGetAttributes(&a, p);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // older runtimes: an unknown host pointer is an error
      return true;
    }
    return a.type == cudaMemoryTypeUnregistered;
  }

  // Caller holds staging_mutex_.
  void ensure_staging() {
    for (Staging& s : staging_) {
      if (!s.host) CHECK(cudaHostAlloc(&s.host, kStagingBytes, cudaHostAllocPortable));
      if (!s.done) CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    }
  }

  // Pageable host -> device (or page-locked): each chunk is copied into a free staging buffer
  // on the host, then sent asynchronously; returns once all of src has been read.
  void copy_from_pageable(void* dst, const char* src, size_t bytes, cudaStream_t s) {
    std::lock_guard<std::mutex> lock(staging_mutex_);
    ensure_staging();
    size_t k = 0;
    for (size_t off = 0; off < bytes; off += kStagingBytes, ++k) {
      const size_t n = std::min(kStagingBytes, bytes - off);
      Staging& st = staging_[k % 2];
      CHECK(cudaEventSynchronize(st.done));  // its previous copy has left the buffer
      std::memcpy(st.host, src + off, n);
      CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, st.host, n, cudaMemcpyDefault, s));
      CHECK(cudaEventRecord(st.done, s));
    }
  }

  // Device -> pageable host: chunk i+1 is in flight while chunk i is copied out on the host.
  void copy_to_pageable(char* dst, const void* src, size_t bytes, cudaStream_t s) {
    std::lock_guard<std::mutex> lock(staging_mutex_);
    ensure_staging();
    const size_t chunks = (bytes + kStagingBytes - 1) / kStagingBytes;
    auto issue = [&](size_t i) {
      const size_t off = i * kStagingBytes;
      const size_t n = std::min(kStagingBytes, bytes - off);
      Staging& st = staging_[i % 2];
      CHECK(cudaEventSynchronize(st.done));
      CHECK(cudaMemcpyAsync(st.host, static_cast<const char*>(src) + off, n, cudaMemcpyDefault, s));
      CHECK(cudaEventRecord(st.done, s));
    };
    issue(0);
    for (size_t i = 0; i < chunks; ++i) {
      if (i + 1 < chunks) issue(i + 1);
      const size_t off = i * kStagingBytes;
      const size_t n = std::min(kStagingBytes, bytes - off);
      Staging& st = staging_[i % 2];
      CHECK(cudaEventSynchronize(st.done));
      std::memcpy(dst + off, st.host, n);
    }
  }

  const dspp_host_api* host_;
  mutable std::mutex mutex_;
  int index_ = -1;                           // the GPU served; -1 until set_current or first use
  bool in_use_ = false;                      // memory, streams or events exist: the index is fixed
  std::unordered_map<void*, Block> blocks_;  // every reserved block
  std::map<cudaStream_t, std::multimap<size_t, void*>> free_;  // cached, per stream by size
  std::vector<Pending> pending_;                               // freed across streams
  std::vector<cudaEvent_t> spare_events_;
  dspp::DeviceMemoryStats stats_{};  // struct_size is set by memory_stats()

  std::mutex staging_mutex_;
  Staging staging_[2];

  // Declared last, so destroyed first (before the members above): it holds no memory between
  // calls, only its cuBLASLt handle.
  std::unique_ptr<dspp::DeviceKernels, void (*)(dspp::DeviceKernels*) noexcept> kernels_;
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Device, CudaDevice>(
        DSPP_KIND_DEVICE, "cuda", "1.0.0",
        "One CUDA GPU: caching allocator (per-stream size classes, no cudaMalloc in steady state), "
        "streams, events, staged host/device copies, memory statistics; layer kernels (cuBLASLt "
        "GEMM with epilogues, LayerNorm, GELU, flash-style causal attention, cross-entropy, "
        "embedding)."),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_device_cuda", kPlugins)
