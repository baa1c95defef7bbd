// The GPU path of ZeRO stages 0-3 and of the optimizers, run on every machine: a fake dspp::Device
// whose "device memory" is host memory and whose DeviceKernels (add, fill, scale, cast, an f32
// gemm without epilogues, version 2's sum_squares and adam_step, version 3's optimizer kernels;
// the layer kernels answer not supported) compute on the CPU by the formulas of
// <dspp/kinds/device.h>. It checks what the real device checks (views of its own live memory,
// CUDA device type, shapes and dtypes) and counts its blocks, so the plumbing (which buffer goes
// where, the order of the operations, frees) is tested here; the arithmetic of the real kernels is
// test_gpu_zero_stage0's, test_gpu_zero_stages's and test_gpu_optimizers', with the same scenarios
// (zero_device_scenario.h, optimizer_device_scenario.h). Also: what fails without a host device
// or with kernels older than an optimizer needs.
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "catch.h"
#include "optimizer_device_scenario.h"
#include "test_util.h"
#include "zero_device_scenario.h"

namespace {

dspp_status fail(dspp_status code, const std::string& msg) {
  const dspp_host_api* h = dspp::host_api();
  return h->set_error(h->self, code, ("fake device: " + msg).c_str());
}

class FakeDevice;

class FakeKernels final : public dspp::DeviceKernels {
 public:
  FakeKernels(FakeDevice& dev, uint32_t version) : dev_(dev), version_(version) {}
  uint32_t version() const noexcept override { return version_; }

  dspp_status gemm(const dspp_tensor_view* a, int32_t trans_a, const dspp_tensor_view* b,
                   int32_t trans_b, const dspp_tensor_view* c, float alpha, float beta,
                   int32_t epilogue, const dspp_tensor_view* bias, const dspp_tensor_view* pre_gelu,
                   uint32_t flags, void* stream) noexcept override;
  dspp_status bias_grad(const dspp_tensor_view*, const dspp_tensor_view*, int32_t,
                        void*) noexcept override {
    return none("bias_grad");
  }
  dspp_status layernorm_forward(const dspp_tensor_view*, const dspp_tensor_view*,
                                const dspp_tensor_view*, float, const dspp_tensor_view*,
                                const dspp_tensor_view*, const dspp_tensor_view*,
                                void*) noexcept override {
    return none("layernorm_forward");
  }
  dspp_status layernorm_backward(const dspp_tensor_view*, const dspp_tensor_view*,
                                 const dspp_tensor_view*, const dspp_tensor_view*,
                                 const dspp_tensor_view*, const dspp_tensor_view*,
                                 const dspp_tensor_view*, const dspp_tensor_view*,
                                 void*) noexcept override {
    return none("layernorm_backward");
  }
  dspp_status gelu_forward(const dspp_tensor_view*, const dspp_tensor_view*,
                           void*) noexcept override {
    return none("gelu_forward");
  }
  dspp_status gelu_backward(const dspp_tensor_view*, const dspp_tensor_view*,
                            const dspp_tensor_view*, void*) noexcept override {
    return none("gelu_backward");
  }
  dspp_status cross_entropy(const dspp_tensor_view*, const dspp_tensor_view*, int64_t, float,
                            const dspp_tensor_view*, const dspp_tensor_view*,
                            const dspp_tensor_view*, void*) noexcept override {
    return none("cross_entropy");
  }
  dspp_status embedding_forward(const dspp_tensor_view*, const dspp_tensor_view*,
                                const dspp_tensor_view*, void*) noexcept override {
    return none("embedding_forward");
  }
  dspp_status embedding_backward(const dspp_tensor_view*, const dspp_tensor_view*,
                                 const dspp_tensor_view*, void*) noexcept override {
    return none("embedding_backward");
  }
  dspp_status attention_forward(const dspp_tensor_view*, int32_t, const dspp_tensor_view*,
                                const dspp_tensor_view*, void*) noexcept override {
    return none("attention_forward");
  }
  dspp_status fill_uniform(const dspp_tensor_view*, uint64_t, uint64_t, float, float,
                           void*) noexcept override {
    return none("fill_uniform");
  }
  dspp_status fill_normal(const dspp_tensor_view*, uint64_t, uint64_t, float, float,
                          void*) noexcept override {
    return none("fill_normal");
  }
  dspp_status attention_backward(const dspp_tensor_view*, const dspp_tensor_view*,
                                 const dspp_tensor_view*, const dspp_tensor_view*, int32_t,
                                 const dspp_tensor_view*, void*) noexcept override {
    return none("attention_backward");
  }
  dspp_status add(const dspp_tensor_view* a, const dspp_tensor_view* b, const dspp_tensor_view* out,
                  void* stream) noexcept override;
  dspp_status scale(const dspp_tensor_view* x, float alpha, const dspp_tensor_view* out,
                    void* stream) noexcept override;
  dspp_status fill(const dspp_tensor_view* out, double value, void* stream) noexcept override;
  dspp_status cast(const dspp_tensor_view* x, const dspp_tensor_view* out,
                   void* stream) noexcept override;
  dspp_status sum_squares(const dspp_tensor_view* x, const dspp_tensor_view* out,
                          int32_t accumulate, void* stream) noexcept override;
  dspp_status adam_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                        const dspp_tensor_view* m, const dspp_tensor_view* v,
                        const dspp::DeviceAdamConsts* k, void* stream) noexcept override;
  dspp_status sgd_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                       const dspp_tensor_view* buf, const dspp::DeviceSgdConsts* k,
                       void* stream) noexcept override;
  dspp_status lion_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                        const dspp_tensor_view* m, const dspp::DeviceLionConsts* k,
                        void* stream) noexcept override;
  dspp_status adagrad_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                           const dspp_tensor_view* sum, const dspp::DeviceAdagradConsts* k,
                           void* stream) noexcept override;
  dspp_status lamb_moments(const dspp_tensor_view* p, const dspp_tensor_view* g,
                           const dspp_tensor_view* m, const dspp_tensor_view* v,
                           const dspp::DeviceLambConsts* k, const dspp_tensor_view* u,
                           void* stream) noexcept override;
  dspp_status lamb_apply(const dspp_tensor_view* p, const dspp_tensor_view* m,
                         const dspp_tensor_view* v, const dspp::DeviceLambConsts* k, float scale,
                         void* stream) noexcept override;
  dspp_status muon_momentum(const dspp_tensor_view* g, const dspp_tensor_view* m,
                            const dspp_tensor_view* u, float beta, float one_minus_beta,
                            void* stream) noexcept override;
  dspp_status decayed_update(const dspp_tensor_view* p, const dspp_tensor_view* u, float decay,
                             float step, void* stream) noexcept override;
  dspp_status transpose(const dspp_tensor_view* x, const dspp_tensor_view* out,
                        void* stream) noexcept override;
  dspp_status add_diagonal(const dspp_tensor_view* x, float value, void* stream) noexcept override;
  dspp_status divide_by_norm(const dspp_tensor_view* x, const dspp_tensor_view* sum_sq, float eps,
                             const dspp_tensor_view* out, void* stream) noexcept override;

  int64_t calls = 0;
  int64_t gemms = 0;

 private:
  static dspp_status none(const char* what) {
    return fail(DSPP_ERR_NOT_SUPPORTED, std::string(what) + " is not faked");
  }
  // A view of the device's live memory, of a float dtype (or `also`), on the legacy stream.
  bool ok(const dspp_tensor_view* v, const char* name, void* stream, std::string* why,
          int32_t also = -1) const;
  // Views of the device's live memory, all f32 with p's element count, pairwise distinct (the
  // version 3 optimizer kernels' contract); p is the first.
  bool f32_like(std::initializer_list<std::pair<const dspp_tensor_view*, const char*>> views,
                void* stream, std::string* why) const;

  FakeDevice& dev_;
  uint32_t version_;
};

class FakeDevice final : public dspp::Device {
 public:
  explicit FakeDevice(uint32_t kernels_version = DSPP_DEVICE_KERNELS_VERSION)
      : kernels_(*this, kernels_version) {}
  ~FakeDevice() {
    for (auto& [p, n] : blocks_) std::free(const_cast<void*>(p));
    for (void* p : host_blocks_) std::free(p);
  }
  FakeDevice(const FakeDevice&) = delete;
  FakeDevice& operator=(const FakeDevice&) = delete;

  int32_t count() const noexcept override { return 1; }
  dspp_status set_current(int32_t index) noexcept override {
    return index == 0 ? DSPP_OK : fail(DSPP_ERR_INVALID_ARGUMENT, "one device only");
  }
  dspp_status alloc(size_t bytes, void* stream, void** out) noexcept override {
    *out = nullptr;
    if (stream)
      return fail(DSPP_ERR_INVALID_ARGUMENT, "alloc on a stream other than the legacy one");
    if (bytes == 0) return DSPP_OK;
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) return fail(DSPP_ERR_OUT_OF_MEMORY, "out of memory");
    std::memset(p, 0xFF, bytes);  // NaN in every float dtype until written
    blocks_[p] = bytes;
    category_of_[p] = category_;
    *out = p;
    return DSPP_OK;
  }
  dspp_status free(void* ptr, void* stream) noexcept override {
    if (stream)
      return fail(DSPP_ERR_INVALID_ARGUMENT, "free on a stream other than the legacy one");
    if (!ptr) return DSPP_OK;
    auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return fail(DSPP_ERR_INVALID_ARGUMENT, "free of an unknown pointer");
    blocks_.erase(it);
    category_of_.erase(ptr);
    std::free(ptr);
    return DSPP_OK;
  }
  dspp_status empty_cache() noexcept override { return DSPP_OK; }
  // What is live, in total and per category (as asked: no block rounding here).
  dspp_status memory_stats(dspp::DeviceMemoryStats* out) const noexcept override {
    out->allocated = 0;
    for (uint64_t& c : out->category_requested) c = 0;
    for (const auto& [p, n] : blocks_) {
      out->allocated += n;
      out->category_requested[category_of_.at(p)] += n;
    }
    return DSPP_OK;
  }
  int32_t set_memory_category(int32_t category) noexcept override {
    const int32_t previous = category_;
    category_ = category >= 0 && category < DSPP_MEM_CATEGORIES ? category : DSPP_MEM_OTHER;
    return previous;
  }
  dspp_status reset_peak_stats() noexcept override { return DSPP_OK; }
  // "Page-locked" host memory (ZeRO-Offload's master and gradient): plain host memory here,
  // counted so the test sees it freed.
  dspp_status alloc_host(size_t bytes, void** out) noexcept override {
    *out = nullptr;
    if (bytes == 0) return DSPP_OK;
    void* p = std::malloc(bytes);
    if (!p) return fail(DSPP_ERR_OUT_OF_MEMORY, "out of host memory");
    std::memset(p, 0xFF, bytes);  // NaN until written
    host_blocks_.insert(p);
    ++host_allocs_;
    *out = p;
    return DSPP_OK;
  }
  dspp_status free_host(void* ptr) noexcept override {
    if (!ptr) return DSPP_OK;
    if (host_blocks_.erase(ptr) == 0)
      return fail(DSPP_ERR_INVALID_ARGUMENT, "free_host of an unknown pointer");
    std::free(ptr);
    return DSPP_OK;
  }
  dspp_status create_stream(void**) noexcept override { return no("create_stream"); }
  dspp_status destroy_stream(void*) noexcept override { return no("destroy_stream"); }
  dspp_status synchronize(void*) noexcept override { return DSPP_OK; }
  dspp_status create_event(int32_t, void**) noexcept override { return no("create_event"); }
  dspp_status destroy_event(void*) noexcept override { return no("destroy_event"); }
  dspp_status record_event(void*, void*) noexcept override { return no("record_event"); }
  dspp_status stream_wait_event(void*, void*) noexcept override { return no("stream_wait_event"); }
  dspp_status query_event(void*, int32_t*) noexcept override { return no("query_event"); }
  dspp_status synchronize_event(void*) noexcept override { return no("synchronize_event"); }
  dspp_status elapsed_ms(void*, void*, float*) noexcept override { return no("elapsed_ms"); }
  dspp_status copy(void* dst, const void* src, size_t bytes, void* stream) noexcept override {
    if (stream)
      return fail(DSPP_ERR_INVALID_ARGUMENT, "copy on a stream other than the legacy one");
    if (bytes == 0) return DSPP_OK;
    if (!holds(dst, bytes) && !holds(src, bytes))
      return fail(DSPP_ERR_INVALID_ARGUMENT, "copy between two host buffers");
    std::memmove(dst, src, bytes);
    return DSPP_OK;
  }
  dspp_status memset(void* dst, int32_t value, size_t bytes, void* stream) noexcept override {
    if (stream)
      return fail(DSPP_ERR_INVALID_ARGUMENT, "memset on a stream other than the legacy one");
    if (bytes == 0) return DSPP_OK;
    if (!holds(dst, bytes)) return fail(DSPP_ERR_INVALID_ARGUMENT, "memset of host memory");
    std::memset(dst, value, bytes);
    return DSPP_OK;
  }
  dspp::DeviceKernels* kernels() noexcept override { return &kernels_; }

  // [p, p + bytes) lies in one live block.
  bool holds(const void* p, size_t bytes) const {
    auto it = blocks_.upper_bound(p);
    if (it == blocks_.begin()) return false;
    --it;
    const char* b = static_cast<const char*>(it->first);
    const char* q = static_cast<const char*>(p);
    return q >= b && q + bytes <= b + it->second;
  }
  // Device blocks and page-locked host blocks not freed yet.
  size_t live_blocks() const { return blocks_.size() + host_blocks_.size(); }
  size_t host_blocks_allocated() const { return host_allocs_; }
  FakeKernels& fake_kernels() { return kernels_; }

 private:
  static dspp_status no(const char* what) {
    return fail(DSPP_ERR_NOT_SUPPORTED, std::string(what) + " is not used by the ZeRO stages");
  }
  std::map<const void*, size_t> blocks_;
  std::map<const void*, int32_t> category_of_;  // DSPP_MEM_* of each live block
  int32_t category_ = DSPP_MEM_OTHER;
  std::set<void*> host_blocks_;
  size_t host_allocs_ = 0;
  FakeKernels kernels_;
};

size_t bytes_of(int32_t dtype) {
  return zdev::dtype_bytes(dtype);
}
bool is_float(int32_t d) {
  return d == DSPP_F32 || d == DSPP_BF16 || d == DSPP_F16;
}
float load(const dspp_tensor_view& v, int64_t i) {
  const char* p = static_cast<const char*>(v.data);
  if (v.dtype == DSPP_F32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return v.dtype == DSPP_BF16 ? zdev::bf16_value(h) : zdev::f16_value(h);
}
void store(const dspp_tensor_view& v, int64_t i, float f) {
  char* p = static_cast<char*>(v.data);
  if (v.dtype == DSPP_F32) {
    std::memcpy(p + 4 * i, &f, 4);
    return;
  }
  const uint16_t h = v.dtype == DSPP_BF16 ? zdev::bf16_bits(f) : zdev::f16_bits(f);
  std::memcpy(p + 2 * i, &h, 2);
}

bool FakeKernels::ok(const dspp_tensor_view* v, const char* name, void* stream, std::string* why,
                     int32_t also) const {
  if (stream) {
    *why = "work on a stream other than the legacy one";
    return false;
  }
  if (!v) {
    *why = std::string(name) + " is NULL";
    return false;
  }
  if (v->device.type != DSPP_DEVICE_CUDA) {
    *why = std::string(name) + " is not a CUDA view";
    return false;
  }
  if (!is_float(v->dtype) && v->dtype != also) {
    *why = std::string(name) + " has dtype " + std::to_string(v->dtype);
    return false;
  }
  const int64_t n = zdev::numel(*v);
  if (n > 0 && !dev_.holds(v->data, static_cast<size_t>(n) * bytes_of(v->dtype))) {
    *why = std::string(name) + " is not live device memory";
    return false;
  }
  return true;
}

dspp_status FakeKernels::scale(const dspp_tensor_view* x, float alpha, const dspp_tensor_view* out,
                               void* stream) noexcept {
  std::string why;
  if (!ok(x, "x", stream, &why) || !ok(out, "out", stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "scale: " + why);
  if (out->dtype != x->dtype || zdev::numel(*out) != zdev::numel(*x))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "scale: out must be like x");
  ++calls;
  for (int64_t i = 0; i < zdev::numel(*x); ++i) store(*out, i, alpha * load(*x, i));
  return DSPP_OK;
}

dspp_status FakeKernels::add(const dspp_tensor_view* a, const dspp_tensor_view* b,
                             const dspp_tensor_view* out, void* stream) noexcept {
  std::string why;
  if (!ok(a, "a", stream, &why) || !ok(b, "b", stream, &why) || !ok(out, "out", stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "add: " + why);
  const int64_t n = zdev::numel(*a);
  if (b->dtype != a->dtype || out->dtype != a->dtype || zdev::numel(*b) != n ||
      zdev::numel(*out) != n)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "add: a, b and out must be of one dtype and size");
  ++calls;
  for (int64_t i = 0; i < n; ++i) store(*out, i, load(*a, i) + load(*b, i));
  return DSPP_OK;
}

dspp_status FakeKernels::fill(const dspp_tensor_view* out, double value, void* stream) noexcept {
  std::string why;
  if (!ok(out, "out", stream, &why, DSPP_I32))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "fill: " + why);
  ++calls;
  for (int64_t i = 0; i < zdev::numel(*out); ++i) {
    if (out->dtype == DSPP_I32) {
      const int32_t x = static_cast<int32_t>(value);
      std::memcpy(static_cast<char*>(out->data) + 4 * i, &x, 4);
    } else {
      store(*out, i, static_cast<float>(value));
    }
  }
  return DSPP_OK;
}

dspp_status FakeKernels::cast(const dspp_tensor_view* x, const dspp_tensor_view* out,
                              void* stream) noexcept {
  std::string why;
  if (!ok(x, "x", stream, &why) || !ok(out, "out", stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "cast: " + why);
  if (zdev::numel(*out) != zdev::numel(*x))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "cast: out must be shaped like x");
  if (out->dtype != x->dtype && out->data == x->data)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "cast: out must not be the same memory as x");
  ++calls;
  for (int64_t i = 0; i < zdev::numel(*x); ++i) store(*out, i, load(*x, i));
  return DSPP_OK;
}

dspp_status FakeKernels::sum_squares(const dspp_tensor_view* x, const dspp_tensor_view* out,
                                     int32_t accumulate, void* stream) noexcept {
  std::string why;
  if (!ok(x, "x", stream, &why) || !ok(out, "out", stream, &why, DSPP_F64))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "sum_squares: " + why);
  if (out->dtype != DSPP_F64 || zdev::numel(*out) != 1)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "sum_squares: out must be one f64");
  ++calls;
  double s = 0.0;
  for (int64_t i = 0; i < zdev::numel(*x); ++i) {
    const double e = load(*x, i);
    s += e * e;
  }
  double* o = static_cast<double*>(out->data);
  *o = (accumulate ? *o : 0.0) + s;
  return DSPP_OK;
}

dspp_status FakeKernels::adam_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                   const dspp_tensor_view* m, const dspp_tensor_view* v,
                                   const dspp::DeviceAdamConsts* k, void* stream) noexcept {
  std::string why;
  if (!ok(p, "p", stream, &why) || !ok(g, "g", stream, &why) || !ok(m, "m", stream, &why) ||
      !ok(v, "v", stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "adam_step: " + why);
  const int64_t n = zdev::numel(*p);
  for (const dspp_tensor_view* t : {p, g, m, v}) {
    if (t->dtype != DSPP_F32 || zdev::numel(*t) != n)
      return fail(DSPP_ERR_INVALID_ARGUMENT, "adam_step: p, g, m, v must be f32 of one size");
  }
  if (!k) return fail(DSPP_ERR_INVALID_ARGUMENT, "adam_step: no constants");
  ++calls;
  float* pp = static_cast<float*>(p->data);
  const float* gg = static_cast<const float*>(g->data);
  float* mm = static_cast<float*>(m->data);
  float* vv = static_cast<float*>(v->data);
  for (int64_t i = 0; i < n; ++i) {
    const float pi = pp[i];
    const float gi = gg[i] + k->l2 * pi;
    const float mi = k->beta1 * mm[i] + k->one_minus_beta1 * gi;
    const float vi = k->beta2 * vv[i] + k->one_minus_beta2 * gi * gi;
    mm[i] = mi;
    vv[i] = vi;
    const float denom = std::sqrt(vi) * k->inv_sqrt_bc2 + k->eps;
    pp[i] = pi * k->decay - k->step_size * (mi / denom);
  }
  return DSPP_OK;
}

bool FakeKernels::f32_like(
    std::initializer_list<std::pair<const dspp_tensor_view*, const char*>> views, void* stream,
    std::string* why) const {
  int64_t n = -1;
  for (auto a = views.begin(); a != views.end(); ++a) {
    if (!ok(a->first, a->second, stream, why)) return false;
    if (a->first->dtype != DSPP_F32 || (n >= 0 && zdev::numel(*a->first) != n)) {
      *why = std::string(a->second) + " must be f32 with the first view's element count";
      return false;
    }
    n = zdev::numel(*a->first);
    for (auto b = views.begin(); b != a; ++b) {
      if (a->first->data && a->first->data == b->first->data) {
        *why = std::string(a->second) + " is the same memory as " + b->second;
        return false;
      }
    }
  }
  return true;
}

// f32 only, no epilogue, flags 0: what Muon's Newton-Schulz uses. Each element sums its products
// in f32 in index order (another order than OpenBLAS's and cuBLASLt's: the bound of Muon's
// comparison covers the summation order).
dspp_status FakeKernels::gemm(const dspp_tensor_view* a, int32_t trans_a, const dspp_tensor_view* b,
                              int32_t trans_b, const dspp_tensor_view* c, float alpha, float beta,
                              int32_t epilogue, const dspp_tensor_view* bias,
                              const dspp_tensor_view* pre_gelu, uint32_t flags,
                              void* stream) noexcept {
  std::string why;
  if (!ok(a, "a", stream, &why) || !ok(b, "b", stream, &why) || !ok(c, "c", stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "gemm: " + why);
  if (a->dtype != DSPP_F32 || b->dtype != DSPP_F32 || c->dtype != DSPP_F32 ||
      epilogue != DSPP_GEMM_EPILOGUE_NONE || bias || pre_gelu || flags != 0)
    return none("gemm other than f32 without an epilogue and flags 0");
  auto mat = [](const dspp_tensor_view& v) {
    int64_t rows = 1;
    for (int32_t d = 0; d + 1 < v.ndim; ++d) rows *= v.shape[d];
    return std::pair<int64_t, int64_t>(rows, v.ndim > 0 ? v.shape[v.ndim - 1] : 1);
  };
  const auto [ar, ac] = mat(*a);
  const auto [br, bc] = mat(*b);
  const auto [cr, cc] = mat(*c);
  const int64_t m = trans_a ? ac : ar, k = trans_a ? ar : ac;
  const int64_t kb = trans_b ? bc : br, n = trans_b ? br : bc;
  if (k != kb || cr != m || cc != n)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "gemm: shapes do not match");
  if (c->data == a->data || c->data == b->data)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "gemm: c is the same memory as a or b");
  ++calls;
  ++gemms;
  const float* A = static_cast<const float*>(a->data);
  const float* B = static_cast<const float*>(b->data);
  float* C = static_cast<float*>(c->data);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t q = 0; q < k; ++q)
        acc +=
            (trans_a ? A[q * ac + i] : A[i * ac + q]) * (trans_b ? B[j * bc + q] : B[q * bc + j]);
      C[i * n + j] = beta == 0.0f ? alpha * acc : alpha * acc + beta * C[i * n + j];
    }
  }
  return DSPP_OK;
}

dspp_status FakeKernels::sgd_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                  const dspp_tensor_view* buf, const dspp::DeviceSgdConsts* k,
                                  void* stream) noexcept {
  std::string why;
  const bool with_buf = buf != nullptr;
  if (!(with_buf ? f32_like({{p, "p"}, {g, "g"}, {buf, "buf"}}, stream, &why)
                 : f32_like({{p, "p"}, {g, "g"}}, stream, &why)))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "sgd_step: " + why);
  if (!k || (k->momentum != 0.0f && !with_buf))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "sgd_step: no constants, or momentum without buf");
  ++calls;
  float* pp = static_cast<float*>(p->data);
  const float* gg = static_cast<const float*>(g->data);
  float* bb = with_buf ? static_cast<float*>(buf->data) : nullptr;
  for (int64_t i = 0; i < zdev::numel(*p); ++i) {
    const float d = k->sign * gg[i] + k->wd * pp[i];
    if (k->momentum == 0.0f) {
      pp[i] = pp[i] - k->lr * d;
      continue;
    }
    const float b = k->first ? d : k->momentum * bb[i] + k->one_minus_dampening * d;
    bb[i] = b;
    const float u = k->nesterov ? d + k->momentum * b : b;
    pp[i] = pp[i] - k->lr * u;
  }
  return DSPP_OK;
}

dspp_status FakeKernels::lion_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                   const dspp_tensor_view* m, const dspp::DeviceLionConsts* k,
                                   void* stream) noexcept {
  std::string why;
  if (!f32_like({{p, "p"}, {g, "g"}, {m, "m"}}, stream, &why) || !k)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "lion_step: " + (k ? why : "no constants"));
  ++calls;
  float* pp = static_cast<float*>(p->data);
  const float* gg = static_cast<const float*>(g->data);
  float* mm = static_cast<float*>(m->data);
  for (int64_t i = 0; i < zdev::numel(*p); ++i) {
    const float c = k->beta1 * mm[i] + k->one_minus_beta1 * gg[i];
    const float sign = (c > 0.0f ? 1.0f : 0.0f) - (c < 0.0f ? 1.0f : 0.0f);
    pp[i] = pp[i] * k->decay - k->lr * sign;
    mm[i] = k->beta2 * mm[i] + k->one_minus_beta2 * gg[i];
  }
  return DSPP_OK;
}

dspp_status FakeKernels::adagrad_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                      const dspp_tensor_view* sum,
                                      const dspp::DeviceAdagradConsts* k, void* stream) noexcept {
  std::string why;
  if (!f32_like({{p, "p"}, {g, "g"}, {sum, "sum"}}, stream, &why) || !k)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "adagrad_step: " + (k ? why : "no constants"));
  ++calls;
  float* pp = static_cast<float*>(p->data);
  const float* gg = static_cast<const float*>(g->data);
  float* ss = static_cast<float*>(sum->data);
  for (int64_t i = 0; i < zdev::numel(*p); ++i) {
    const float pi = pp[i];
    const float gi = k->sign * gg[i] + k->wd * pi;
    const float s = ss[i] + gi * gi;
    ss[i] = s;
    pp[i] = pi - k->clr * (gi / (std::sqrt(s) + k->eps));
  }
  return DSPP_OK;
}

float lamb_update_fake(float m, float v, float p, const dspp::DeviceLambConsts& k) {
  const float denom = k.eps_inside_sqrt ? std::sqrt(v + k.eps) : std::sqrt(v) + k.eps;
  return m / denom + k.wd * p;
}

dspp_status FakeKernels::lamb_moments(const dspp_tensor_view* p, const dspp_tensor_view* g,
                                      const dspp_tensor_view* m, const dspp_tensor_view* v,
                                      const dspp::DeviceLambConsts* k, const dspp_tensor_view* u,
                                      void* stream) noexcept {
  std::string why;
  if (!f32_like({{p, "p"}, {g, "g"}, {m, "m"}, {v, "v"}, {u, "u"}}, stream, &why) || !k)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "lamb_moments: " + (k ? why : "no constants"));
  ++calls;
  const float* pp = static_cast<const float*>(p->data);
  const float* gg = static_cast<const float*>(g->data);
  float* mm = static_cast<float*>(m->data);
  float* vv = static_cast<float*>(v->data);
  float* uu = static_cast<float*>(u->data);
  for (int64_t i = 0; i < zdev::numel(*p); ++i) {
    mm[i] = k->beta1 * mm[i] + k->one_minus_beta1 * gg[i];
    vv[i] = k->beta2 * vv[i] + k->one_minus_beta2 * gg[i] * gg[i];
    uu[i] = lamb_update_fake(mm[i], vv[i], pp[i], *k);
  }
  return DSPP_OK;
}

dspp_status FakeKernels::lamb_apply(const dspp_tensor_view* p, const dspp_tensor_view* m,
                                    const dspp_tensor_view* v, const dspp::DeviceLambConsts* k,
                                    float scale, void* stream) noexcept {
  std::string why;
  if (!f32_like({{p, "p"}, {m, "m"}, {v, "v"}}, stream, &why) || !k)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "lamb_apply: " + (k ? why : "no constants"));
  ++calls;
  float* pp = static_cast<float*>(p->data);
  const float* mm = static_cast<const float*>(m->data);
  const float* vv = static_cast<const float*>(v->data);
  for (int64_t i = 0; i < zdev::numel(*p); ++i)
    pp[i] = pp[i] - scale * lamb_update_fake(mm[i], vv[i], pp[i], *k);
  return DSPP_OK;
}

dspp_status FakeKernels::muon_momentum(const dspp_tensor_view* g, const dspp_tensor_view* m,
                                       const dspp_tensor_view* u, float beta, float one_minus_beta,
                                       void* stream) noexcept {
  std::string why;
  if (!f32_like({{g, "g"}, {m, "m"}, {u, "u"}}, stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "muon_momentum: " + why);
  ++calls;
  const float* gg = static_cast<const float*>(g->data);
  float* mm = static_cast<float*>(m->data);
  float* uu = static_cast<float*>(u->data);
  for (int64_t i = 0; i < zdev::numel(*g); ++i) {
    mm[i] = beta * mm[i] + one_minus_beta * gg[i];
    uu[i] = one_minus_beta * gg[i] + beta * mm[i];
  }
  return DSPP_OK;
}

dspp_status FakeKernels::decayed_update(const dspp_tensor_view* p, const dspp_tensor_view* u,
                                        float decay, float step, void* stream) noexcept {
  std::string why;
  if (!f32_like({{p, "p"}, {u, "u"}}, stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "decayed_update: " + why);
  ++calls;
  float* pp = static_cast<float*>(p->data);
  const float* uu = static_cast<const float*>(u->data);
  for (int64_t i = 0; i < zdev::numel(*p); ++i) pp[i] = pp[i] * decay - step * uu[i];
  return DSPP_OK;
}

dspp_status FakeKernels::transpose(const dspp_tensor_view* x, const dspp_tensor_view* out,
                                   void* stream) noexcept {
  std::string why;
  if (!ok(x, "x", stream, &why) || !ok(out, "out", stream, &why))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "transpose: " + why);
  if (x->ndim != 2 || out->ndim != 2 || out->shape[0] != x->shape[1] ||
      out->shape[1] != x->shape[0] || out->dtype != x->dtype || out->data == x->data)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "transpose: out must be x's transpose (2-d here)");
  ++calls;
  const int64_t r = x->shape[0], c = x->shape[1];
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) store(*out, j * r + i, load(*x, i * c + j));
  return DSPP_OK;
}

dspp_status FakeKernels::add_diagonal(const dspp_tensor_view* x, float value,
                                      void* stream) noexcept {
  std::string why;
  if (!f32_like({{x, "x"}}, stream, &why) || x->ndim != 2 || x->shape[0] != x->shape[1])
    return fail(DSPP_ERR_INVALID_ARGUMENT, "add_diagonal: x must be a square f32 matrix " + why);
  ++calls;
  float* xx = static_cast<float*>(x->data);
  const int64_t n = x->shape[0];
  for (int64_t d = 0; d < n; ++d) xx[d * n + d] += value;
  return DSPP_OK;
}

dspp_status FakeKernels::divide_by_norm(const dspp_tensor_view* x, const dspp_tensor_view* sum_sq,
                                        float eps, const dspp_tensor_view* out,
                                        void* stream) noexcept {
  std::string why;
  if (!ok(x, "x", stream, &why) || !ok(out, "out", stream, &why) ||
      !ok(sum_sq, "sum_sq", stream, &why, DSPP_F64))
    return fail(DSPP_ERR_INVALID_ARGUMENT, "divide_by_norm: " + why);
  if (x->dtype != DSPP_F32 || out->dtype != DSPP_F32 || zdev::numel(*out) != zdev::numel(*x) ||
      sum_sq->dtype != DSPP_F64 || zdev::numel(*sum_sq) != 1)
    return fail(DSPP_ERR_INVALID_ARGUMENT, "divide_by_norm: f32 x and out alike, one f64 sum");
  ++calls;
  const float denom =
      static_cast<float>(std::sqrt(*static_cast<const double*>(sum_sq->data))) + eps;
  const float* xx = static_cast<const float*>(x->data);
  float* oo = static_cast<float*>(out->data);
  for (int64_t i = 0; i < zdev::numel(*x); ++i) oo[i] = xx[i] / denom;
  return DSPP_OK;
}

}  // namespace

TEST_CASE("zero/stage0 + adamw on a fake device: fp32", "[zero][device]") {
  FakeDevice dev;
  zdev::stage0_adamw(dev, DSPP_F32);
  CHECK(dev.fake_kernels().calls > 0);
  CHECK(dev.live_blocks() == 0);  // everything the stage and the optimizer allocated was freed
}

TEST_CASE("zero/stage0 + adamw on a fake device: bf16 storage", "[zero][device]") {
  FakeDevice dev;
  zdev::stage0_adamw(dev, DSPP_BF16);
  CHECK(dev.live_blocks() == 0);
}

TEST_CASE("zero/stage0 + adamw on a fake device: f16 storage", "[zero][device]") {
  FakeDevice dev;
  zdev::stage0_adamw(dev, DSPP_F16);
  CHECK(dev.live_blocks() == 0);
}

TEST_CASE("zero/stage1 + adamw on a fake device: fp32, bf16 and f16 storage", "[zero][device]") {
  for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
    FakeDevice dev;
    (void)zdev::zero_adamw(dev, dtype, 1);
    CHECK(dev.fake_kernels().calls > 0);
    CHECK(dev.live_blocks() == 0);
  }
}

TEST_CASE("zero/stage2 + adamw on a fake device: fp32, bf16 and f16 storage", "[zero][device]") {
  for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
    FakeDevice dev;
    (void)zdev::zero_adamw(dev, dtype, 2);
    CHECK(dev.fake_kernels().calls > 0);
    CHECK(dev.live_blocks() == 0);
  }
}

TEST_CASE("zero/stage3 + adamw on a fake device: fp32, bf16 and f16 storage", "[zero][device]") {
  for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
    FakeDevice dev;
    (void)zdev::zero_adamw(dev, dtype, 3);
    CHECK(dev.fake_kernels().calls > 0);
    CHECK(dev.live_blocks() == 0);  // the partition, the gathers and the buckets were freed
  }
}

TEST_CASE("zero stages 1-3 equal stage 0 bit for bit at world 1 on a fake device",
          "[zero][device]") {
  for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
    FakeDevice dev;
    zdev::stages_agree(dev, dtype);
    CHECK(dev.live_blocks() == 0);
  }
}

TEST_CASE("zero-offload on a fake device: stages 0-3 with the master and adamw on the CPU",
          "[zero][device]") {
  // Page-locked host memory (pin_memory defaults to true) for every stage and dtype.
  for (int stage = 0; stage <= 3; ++stage) {
    for (const int32_t dtype : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
      FakeDevice dev;
      zdev::offload_agrees(dev, dtype, stage, R"({"device": "cpu"})");
      CHECK(dev.host_blocks_allocated() == 2);  // the master and the host gradient
      CHECK(dev.live_blocks() == 0);
    }
  }
  // pin_memory false: the host allocator's memory instead.
  for (int stage = 0; stage <= 3; ++stage) {
    FakeDevice dev;
    zdev::offload_agrees(dev, DSPP_BF16, stage, R"({"device": "cpu", "pin_memory": false})");
    CHECK(dev.host_blocks_allocated() == 0);
    CHECK(dev.live_blocks() == 0);
  }
}

TEST_CASE("muon on a fake device equals the CPU's: elementwise bit for bit, NS within bound",
          "[optimizer][device][muon]") {
  FakeDevice dev;
  for (const odev::OptCase& c : odev::muon_cases()) odev::compare_with_cpu(dev, c);
  CHECK(dev.fake_kernels().gemms > 0);
  CHECK(dev.live_blocks() == 0);  // the states and the Newton-Schulz scratch were freed
}

TEST_CASE("sgd, lion, adagrad, lamb, adam on a fake device equal the CPU's",
          "[optimizer][device]") {
  FakeDevice dev;
  for (auto cases : {odev::sgd_cases(), odev::lion_cases(), odev::adagrad_cases(),
                     odev::lamb_cases(), odev::adam_cases()}) {
    for (const odev::OptCase& c : cases) odev::compare_with_cpu(dev, c);
  }
  CHECK(dev.live_blocks() == 0);
}

TEST_CASE("device refusals on a fake device: amsgrad", "[zero][device]") {
  FakeDevice dev;
  zdev::device_refusals(dev);
  CHECK(dev.live_blocks() == 0);
}

TEST_CASE("kernels of version 2 refuse the optimizers that need version 3, before allocating",
          "[optimizer][device]") {
  FakeDevice v2(2);
  const dspp_host_api* host = zdev::host_with_device(&v2);
  const dspp::ParamSegment seg = zdev::muon_matrix_segment();
  const dspp::ParamGroupSetup group{0.01, 0.0, nullptr};
  const dspp::OptimizerSetup os{&seg, 1, &group, 1, 16, dspp_device{DSPP_DEVICE_CUDA, 0}};
  struct Opt {
    const char* path;
    const char* name;
    const char* needs;
  };
  const Opt opts[] = {{DSPP_OPTIMIZER_MUON_PATH, "muon", "muon_momentum"},
                      {DSPP_OPTIMIZER_SGD_PATH, "sgd", "sgd_step"},
                      {DSPP_OPTIMIZER_LION_PATH, "lion", "lion_step"},
                      {DSPP_OPTIMIZER_ADAGRAD_PATH, "adagrad", "adagrad_step"},
                      {DSPP_OPTIMIZER_LAMB_PATH, "lamb", "lamb_moments"}};
  for (const Opt& o : opts) {
    INFO(o.name);
    const zdev::PluginLib lib(o.path);
    auto opt = lib.create<dspp::Optimizer>("optimizer", o.name, host, nullptr);
    const std::string e = error_of([&] { zdev::check(opt->init(&os), "init"); });
    CHECK(contains(e, std::string(o.name) +
                          ": the host's device plugin has kernels of version 2; the optimizer "
                          "step on cuda:0 needs version 3 or later (" +
                          o.needs));
    CHECK(contains(e, "--device cpu"));
    CHECK(opt->num_states() == 0);
  }
  zdev::host_with_device(nullptr);
  CHECK(v2.live_blocks() == 0);
}

TEST_CASE("buffers on the GPU without a host device or with kernels older than version 2",
          "[zero][device]") {
  const dspp_device cuda{DSPP_DEVICE_CUDA, 0};
  dspp::ParamSegment seg{};
  seg.name = "w";
  seg.ndim = 1;
  seg.shape[0] = 16;
  seg.numel = 16;
  const dspp::ParamGroupSetup group{0.01, 0.0, nullptr};
  const dspp::OptimizerSetup os{&seg, 1, &group, 1, 16, cuda};
  const dspp::Config cfg = zdev::test_config();
  const zdev::PluginLib adam(DSPP_OPTIMIZER_ADAM_PATH);
  const zdev::PluginLib stage0(DSPP_ZERO_STAGE0_PATH);

  // The process's own host services (no device: this host computes on the CPU).
  {
    auto opt = adam.create<dspp::Optimizer>("optimizer", "adamw", dspp::host_api(),
                                            cfg.view("optimizer.params"));
    const std::string e = error_of([&] { zdev::check(opt->init(&os), "init"); });
    CHECK(contains(e, "adamw: the buffers are on cuda:0 but the host gives no compute device"));
  }
  FakeDevice old(1);
  const dspp_host_api* host = zdev::host_with_device(&old);
  {
    auto opt =
        adam.create<dspp::Optimizer>("optimizer", "adamw", host, cfg.view("optimizer.params"));
    const std::string e = error_of([&] { zdev::check(opt->init(&os), "init"); });
    CHECK(contains(e, "adamw: the host's device plugin has kernels of version 1"));
    CHECK(contains(e, "needs version 2"));
  }
  {
    zdev::DeviceTensor params(old, DSPP_F32, 16), grads(old, DSPP_F32, 16);
    zdev::LocalComm comm;
    dspp::ZeroParam zp{};
    zp.name = "w";
    zp.ndim = 1;
    zp.shape[0] = 16;
    zp.numel = 16;
    zp.value = params.view();
    zp.grad = grads.view();
    zp.group = 0;
    dspp::ZeroSetup setup{&zp,  1, params.view(), grads.view(), &comm, nullptr, &group, 1,
                          cuda, 1, 1.0,           DSPP_F32};
    auto z = stage0.create<dspp::ZeroStage>("zero", "stage0", host, cfg.view("zero_optimization"));
    std::string e = error_of([&] { zdev::check(z->init(&setup), "init"); });
    CHECK(contains(e, "zero/stage0: the host's device plugin has kernels of version 1"));
    auto z2 = stage0.create<dspp::ZeroStage>("zero", "stage0", dspp::host_api(),
                                             cfg.view("zero_optimization"));
    e = error_of([&] { zdev::check(z2->init(&setup), "init"); });
    CHECK(contains(e,
                   "zero/stage0: the flat buffers are on cuda:0 but the host gives no compute "
                   "device"));
    // bf16 working dtype needs bf16 storage on the GPU.
    setup.working_dtype = DSPP_BF16;
    e = error_of([&] { zdev::check(z2->init(&setup), "init"); });
    CHECK(contains(e,
                   "zero/stage0: on the GPU flat_params must be stored in the working dtype "
                   "bf16 and flat_grads in f32, got f32 and f32"));

    // Stages 1-3 check the same before touching anything (stages 2 and 3 have no flat_grads).
    const zdev::PluginLib stage1(DSPP_ZERO_STAGE1_PATH);
    const zdev::PluginLib stage2(DSPP_ZERO_STAGE2_PATH);
    const zdev::PluginLib stage3(DSPP_ZERO_STAGE3_PATH);
    for (int n = 1; n <= 3; ++n) {
      const std::string name = "stage" + std::to_string(n);
      INFO(name);
      const zdev::PluginLib& lib = n == 1 ? stage1 : n == 2 ? stage2 : stage3;
      dspp::ZeroSetup s = setup;
      if (n >= 2) s.flat_grads = dspp_tensor_view{};
      s.working_dtype = DSPP_F32;
      auto old_kernels =
          lib.create<dspp::ZeroStage>("zero", name.c_str(), host, cfg.view("zero_optimization"));
      e = error_of([&] { zdev::check(old_kernels->init(&s), "init"); });
      CHECK(contains(e, "zero/" + name + ": the host's device plugin has kernels of version 1"));
      auto no_device = lib.create<dspp::ZeroStage>("zero", name.c_str(), dspp::host_api(),
                                                   cfg.view("zero_optimization"));
      e = error_of([&] { zdev::check(no_device->init(&s), "init"); });
      CHECK(contains(e, "zero/" + name +
                            ": the flat buffers are on cuda:0 but the host gives no compute "
                            "device"));
      s.working_dtype = DSPP_BF16;
      e = error_of([&] { zdev::check(no_device->init(&s), "init"); });
      CHECK(contains(e, "zero/" + name +
                            (n == 1 ? ": on the GPU flat_params must be stored in the working "
                                      "dtype bf16 and flat_grads in f32, got f32 and f32"
                                    : ": on the GPU flat_params must be stored in the working "
                                      "dtype bf16, got f32")));
    }
  }
  zdev::host_with_device(nullptr);
  CHECK(old.live_blocks() == 0);
}
