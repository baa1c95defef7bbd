// Plugin kind `device`: memory, streams and events of an accelerator (CUDA). libdspp links no
// device runtime itself; a CPU-only machine simply has no device plugin loaded.
#ifndef DSPP_KINDS_DEVICE_H
#define DSPP_KINDS_DEVICE_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

class Device {
 public:
  virtual int32_t count() const noexcept = 0;  // 0 when the runtime loads but sees no device
  virtual dspp_status set_current(int32_t index) noexcept = 0;
  virtual dspp_status alloc(size_t bytes, void* stream, void** out) noexcept = 0;
  virtual dspp_status free(void* ptr, void* stream) noexcept = 0;
  virtual dspp_status create_stream(void** out) noexcept = 0;
  virtual dspp_status destroy_stream(void* stream) noexcept = 0;
  virtual dspp_status synchronize(void* stream) noexcept = 0;
  // Copies between host and device or within a device, ordered on stream.
  virtual dspp_status copy(void* dst, const void* src, size_t bytes, void* stream) noexcept = 0;
  // Memory in use and reserved by the caching allocator, in bytes.
  virtual dspp_status memory_stats(size_t* in_use, size_t* reserved) const noexcept = 0;

 protected:
  ~Device() = default;
};

}  // namespace dspp
#endif
#endif
