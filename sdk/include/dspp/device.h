// The accelerator this process computes on (DeepSpeed's get_accelerator()). A host application
// chooses it once, before initialize(); the engine then keeps the model's parameters, gradients
// and optimizer states in that device's memory and the layers run there. Without a call, or with
// "cpu", everything runs on the CPU as before.
#ifndef DSPP_DEVICE_H
#define DSPP_DEVICE_H

#include <dspp/abi.h>

#include <cstdint>
#include <string>

namespace dspp {

class Device;         // kinds/device.h
class DeviceKernels;  // kinds/device.h

// `request`: "cpu"; "cuda" (the GPU LOCAL_RANK names, as DeepSpeed's launcher sets it; an error
// when the device/cuda plugin is missing or sees no GPU); "cuda:N" (GPU N); "auto" (cuda when the
// plugin loads and sees a GPU, else cpu). Loads the device/cuda plugin from the plugin search
// path and installs its caching allocator for CUDA tensors. Choosing another GPU after one was
// chosen is an error; choosing the same one again is a no-op. Returns the device chosen.
dspp_device use_device(const std::string& request = "auto");
// cpu until use_device() chose a GPU.
dspp_device current_device();
// Waits for the work queued on the current device (nothing to wait for on the CPU).
void synchronize_device();

// The chosen GPU's plugin object and its layer kernels; null on the CPU.
Device* compute_device();
DeviceKernels* compute_kernels();

// What device memory holds, for the per-category counters (DSPP_MEM_* of <dspp/kinds/device.h>).
enum class MemoryCategory : int32_t {
  kOther = 0,           // kernel workspaces, scratch, anything untagged
  kParameters = 1,      // the model's working parameters (ZeRO-3: partition and gathers)
  kGradients = 2,       // the flat gradient buffer, a partition's accumulated gradient
  kOptimizerState = 3,  // optimizer states and fp32 master weights
  kActivations = 4,     // what forward and backward make
  kCommBuffers = 5,     // reduction buckets, staging for collectives
};
constexpr int kMemoryCategories = 6;
// "other", "parameters", "gradients", "optimizer states", "activations", "comm buffers".
const char* memory_category_name(MemoryCategory c);

// The caching allocator's counters of the current GPU (bytes); zeros on the CPU.
struct DeviceMemory {
  int64_t allocated = 0;
  int64_t peak_allocated = 0;
  int64_t reserved = 0;
  int64_t total = 0;  // the GPU's memory
  // Per MemoryCategory (index = its value): held now and the most held since the last reset
  // (block sizes, as `allocated`), and held now as the callers asked (not rounded to blocks).
  // Zeros with a device plugin older than ABI 1.3.
  int64_t category_allocated[kMemoryCategories] = {};
  int64_t category_peak[kMemoryCategories] = {};
  int64_t category_requested[kMemoryCategories] = {};
};
DeviceMemory device_memory();
void reset_device_peak_memory();

}  // namespace dspp

#endif  // DSPP_DEVICE_H
