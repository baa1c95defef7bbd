// Plugin kind `device`: memory, streams, events and copies of an accelerator (CUDA). libdspp links
// no device runtime itself; a CPU-only machine simply has no device plugin loaded (or one whose
// count() is 0).
//
// One Device object serves one GPU, chosen with set_current() (the engine passes LOCAL_RANK)
// before anything else; every later call runs on that GPU, from any thread. Streams and events are
// the runtime's own handles (cudaStream_t, cudaEvent_t) passed as void*; NULL as a stream means
// the runtime's default (legacy) stream.
#ifndef DSPP_KINDS_DEVICE_H
#define DSPP_KINDS_DEVICE_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

// The caching allocator's counters (bytes unless named otherwise). `struct_size` is set by the
// caller; fields are only ever appended.
struct DeviceMemoryStats {
  uint32_t struct_size;
  uint32_t device;               // the GPU these describe
  uint64_t allocated;            // held by callers now (block sizes, i.e. rounded up)
  uint64_t peak_allocated;       // the most `allocated` has been (since reset_peak_stats)
  uint64_t requested;            // held by callers now, as they asked (not rounded)
  uint64_t reserved;             // taken from the runtime: allocated + cached
  uint64_t peak_reserved;        // (since reset_peak_stats)
  uint64_t device_mallocs;       // runtime allocations made so far (cudaMalloc calls that worked)
  uint64_t device_frees;         // runtime frees made so far (cache released)
  uint64_t cache_hits;           // alloc() served from the cache
  uint64_t alloc_retries;        // a runtime allocation failed, the cache was released, retried
  uint64_t ooms;                 // alloc() calls that failed with DSPP_ERR_OUT_OF_MEMORY
  uint64_t device_free_memory;   // what the GPU reports free now (all processes)
  uint64_t device_total_memory;  // the GPU's memory
};

class Device {
 public:
  // Visible GPUs; 0 when the runtime loads but sees no GPU or no driver.
  virtual int32_t count() const noexcept = 0;
  // Chooses the GPU this object serves and makes it current on the calling thread. Once memory,
  // streams or events exist, another index is an error.
  virtual dspp_status set_current(int32_t index) noexcept = 0;

  // Device memory from the caching allocator, ordered on `stream`: the block may be reused by a
  // later alloc() on the same stream as soon as it is freed (stream order makes that safe). At
  // least 256-byte aligned. 0 bytes gives NULL. DSPP_ERR_OUT_OF_MEMORY says how much was asked,
  // in use and free.
  virtual dspp_status alloc(size_t bytes, void* stream, void** out) noexcept = 0;
  // Returns a block to the cache. `stream` is the stream whose work last used it: the allocation
  // stream (or NULL for it) makes it reusable at once; another stream makes it reusable only once
  // that stream's work up to now has finished (an event is recorded there).
  virtual dspp_status free(void* ptr, void* stream) noexcept = 0;
  // Releases every cached (unused) block to the runtime.
  virtual dspp_status empty_cache() noexcept = 0;
  virtual dspp_status memory_stats(DeviceMemoryStats* out) const noexcept = 0;
  virtual dspp_status reset_peak_stats() noexcept = 0;

  // Page-locked host memory (for fast, asynchronous copies). Not cached.
  virtual dspp_status alloc_host(size_t bytes, void** out) noexcept = 0;
  virtual dspp_status free_host(void* ptr) noexcept = 0;

  // Streams that do not synchronise with the default stream.
  virtual dspp_status create_stream(void** out) noexcept = 0;
  virtual dspp_status destroy_stream(void* stream) noexcept = 0;
  // Waits for the stream's work; NULL waits for the whole GPU.
  virtual dspp_status synchronize(void* stream) noexcept = 0;

  // Events: `timing` non-zero makes elapsed_ms() usable (timing events cost more).
  virtual dspp_status create_event(int32_t timing, void** out) noexcept = 0;
  virtual dspp_status destroy_event(void* event) noexcept = 0;
  virtual dspp_status record_event(void* event, void* stream) noexcept = 0;
  // Work issued on `stream` after this call waits for the event (the host does not wait).
  virtual dspp_status stream_wait_event(void* stream, void* event) noexcept = 0;
  // *done = 1 when the work before the event has finished.
  virtual dspp_status query_event(void* event, int32_t* done) noexcept = 0;
  virtual dspp_status synchronize_event(void* event) noexcept = 0;
  virtual dspp_status elapsed_ms(void* start, void* end, float* ms) noexcept = 0;

  // Copies `bytes` between any two of host memory (page-locked or not) and this GPU's memory,
  // ordered on `stream`. Page-locked host memory and device memory copy asynchronously. Pageable
  // host memory goes through page-locked staging buffers: host to device returns once the source
  // has been read (the device side still completes in stream order); device to host returns once
  // the destination holds the data.
  virtual dspp_status copy(void* dst, const void* src, size_t bytes, void* stream) noexcept = 0;
  // Sets `bytes` bytes of device memory to `value`, ordered on `stream`.
  virtual dspp_status memset(void* dst, int32_t value, size_t bytes, void* stream) noexcept = 0;

 protected:
  ~Device() = default;
};

}  // namespace dspp
#endif
#endif
