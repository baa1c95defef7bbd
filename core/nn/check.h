// Argument checks shared by the layers: one message shape, naming the layer and its place. The
// name is built only on failure (path() walks the tree).
#pragma once

#include <dspp/error.h>
#include <dspp/module.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dspp::nn {

inline std::string where(const Module& m) {
  std::string p = m.path();
  return m.type_name() + (p.empty() ? std::string() : " '" + p + "'");
}

[[noreturn]] inline void fail(const Module& m, const std::string& msg) {
  throw Error(Errc::kInvalidArgument, where(m) + ": " + msg);
}

inline std::string shape_text(dspp_dtype dtype, const std::vector<int64_t>& shape) {
  std::string s = std::string(dtype_name(dtype)) + "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A host tensor of `dtype` with at least one dimension; returns its last dimension.
inline int64_t require_host(const Module& m, const char* what, const Tensor& t, dspp_dtype dtype) {
  if (!t.defined() || t.dtype() != dtype || t.device().type != DSPP_DEVICE_CPU || t.dim() < 1) {
    fail(m, std::string(what) + " must be a " + dtype_name(dtype) +
                " cpu tensor with at least one dimension, got " + t.describe());
  }
  return t.size(-1);
}

// `t` is exactly dtype[shape] on the CPU (a gradient must match the output it belongs to).
inline void require_shape(const Module& m, const char* what, const Tensor& t,
                          const std::vector<int64_t>& shape, dspp_dtype dtype = DSPP_F32) {
  if (!t.defined() || t.dtype() != dtype || t.device().type != DSPP_DEVICE_CPU ||
      t.shape() != shape) {
    fail(m,
         std::string(what) + " must be " + shape_text(dtype, shape) + " cpu, got " + t.describe());
  }
}

// Backward needs what forward saved.
inline void require_forward(const Module& m, const Tensor& saved) {
  if (!saved.defined()) fail(m, "backward called before forward");
}

// The shape of `x` with its last dimension replaced.
inline std::vector<int64_t> with_last(const Tensor& x, int64_t last) {
  std::vector<int64_t> s = x.shape();
  s.back() = last;
  return s;
}

}  // namespace dspp::nn
