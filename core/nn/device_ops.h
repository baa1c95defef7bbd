// What the layers share on a GPU: the current device's kernels, one failure message shape (the
// layer and the kernel), moving an input onto the device in the layer's dtype, and the elementwise
// helpers. A layer runs on the GPU when its parameters (or, without parameters, its input) live
// there; activations then take the parameters' dtype (bf16/fp16 under mixed precision, f32
// otherwise) and parameter gradients stay f32.
#pragma once

#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/module.h>
#include <dspp/tensor.h>

#include <string>
#include <vector>

#include "device/compute_device.h"
#include "nn/check.h"

namespace dspp::nn::gpu {

inline bool on_gpu(const Tensor& t) {
  return t.defined() && t.device().type == DSPP_DEVICE_CUDA;
}

inline bool is_float(dspp_dtype d) {
  return d == DSPP_F32 || d == DSPP_BF16 || d == DSPP_F16;
}

inline DeviceKernels& kernels(const std::string& who) {
  return device::kernels(who.c_str());
}

// A kernel call's status; failures name the layer and the kernel, with the plugin's message.
inline void run(const std::string& who, dspp_status s, const char* op) {
  if (s != DSPP_OK) check_plugin(s, who + ": device kernel " + op);
}

// `x` on `dev` in `dtype`: a host f32 input is copied and cast; one already on the device must
// have that dtype (activations between layers do).
inline Tensor to_compute(const std::string& who, const char* what, const Tensor& x,
                         dspp_dtype dtype, dspp_device dev) {
  if (!x.defined() || x.dim() < 1) {
    throw Error(Errc::kInvalidArgument,
                who + ": " + what + " must have at least one dimension, got " + x.describe());
  }
  if (on_gpu(x)) {
    if (x.dtype() != dtype || x.device().index != dev.index) {
      throw Error(Errc::kInvalidArgument, who + ": " + what + " must be " + dtype_name(dtype) +
                                              " on " + device_name(dev) + ", got " + x.describe());
    }
    return x;
  }
  if (x.dtype() != dtype && (x.dtype() != DSPP_F32 || !is_float(dtype))) {
    throw Error(Errc::kInvalidArgument, who + ": " + what + " must be f32 or " + dtype_name(dtype) +
                                            ", got " + x.describe());
  }
  return x.to(dev, dtype);
}

// a + b (one shape, dtype and device) into a new tensor.
inline Tensor add(const std::string& who, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  const dspp_tensor_view va = a.view(), vb = b.view(), vo = out.view();
  run(who, kernels(who).add(&va, &vb, &vo, nullptr), "add");
  return out;
}

// `t` is exactly dtype[shape] on `dev` (a gradient must match the output it belongs to).
inline void require(const std::string& who, const char* what, const Tensor& t,
                    const std::vector<int64_t>& shape, dspp_dtype dtype, dspp_device dev) {
  if (!t.defined() || t.dtype() != dtype || t.device().type != dev.type ||
      t.device().index != dev.index || t.shape() != shape) {
    throw Error(Errc::kInvalidArgument, who + ": " + what + " must be " + shape_text(dtype, shape) +
                                            " " + device_name(dev) + ", got " + t.describe());
  }
}

}  // namespace dspp::nn::gpu
