// device/cuda: the DeviceKernels of one CudaDevice (kernels.cpp).
#pragma once

#include <dspp/abi.h>
#include <dspp/kinds/device.h>

#include <functional>

namespace dspp::cuda {

// `device` gives the scratch memory; `bind` makes its GPU current on the calling thread. Touches
// no CUDA API until a kernel is called.
dspp::DeviceKernels* create_kernels(const dspp_host_api* host, dspp::Device& device,
                                    std::function<void()> bind);
void destroy_kernels(dspp::DeviceKernels* kernels) noexcept;

}  // namespace dspp::cuda
