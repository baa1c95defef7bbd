// Tensors: typed, contiguous, row-major memory on a device, owned by the core's allocator and
// shared by reference. Views share storage (ZeRO partitions and buckets are views of one flat
// buffer). `view()` hands the plain dspp_tensor_view that crosses the plugin boundary.
#ifndef DSPP_TENSOR_H
#define DSPP_TENSOR_H

#include <dspp/abi.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace dspp {

size_t dtype_size(dspp_dtype dtype);
const char* dtype_name(dspp_dtype dtype);

inline dspp_device cpu_device() {
  return dspp_device{DSPP_DEVICE_CPU, 0};
}
std::string device_name(dspp_device device);  // "cpu", "cuda:0"

// Memory for tensors on one device kind. The CPU one is built in; the CUDA device plugin
// registers its caching allocator when loaded.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes, dspp_device device) = 0;  // throws dspp::Error when out
  virtual void deallocate(void* ptr, size_t bytes, dspp_device device) noexcept = 0;
};
// Installs the allocator for a device type (nullptr restores the default for the CPU).
void set_allocator(dspp_device_type type, Allocator* allocator);
Allocator& allocator_for(dspp_device_type type);

// Host memory held through the core (tensors on the CPU and plugins' host buffers), and the limit
// DSPP_HOST_MEMORY_LIMIT sets (bytes, with an optional K, M or G suffix; unset or 0: none). An
// allocation past the limit fails with an error naming the variable: a test knob that stands in
// for a rank's memory (a model built whole would not fit; built under zero::Init it does).
struct HostMemoryStats {
  int64_t in_use = 0;
  int64_t peak = 0;  // since the start or reset_host_memory_peak()
  int64_t limit = 0;
};
HostMemoryStats host_memory_stats();
void reset_host_memory_peak();

class Storage;

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage
  static Tensor empty(std::vector<int64_t> shape, dspp_dtype dtype = DSPP_F32,
                      dspp_device device = cpu_device());
  static Tensor zeros(std::vector<int64_t> shape, dspp_dtype dtype = DSPP_F32,
                      dspp_device device = cpu_device());
  // A tensor over memory someone else owns (a plugin's buffer, a view that crossed the ABI). It
  // never frees it: the owner must keep it alive while the tensor is used.
  static Tensor wrap(const dspp_tensor_view& view);

  bool defined() const { return storage_ != nullptr; }
  dspp_dtype dtype() const { return dtype_; }
  dspp_device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const { return shape_.at(d < 0 ? d + dim() : d); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* data() const;
  template <class T>
  T* data() const {
    return static_cast<T*>(data());
  }

  // A tensor sharing this storage: `numel(shape)` elements starting `offset` elements in.
  Tensor slice(int64_t offset, std::vector<int64_t> shape) const;
  // The same elements with another shape (numel must match).
  Tensor reshape(std::vector<int64_t> shape) const;
  // Fills with zeros (on a GPU: in stream order).
  void zero_();
  // Copies src's elements into this tensor: one dtype and element count, any two devices (a
  // copy to the host returns once the host holds the data).
  void copy_from(const Tensor& src);
  // This tensor on `device`: itself when it is already there, else a copy.
  Tensor to(dspp_device device) const;
  // ... and converted to `dtype` (f32, bf16, f16; the conversion runs on the GPU, so one side
  // must be a GPU).
  Tensor to(dspp_device device, dspp_dtype dtype) const;

  // The plain view that crosses the plugin boundary.
  dspp_tensor_view view(void* stream = nullptr) const;

  std::string describe() const;  // "f32[4, 3] cpu"

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  std::vector<int64_t> shape_;
  dspp_dtype dtype_ = DSPP_F32;
  dspp_device device_{DSPP_DEVICE_CPU, 0};
};

int64_t numel_of(const std::vector<int64_t>& shape);

}  // namespace dspp

#endif  // DSPP_TENSOR_H
