// Tensor: shape, dtype and device over a refcounted Storage. Slices and reshapes share the
// Storage, so a ZeRO partition or bucket is a view of one flat buffer, not a copy.
#include <dspp/error.h>
#include <dspp/tensor.h>

#include <cstring>
#include <string>
#include <utility>

#include "device/compute_device.h"

namespace dspp {

// One allocation. It remembers its allocator, so replacing the device's allocator later does not
// send old blocks to the new one.
class Storage {
 public:
  Storage(size_t bytes, dspp_device device)
      : allocator_(&allocator_for(static_cast<dspp_device_type>(device.type))),
        bytes_(bytes),
        device_(device) {
    ptr_ = allocator_->allocate(bytes, device);
  }
  // Memory someone else owns (Tensor::wrap): never freed here.
  Storage(void* ptr, size_t bytes, dspp_device device)
      : allocator_(nullptr), bytes_(bytes), device_(device), ptr_(ptr) {}
  ~Storage() {
    if (allocator_) allocator_->deallocate(ptr_, bytes_, device_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  Allocator* allocator_;
  size_t bytes_;
  dspp_device device_;
  void* ptr_ = nullptr;
};

size_t dtype_size(dspp_dtype dtype) {
  switch (dtype) {
    case DSPP_F32:
      return 4;
    case DSPP_F16:
      return 2;
    case DSPP_BF16:
      return 2;
    case DSPP_I32:
      return 4;
    case DSPP_I64:
      return 8;
    case DSPP_U8:
      return 1;
    case DSPP_F64:
      return 8;
  }
  throw Error(Errc::kInvalidArgument, "unknown dtype " + std::to_string(dtype));
}

const char* dtype_name(dspp_dtype dtype) {
  switch (dtype) {
    case DSPP_F32:
      return "f32";
    case DSPP_F16:
      return "f16";
    case DSPP_BF16:
      return "bf16";
    case DSPP_I32:
      return "i32";
    case DSPP_I64:
      return "i64";
    case DSPP_U8:
      return "u8";
    case DSPP_F64:
      return "f64";
  }
  return "unknown";
}

std::string device_name(dspp_device device) {
  switch (device.type) {
    case DSPP_DEVICE_CPU:
      return "cpu";
    case DSPP_DEVICE_CUDA:
      return "cuda:" + std::to_string(device.index);
  }
  return "device" + std::to_string(device.type) + ":" + std::to_string(device.index);
}

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string describe_parts(dspp_dtype dtype, const std::vector<int64_t>& shape,
                           dspp_device device) {
  return std::string(dtype_name(dtype)) + shape_str(shape) + " " + device_name(device);
}

// Checks a shape a tensor is made with: at most DSPP_MAX_DIMS dims (the plugin view's limit), no
// negative sizes, and an element count that does not overflow.
int64_t checked_numel(const std::vector<int64_t>& shape) {
  if (shape.size() > DSPP_MAX_DIMS) {
    throw Error(Errc::kInvalidArgument, "tensor shape " + shape_str(shape) + " has more than " +
                                            std::to_string(DSPP_MAX_DIMS) + " dimensions");
  }
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) {
      throw Error(Errc::kInvalidArgument, "invalid tensor shape " + shape_str(shape));
    }
  }
  return n;
}

}  // namespace

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::numel() const {
  return numel_of(shape_);
}

Tensor Tensor::empty(std::vector<int64_t> shape, dspp_dtype dtype, dspp_device device) {
  int64_t n = checked_numel(shape);
  size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(n), dtype_size(dtype), &bytes)) {
    throw Error(Errc::kInvalidArgument, "tensor shape " + shape_str(shape) + " is too large");
  }
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  try {
    t.storage_ = std::make_shared<Storage>(bytes, device);
  } catch (const Error& e) {
    // Name the tensor: "out of host memory allocating N bytes for f32[...] cpu".
    throw Error(e.code(),
                std::string(e.what()) + " for " + describe_parts(dtype, t.shape_, device));
  }
  return t;
}

Tensor Tensor::wrap(const dspp_tensor_view& v) {
  std::vector<int64_t> shape(v.shape, v.shape + v.ndim);
  const dspp_dtype dtype = static_cast<dspp_dtype>(v.dtype);
  const int64_t n = checked_numel(shape);
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = v.device;
  t.storage_ =
      std::make_shared<Storage>(v.data, static_cast<size_t>(n) * dtype_size(dtype), v.device);
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, dspp_dtype dtype, dspp_device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  t.zero_();
  return t;
}

void* Tensor::data() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->ptr()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::slice(int64_t offset, std::vector<int64_t> shape) const {
  int64_t n = checked_numel(shape);
  if (!defined() || offset < 0 || offset > numel() || n > numel() - offset) {
    throw Error(Errc::kInvalidArgument, "slice of " + std::to_string(n) + " elements at offset " +
                                            std::to_string(offset) + " is outside " + describe());
  }
  Tensor t = *this;
  t.offset_ = offset_ + offset;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  if (!defined() || checked_numel(shape) != numel()) {
    throw Error(Errc::kInvalidArgument, "cannot reshape " + describe() + " to " + shape_str(shape));
  }
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

void Tensor::zero_() {
  if (!defined()) return;
  device::zero_bytes(data(), device_, nbytes());
}

void Tensor::copy_from(const Tensor& src) {
  if (!defined() || !src.defined() || src.dtype_ != dtype_ || src.numel() != numel()) {
    throw Error(Errc::kInvalidArgument, "copy_from: cannot copy " + src.describe() + " into " +
                                            describe() +
                                            " (the dtypes and element counts must match)");
  }
  device::copy_bytes(data(), device_, src.data(), src.device_, nbytes());
}

Tensor Tensor::to(dspp_device device) const {
  if (!defined() || (device.type == device_.type && device.index == device_.index)) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(dspp_device device, dspp_dtype dtype) const {
  if (!defined() || dtype == dtype_) return to(device);
  // Conversions run on the GPU, with the device kernels' cast (round to nearest even).
  const bool here = device_.type == DSPP_DEVICE_CUDA;
  if (!here && device.type != DSPP_DEVICE_CUDA) {
    throw Error(Errc::kInvalidArgument, "to(" + device_name(device) + ", " + dtype_name(dtype) +
                                            ") of " + describe() +
                                            ": dtype conversions run on a GPU only");
  }
  Tensor src = here ? *this : to(device);
  Tensor out = empty(shape_, dtype, src.device_);
  const dspp_tensor_view vs = src.view(), vo = out.view();
  check_plugin(device::kernels("Tensor::to").cast(&vs, &vo, nullptr), "Tensor::to cast");
  return out.to(device);
}

dspp_tensor_view Tensor::view(void* stream) const {
  dspp_tensor_view v{};
  v.data = data();
  v.dtype = dtype_;
  v.ndim = static_cast<int32_t>(shape_.size());
  for (size_t i = 0; i < shape_.size(); ++i) v.shape[i] = shape_[i];
  v.device = device_;
  v.stream = stream;
  return v;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return describe_parts(dtype_, shape_, device_);
}

}  // namespace dspp
