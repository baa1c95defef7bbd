// Core-internal side of <dspp/device.h>: what Tensor, the layers and the host API use.
#pragma once

#include <dspp/abi.h>
#include <dspp/device.h>
#include <dspp/kinds/device.h>

#include <cstddef>
#include <cstring>

namespace dspp::device {

// The plugin object serving `where` (a CUDA device); an error naming `what` when the process
// computes elsewhere.
Device& require(dspp_device where, const char* what);
// The current GPU's layer kernels; an error naming `what` when no GPU was chosen.
DeviceKernels& kernels(const char* what);
// Plain copies between any two of host and device memory (in stream order on the device; a
// copy to the host returns once the host holds the data).
void copy_bytes(void* dst, dspp_device dst_dev, const void* src, dspp_device src_dev, size_t n);
void zero_bytes(void* dst, dspp_device dev, size_t n);
// dspp_host_api::device.
void* host_device_callback(void* self);
// dspp_host_api::memory_category: the calling thread's category of device allocations, set on
// the compute device when its plugin has ABI 1.3 (else nothing, and DSPP_MEM_OTHER back). The
// core tags its own allocations with dspp::plugin::MemoryCategory over host_api(), as plugins do.
int32_t host_memory_category_callback(void* self, int32_t category);

}  // namespace dspp::device
