// The few device operations a ZeRO stage needs when the engine's flat buffers are GPU memory
// (ZeroSetup::device CUDA), built on the host's compute device (dspp::plugin::host_device()) and
// its kernels (DeviceKernels version >= 2). Header-only, like the rest of common/.
//
// Every operation is enqueued on the legacy default stream (nullptr), where the host runs its own
// layers, so they are ordered with the forward/backward that wrote the buffers and with whatever
// the host does next; nothing here waits except the device-to-host copy of a norm, which returns
// once the host holds the value.
#pragma once

#include <dspp/kinds/device.h>
#include <dspp/kinds/zero.h>
#include <dspp/plugin.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../../common/comm_types.h"

namespace dspp::zero_common {

using plugin::pass_through;
using plugin::StatusError;

inline bool is_cuda(const dspp_device& d) {
  return d.type == DSPP_DEVICE_CUDA;
}
inline bool same_device(const dspp_device& a, const dspp_device& b) {
  return a.type == b.type && a.index == b.index;
}
inline std::string where_text(const dspp_device& d) {
  if (d.type == DSPP_DEVICE_CPU) return "cpu";
  if (d.type == DSPP_DEVICE_CUDA) return "cuda:" + std::to_string(d.index);
  return "device type " + std::to_string(d.type);
}
inline const char* dtype_text(int32_t dtype) {
  comm_types::DtypeInfo i{};
  return comm_types::dtype_info(dtype, &i) ? i.name : "unknown dtype";
}
// Bytes per element of a float dtype (f32, bf16, f16, f64).
inline int64_t element_bytes(int32_t dtype) {
  comm_types::DtypeInfo i{};
  if (!comm_types::dtype_info(dtype, &i)) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero: unknown dtype " + std::to_string(dtype));
  }
  return static_cast<int64_t>(i.size);
}

// A 1-d view of `n` elements of `dtype` at `data` on device `where`.
inline dspp_tensor_view device_view(void* data, int32_t dtype, int64_t n, dspp_device where) {
  dspp_tensor_view v{};
  v.data = data;
  v.dtype = dtype;
  v.ndim = 1;
  v.shape[0] = n;
  v.device = where;
  return v;
}

// Elements [offset, offset + n) of a flat view of any dtype (the view's own dtype and device).
inline dspp_tensor_view slice_of(const dspp_tensor_view& v, int64_t offset, int64_t n) {
  dspp_tensor_view s = v;
  s.data = static_cast<char*>(v.data) + offset * element_bytes(v.dtype);
  s.ndim = 1;
  s.shape[0] = n;
  return s;
}

// The host's compute device and its kernels, checked once at a stage's init.
struct DeviceOps {
  const dspp_host_api* host = nullptr;  // for tagging allocations (plugin::MemoryCategory)
  Device* dev = nullptr;
  DeviceKernels* k = nullptr;
  dspp_device where{DSPP_DEVICE_CPU, 0};

  // Fails (DSPP_ERR_NOT_SUPPORTED, naming `who`) when the host gives no device, or one whose
  // kernels are older than version 2 (sum_squares).
  static DeviceOps of(const dspp_host_api* host, dspp_device where, const char* who) {
    DeviceOps ops;
    ops.host = host;
    ops.dev = static_cast<Device*>(plugin::host_device(host));
    if (!ops.dev) {
      throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                        std::string(who) + ": the flat buffers are on " + where_text(where) +
                            " but the host gives no compute device (dspp_host_api::device is "
                            "unset: a host older than plugin ABI 1.2, or one computing on the "
                            "CPU); run with --device cpu");
    }
    ops.k = ops.dev->kernels();
    if (!ops.k || ops.k->version() < 2) {
      throw StatusError(DSPP_ERR_NOT_SUPPORTED,
                        std::string(who) + ": the host's device plugin has " +
                            (ops.k ? "kernels of version " + std::to_string(ops.k->version())
                                   : std::string("no kernels")) +
                            "; ZeRO on " + where_text(where) +
                            " needs version 2 or later (sum_squares); update the device plugin "
                            "or run with --device cpu");
    }
    ops.where = where;
    return ops;
  }

  // x *= c in place (any float dtype); nothing when c is 1 or x is empty.
  void scale(const dspp_tensor_view& x, float c) const {
    if (c == 1.0f || x.shape[0] == 0) return;
    pass_through(k->scale(&x, c, &x, nullptr));
  }
  // to = from converted (rounded to nearest even) between f32, bf16 and f16; a plain
  // device-to-device copy when the dtypes are equal.
  void cast(const dspp_tensor_view& from, const dspp_tensor_view& to) const {
    if (from.shape[0] != to.shape[0]) {
      throw StatusError(DSPP_ERR_INTERNAL, "zero: device cast of " + std::to_string(from.shape[0]) +
                                               " elements into " + std::to_string(to.shape[0]));
    }
    if (from.shape[0] == 0) return;
    if (from.dtype == to.dtype) {
      if (from.data != to.data) {
        pass_through(dev->copy(to.data, from.data,
                               static_cast<size_t>(from.shape[0] * element_bytes(from.dtype)),
                               nullptr));
      }
      return;
    }
    pass_through(k->cast(&from, &to, nullptr));
  }
  // Every byte of the view set to zero.
  void zero(const dspp_tensor_view& x) const {
    const int64_t n = x.shape[0];
    if (n == 0) return;
    pass_through(dev->memset(x.data, 0, static_cast<size_t>(n * element_bytes(x.dtype)), nullptr));
  }
  // The f64 scalar `acc` (one element of device memory) = the sum of squares of the elements of
  // `flat` in `ranges` ([begin, end) pairs), each range added in turn in a fixed order; then one
  // device-to-host copy. 0 when there are no ranges. A non-finite element makes it non-finite.
  template <class Ranges>
  double sum_squares(const dspp_tensor_view& flat, const Ranges& ranges,
                     const dspp_tensor_view& acc) const {
    sum_squares_into(flat, ranges, acc);
    return read_f64(acc);
  }
  // As sum_squares, without the copy to the host: `acc` holds the sum afterwards (0 when there
  // are no ranges), for a reduction over ranks on the device before it is read.
  template <class Ranges>
  void sum_squares_into(const dspp_tensor_view& flat, const Ranges& ranges,
                        const dspp_tensor_view& acc) const {
    bool any = false;
    for (const auto& r : ranges) {
      if (r.end <= r.begin) continue;
      const dspp_tensor_view part = slice_of(flat, r.begin, r.end - r.begin);
      pass_through(k->sum_squares(&part, &acc, any ? 1 : 0, nullptr));
      any = true;
    }
    if (!any) zero(acc);
  }
  // The f64 at `acc` (device memory), once the work before it is done: one device-to-host copy,
  // which returns once the host holds the value.
  double read_f64(const dspp_tensor_view& acc) const {
    double out = 0.0;
    pass_through(dev->copy(&out, acc.data, sizeof out, nullptr));
    return out;
  }
  // acc += x, element by element (one dtype and length each; f32 in the stages).
  void add(const dspp_tensor_view& acc, const dspp_tensor_view& x) const {
    if (acc.shape[0] != x.shape[0]) {
      throw StatusError(DSPP_ERR_INTERNAL, "zero: device add of " + std::to_string(x.shape[0]) +
                                               " elements into " + std::to_string(acc.shape[0]));
    }
    if (x.shape[0] == 0) return;
    pass_through(k->add(&acc, &x, &acc, nullptr));
  }
  // The f32 view `x` rounded in place to the 16-bit dtype of `scratch` (a cast there and back,
  // round to nearest even; fp16 overflows to inf), through `scratch` a piece at a time, so any
  // scratch of at least one element does (the pieces follow each other on the one stream).
  void round_through(const dspp_tensor_view& x, const dspp_tensor_view& scratch) const {
    const int64_t n = x.shape[0], step = scratch.shape[0];
    if (n == 0) return;
    if (step <= 0) {
      throw StatusError(DSPP_ERR_INTERNAL, "zero: no scratch to round a gradient through");
    }
    for (int64_t off = 0; off < n; off += step) {
      const int64_t m = std::min(step, n - off);
      const dspp_tensor_view part = slice_of(x, off, m);
      const dspp_tensor_view half = slice_of(scratch, 0, m);
      cast(part, half);
      cast(half, part);
    }
  }
};

// Device memory of `n` elements of one dtype, freed (stream-ordered, on the legacy default
// stream) when reset or destroyed. `category` (DSPP_MEM_*) says what it holds, for the caching
// allocator's per-category counters.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  // Not initialised: the caller writes it before reading.
  void reset(const DeviceOps& ops, int32_t category, int32_t dtype, int64_t n) {
    release();
    if (n <= 0) return;
    void* p = nullptr;
    {
      const plugin::MemoryCategory tag(ops.host, category);
      pass_through(ops.dev->alloc(static_cast<size_t>(n * element_bytes(dtype)), nullptr, &p));
    }
    if (!p) {
      throw StatusError(DSPP_ERR_OUT_OF_MEMORY, "zero: no device memory for " + std::to_string(n) +
                                                    " " + dtype_text(dtype) + " elements");
    }
    dev_ = ops.dev;
    view_ = device_view(p, dtype, n, ops.where);
  }
  void release() {
    // A failure has nowhere to go here (the device has recorded its message).
    if (view_.data) (void)dev_->free(view_.data, nullptr);
    view_ = dspp_tensor_view{};
    dev_ = nullptr;
  }
  bool empty() const { return view_.data == nullptr; }
  int64_t size() const { return view_.data ? view_.shape[0] : 0; }
  int64_t bytes() const { return view_.data ? view_.shape[0] * element_bytes(view_.dtype) : 0; }
  const dspp_tensor_view& view() const { return view_; }

 private:
  Device* dev_ = nullptr;
  dspp_tensor_view view_{};
};

// A run [begin, end) of the flat buffer.
struct FlatRange {
  int64_t begin;
  int64_t end;
};

// The segments (offsets relative to their flat buffer) as ranges in flat order, adjacent ones
// merged: one kernel launch per range instead of one per parameter.
inline std::vector<FlatRange> merged_ranges(const std::vector<ParamSegment>& segs) {
  std::vector<FlatRange> r;
  r.reserve(segs.size());
  for (const ParamSegment& s : segs) {
    if (s.numel > 0) r.push_back(FlatRange{s.offset_in_flat, s.offset_in_flat + s.numel});
  }
  std::sort(r.begin(), r.end(),
            [](const FlatRange& a, const FlatRange& b) { return a.begin < b.begin; });
  std::vector<FlatRange> out;
  for (const FlatRange& x : r) {
    if (!out.empty() && out.back().end >= x.begin) {
      out.back().end = std::max(out.back().end, x.end);
    } else {
      out.push_back(x);
    }
  }
  return out;
}

}  // namespace dspp::zero_common
