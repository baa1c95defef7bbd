// The core's count of host memory in use, checked against DSPP_HOST_MEMORY_LIMIT (see
// HostMemoryStats in <dspp/tensor.h>). Every host allocation the core makes for tensors or for
// plugins goes through charge() first and uncharge() after freeing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dspp::host_memory {

int64_t limit();                     // 0: none
bool charge(size_t bytes);           // false (and nothing charged) past the limit
void charge_or_throw(size_t bytes);  // the error names DSPP_HOST_MEMORY_LIMIT
void uncharge(size_t bytes);

}  // namespace dspp::host_memory
