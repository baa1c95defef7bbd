// device/cuda: DeviceKernels, the layer kernels. Each method checks its views (dtype, shape,
// device, sizes the kernels index with 32-bit counters) and fails with DSPP_ERR_INVALID_ARGUMENT
// naming the argument before anything is enqueued; then it makes the device's GPU current and
// calls the launcher (kernels_*.cu, kernels_gemm.cpp). Scratch memory is the device's own
// caching allocator on the call's stream (see Scratch in launch.h).
#include "kernels.h"

#include <dspp/plugin.h>

#include <climits>
#include <cmath>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../../common/comm_types.h"
#include "kernels_gemm.h"
#include "launch.h"

namespace dspp::cuda {

Scratch::~Scratch() {
  // Stream-ordered: work already enqueued on the stream may still use these blocks, and the
  // allocator hands them out again only to later work on the same stream. A failure here has
  // nowhere to go (the allocator has recorded its message).
  for (void* p : blocks_) (void)device_.free(p, stream_);
}

void* Scratch::get(size_t bytes) {
  void* p = nullptr;
  dspp::plugin::pass_through(device_.alloc(bytes, stream_, &p));
  blocks_.push_back(p);
  return p;
}

namespace {

constexpr const char* kWho = "device/cuda";

// Names and kinds from the table every plugin shares (plugins/common/comm_types.h).
const char* dtype_name(int32_t d) {
  comm_types::DtypeInfo i{};
  return comm_types::dtype_info(d, &i) ? i.name : "unknown dtype";
}

bool is_float(int32_t d) {
  comm_types::DtypeInfo i{};
  return d != DSPP_F64 && comm_types::dtype_info(d, &i) && i.is_float;
}

int64_t numel(const dspp_tensor_view& v) {
  int64_t n = 1;
  for (int i = 0; i < v.ndim; ++i) n *= v.shape[i];
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<int64_t> shape_of(const dspp_tensor_view& v) {
  return std::vector<int64_t>(v.shape, v.shape + v.ndim);
}

// "bf16 [2, 5, 96]", plus where it lives when that is the problem.
std::string describe(const dspp_tensor_view& v) {
  std::string s = std::string(dtype_name(v.dtype)) + " " + shape_str(shape_of(v));
  if (v.device.type != DSPP_DEVICE_CUDA) s += " on the cpu";
  return s;
}

// The matrix of a view: [product of all dimensions but the last, the last].
struct Mat {
  int64_t rows, cols;
};
Mat matrix_of(const dspp_tensor_view& v) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < v.ndim; ++i) rows *= v.shape[i];
  return Mat{rows, v.ndim > 0 ? v.shape[v.ndim - 1] : 1};
}

// Argument checks for one method: messages read "device/cuda <method>: <argument> ...".
class Args {
 public:
  explicit Args(const char* method) : method_(method) {}

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::invalid_argument(std::string(kWho) + " " + method_ + ": " + msg);
  }

  // A required view of this device's memory.
  const dspp_tensor_view& need(const dspp_tensor_view* v, const char* name) const {
    if (!v) fail(std::string(name) + " is NULL");
    check(*v, name);
    return *v;
  }
  // An optional one: NULL when absent.
  const dspp_tensor_view* maybe(const dspp_tensor_view* v, const char* name) const {
    if (v) check(*v, name);
    return v;
  }

  void floating(const dspp_tensor_view& v, const char* name) const {
    if (!is_float(v.dtype))
      fail(std::string(name) + " must be f32, bf16 or f16, got " + describe(v));
  }
  // dtype and shape exactly; `why` says where the expectation comes from.
  void like(const dspp_tensor_view& v, const char* name, int32_t dtype,
            const std::vector<int64_t>& shape, const std::string& why) const {
    if (v.dtype != dtype || shape_of(v) != shape) {
      fail(std::string(name) + " must be " + dtype_name(dtype) + " " + shape_str(shape) + " (" +
           why + "), got " + describe(v));
    }
  }
  // dtype, and the element count (any shape).
  void count(const dspp_tensor_view& v, const char* name, int32_t dtype, int64_t n,
             const std::string& why) const {
    if (v.dtype != dtype || numel(v) != n) {
      fail(std::string(name) + " must be " + dtype_name(dtype) + " with " + std::to_string(n) +
           " elements (" + why + "), got " + describe(v));
    }
  }
  // f32 or `dtype`, shaped `shape`.
  void grad_like(const dspp_tensor_view& v, const char* name, int32_t dtype,
                 const std::vector<int64_t>& shape, const std::string& why) const {
    if ((v.dtype != DSPP_F32 && v.dtype != dtype) || shape_of(v) != shape) {
      fail(std::string(name) + " must be f32 or " + dtype_name(dtype) + " " + shape_str(shape) +
           " (" + why + "), got " + describe(v));
    }
  }
  void at_least_rank(const dspp_tensor_view& v, const char* name, int rank) const {
    if (v.ndim < rank) {
      fail(std::string(name) + " must have at least " + std::to_string(rank) +
           " dimension(s), got " + describe(v));
    }
  }
  // Counts the kernels keep in 32-bit integers (grid sizes, row lengths).
  void below_2_31(int64_t n, const std::string& what) const {
    if (n > INT_MAX)
      fail(what + " is " + std::to_string(n) + ", more than this kernel handles (2^31 - 1)");
  }
  void distinct(const dspp_tensor_view& a, const char* an, const dspp_tensor_view& b,
                const char* bn) const {
    if (a.data && a.data == b.data) fail(std::string(an) + " must not be the same memory as " + bn);
  }

 private:
  void check(const dspp_tensor_view& v, const char* name) const {
    if (v.ndim < 0 || v.ndim > DSPP_MAX_DIMS) {
      fail(std::string(name) + " has ndim " + std::to_string(v.ndim));
    }
    for (int i = 0; i < v.ndim; ++i) {
      if (v.shape[i] < 0) fail(std::string(name) + " has a negative dimension: " + describe(v));
    }
    if (v.device.type != DSPP_DEVICE_CUDA) {
      fail(std::string(name) + " must be CUDA device memory, got " + describe(v));
    }
    if (!v.data && numel(v) > 0) fail(std::string(name) + " has no data: " + describe(v));
  }
  const char* method_;
};

std::vector<int64_t> all_but_last(const dspp_tensor_view& v) {
  return std::vector<int64_t>(v.shape, v.shape + (v.ndim > 0 ? v.ndim - 1 : 0));
}

class CudaKernels final : public dspp::DeviceKernels {
 public:
  CudaKernels(const dspp_host_api* host, dspp::Device& device, std::function<void()> bind)
      : host_(host), device_(device), bind_(std::move(bind)), gemm_(host) {}

  uint32_t version() const noexcept override { return DSPP_DEVICE_KERNELS_VERSION; }

  dspp_status gemm(const dspp_tensor_view* a, int32_t trans_a, const dspp_tensor_view* b,
                   int32_t trans_b, const dspp_tensor_view* c, float alpha, float beta,
                   int32_t epilogue, const dspp_tensor_view* bias, const dspp_tensor_view* pre_gelu,
                   uint32_t flags, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("gemm");
      const dspp_tensor_view& va = args.need(a, "a");
      const dspp_tensor_view& vb = args.need(b, "b");
      const dspp_tensor_view& vc = args.need(c, "c");
      const dspp_tensor_view* vbias = args.maybe(bias, "bias");
      const dspp_tensor_view* vpre = args.maybe(pre_gelu, "pre_gelu");
      args.floating(va, "a");
      args.at_least_rank(va, "a", 1);
      args.at_least_rank(vb, "b", 1);
      args.at_least_rank(vc, "c", 1);
      if (vb.dtype != va.dtype) {
        args.fail("b must have a's dtype " + std::string(dtype_name(va.dtype)) + ", got " +
                  describe(vb));
      }
      if (vc.dtype != va.dtype && vc.dtype != DSPP_F32) {
        args.fail("c must be f32 or a's dtype " + std::string(dtype_name(va.dtype)) + ", got " +
                  describe(vc));
      }
      if (epilogue < DSPP_GEMM_EPILOGUE_NONE || epilogue > DSPP_GEMM_EPILOGUE_BIAS_GELU) {
        args.fail("epilogue " + std::to_string(epilogue) + " is not a DSPP_GEMM_EPILOGUE_*");
      }
      if ((flags & ~uint32_t(DSPP_GEMM_ALLOW_TF32)) != 0) {
        args.fail("unknown flags " + std::to_string(flags));
      }
      const Mat ma = matrix_of(va), mb = matrix_of(vb), mc = matrix_of(vc);
      const int64_t m = trans_a ? ma.cols : ma.rows, k = trans_a ? ma.rows : ma.cols;
      const int64_t kb = trans_b ? mb.cols : mb.rows, n = trans_b ? mb.rows : mb.cols;
      if (kb != k) {
        args.fail("op(a) is [" + std::to_string(m) + ", " + std::to_string(k) + "] (a " +
                  describe(va) + (trans_a ? ", transposed" : "") + ") but op(b) is [" +
                  std::to_string(kb) + ", " + std::to_string(n) + "] (b " + describe(vb) +
                  (trans_b ? ", transposed" : "") + "): the inner dimensions differ");
      }
      if (mc.rows != m || mc.cols != n) {
        args.fail("c must be a [" + std::to_string(m) + ", " + std::to_string(n) +
                  "] matrix (op(a) op(b)), got " + describe(vc));
      }
      args.distinct(vc, "c", va, "a");
      args.distinct(vc, "c", vb, "b");
      const bool want_bias = epilogue & DSPP_GEMM_EPILOGUE_BIAS;
      const bool want_gelu = epilogue & DSPP_GEMM_EPILOGUE_GELU;
      if (want_bias && !vbias) args.fail("bias is NULL but the epilogue adds a bias");
      if (!want_bias && vbias) args.fail("bias is given but the epilogue has no bias");
      if (vbias) args.like(*vbias, "bias", vc.dtype, {n}, "c's dtype and columns");
      if (vpre && !want_gelu) args.fail("pre_gelu is given but the epilogue has no GELU");
      if (vpre) {
        args.count(*vpre, "pre_gelu", vc.dtype, m * n, "like c");
        args.distinct(*vpre, "pre_gelu", vc, "c");
      }
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      GemmArgs g;
      g.ab_dtype = va.dtype;
      g.c_dtype = vc.dtype;
      g.a = va.data;
      g.b = vb.data;
      g.c = vc.data;
      g.trans_a = trans_a != 0;
      g.trans_b = trans_b != 0;
      g.m = m;
      g.n = n;
      g.k = k;
      g.lda = ma.cols;
      g.ldb = mb.cols;
      g.ldc = n;
      g.alpha = alpha;
      g.beta = beta;
      g.bias_epilogue = want_bias;
      g.gelu_epilogue = want_gelu;
      g.bias = vbias ? vbias->data : nullptr;
      g.pre_gelu = vpre ? vpre->data : nullptr;
      g.allow_tf32 = flags & DSPP_GEMM_ALLOW_TF32;
      gemm_.run(g, scratch);
    });
  }

  dspp_status bias_grad(const dspp_tensor_view* dy, const dspp_tensor_view* db, int32_t accumulate,
                        void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("bias_grad");
      const dspp_tensor_view& vdy = args.need(dy, "dy");
      const dspp_tensor_view& vdb = args.need(db, "db");
      args.floating(vdy, "dy");
      args.at_least_rank(vdy, "dy", 1);
      const Mat md = matrix_of(vdy);
      args.grad_like(vdb, "db", vdy.dtype, {md.cols}, "dy's last dimension");
      args.below_2_31(md.cols, "dy's last dimension");
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      launch_bias_grad(vdy.dtype, vdy.data, vdb.dtype, vdb.data, md.rows, md.cols, accumulate != 0,
                       scratch);
    });
  }

  dspp_status layernorm_forward(const dspp_tensor_view* x, const dspp_tensor_view* weight,
                                const dspp_tensor_view* bias, float eps, const dspp_tensor_view* y,
                                const dspp_tensor_view* mean, const dspp_tensor_view* rstd,
                                void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("layernorm_forward");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vw = args.need(weight, "weight");
      const dspp_tensor_view& vb = args.need(bias, "bias");
      const dspp_tensor_view& vy = args.need(y, "y");
      const dspp_tensor_view* vmean = args.maybe(mean, "mean");
      const dspp_tensor_view* vrstd = args.maybe(rstd, "rstd");
      args.floating(vx, "x");
      args.at_least_rank(vx, "x", 1);
      const Mat mx = matrix_of(vx);
      if (mx.cols == 0) args.fail("x's last dimension is 0: " + describe(vx));
      args.like(vw, "weight", vx.dtype, {mx.cols}, "x's dtype and last dimension");
      args.like(vb, "bias", vx.dtype, {mx.cols}, "x's dtype and last dimension");
      args.like(vy, "y", vx.dtype, shape_of(vx), "like x");
      if (vmean) args.count(*vmean, "mean", DSPP_F32, mx.rows, "one per row of x");
      if (vrstd) args.count(*vrstd, "rstd", DSPP_F32, mx.rows, "one per row of x");
      if (!std::isfinite(eps) || eps < 0)
        args.fail("eps must be finite and >= 0, got " + std::to_string(eps));
      args.below_2_31(mx.rows, "the number of rows of x");
      args.below_2_31(mx.cols, "x's last dimension");
      bind_();
      launch_layernorm_forward(vx.dtype, vx.data, vw.data, vb.data, eps, vy.data,
                               vmean ? static_cast<float*>(vmean->data) : nullptr,
                               vrstd ? static_cast<float*>(vrstd->data) : nullptr, mx.rows, mx.cols,
                               static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status layernorm_backward(const dspp_tensor_view* dy, const dspp_tensor_view* x,
                                 const dspp_tensor_view* weight, const dspp_tensor_view* mean,
                                 const dspp_tensor_view* rstd, const dspp_tensor_view* dx,
                                 const dspp_tensor_view* dweight, const dspp_tensor_view* dbias,
                                 void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("layernorm_backward");
      const dspp_tensor_view& vdy = args.need(dy, "dy");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vw = args.need(weight, "weight");
      const dspp_tensor_view& vmean = args.need(mean, "mean");
      const dspp_tensor_view& vrstd = args.need(rstd, "rstd");
      const dspp_tensor_view* vdx = args.maybe(dx, "dx");
      const dspp_tensor_view* vdw = args.maybe(dweight, "dweight");
      const dspp_tensor_view* vdb = args.maybe(dbias, "dbias");
      args.floating(vx, "x");
      args.at_least_rank(vx, "x", 1);
      const Mat mx = matrix_of(vx);
      if (mx.cols == 0) args.fail("x's last dimension is 0: " + describe(vx));
      args.like(vdy, "dy", vx.dtype, shape_of(vx), "like x");
      args.like(vw, "weight", vx.dtype, {mx.cols}, "x's dtype and last dimension");
      args.count(vmean, "mean", DSPP_F32, mx.rows, "one per row of x");
      args.count(vrstd, "rstd", DSPP_F32, mx.rows, "one per row of x");
      if (vdx) args.like(*vdx, "dx", vx.dtype, shape_of(vx), "like x");
      if (vdw) args.grad_like(*vdw, "dweight", vx.dtype, {mx.cols}, "x's last dimension");
      if (vdb) args.grad_like(*vdb, "dbias", vx.dtype, {mx.cols}, "x's last dimension");
      if (vdw && vdb && vdw->dtype != vdb->dtype) {
        args.fail("dweight and dbias must have one dtype, got " + describe(*vdw) + " and " +
                  describe(*vdb));
      }
      args.below_2_31(mx.rows, "the number of rows of x");
      args.below_2_31(mx.cols, "x's last dimension");
      if (!vdx && !vdw && !vdb) return;
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      const int32_t grad_dtype = vdw ? vdw->dtype : vdb ? vdb->dtype : DSPP_F32;
      launch_layernorm_backward(
          vx.dtype, vdy.data, vx.data, vw.data, static_cast<const float*>(vmean.data),
          static_cast<const float*>(vrstd.data), vdx ? vdx->data : nullptr, grad_dtype,
          vdw ? vdw->data : nullptr, vdb ? vdb->data : nullptr, mx.rows, mx.cols, scratch);
    });
  }

  dspp_status gelu_forward(const dspp_tensor_view* x, const dspp_tensor_view* y,
                           void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("gelu_forward");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vy = args.need(y, "y");
      args.floating(vx, "x");
      args.like(vy, "y", vx.dtype, shape_of(vx), "like x");
      bind_();
      launch_gelu_forward(vx.dtype, vx.data, vy.data, numel(vx), static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status gelu_backward(const dspp_tensor_view* x, const dspp_tensor_view* dy,
                            const dspp_tensor_view* dx, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("gelu_backward");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vdy = args.need(dy, "dy");
      const dspp_tensor_view& vdx = args.need(dx, "dx");
      args.floating(vx, "x");
      args.like(vdy, "dy", vx.dtype, shape_of(vx), "like x");
      args.like(vdx, "dx", vx.dtype, shape_of(vx), "like x");
      bind_();
      launch_gelu_backward(vx.dtype, vx.data, vdy.data, vdx.data, numel(vx),
                           static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status cross_entropy(const dspp_tensor_view* logits, const dspp_tensor_view* targets,
                            int64_t ignore_index, float scale, const dspp_tensor_view* losses,
                            const dspp_tensor_view* mean_loss, const dspp_tensor_view* dlogits,
                            void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("cross_entropy");
      const dspp_tensor_view& vl = args.need(logits, "logits");
      const dspp_tensor_view& vt = args.need(targets, "targets");
      const dspp_tensor_view* vloss = args.maybe(losses, "losses");
      const dspp_tensor_view* vmean = args.maybe(mean_loss, "mean_loss");
      const dspp_tensor_view* vd = args.maybe(dlogits, "dlogits");
      args.floating(vl, "logits");
      args.at_least_rank(vl, "logits", 1);
      const Mat ml = matrix_of(vl);
      if (ml.cols == 0) args.fail("logits' last dimension (the classes) is 0: " + describe(vl));
      args.like(vt, "targets", DSPP_I32, all_but_last(vl),
                "i32, shaped like logits without the last dimension");
      if (vloss) args.count(*vloss, "losses", DSPP_F32, ml.rows, "one per row of logits");
      if (vmean) args.count(*vmean, "mean_loss", DSPP_F32, 1, "one value");
      if (vd) args.like(*vd, "dlogits", vl.dtype, shape_of(vl), "like logits");
      args.below_2_31(ml.rows, "the number of rows of logits");
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      launch_cross_entropy(
          vl.dtype, vl.data, static_cast<const int32_t*>(vt.data), ml.rows, ml.cols, ignore_index,
          scale, vloss ? static_cast<float*>(vloss->data) : nullptr,
          vmean ? static_cast<float*>(vmean->data) : nullptr, vd ? vd->data : nullptr, scratch);
    });
  }

  dspp_status embedding_forward(const dspp_tensor_view* ids, const dspp_tensor_view* weight,
                                const dspp_tensor_view* out, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("embedding_forward");
      const dspp_tensor_view& vids = args.need(ids, "ids");
      const dspp_tensor_view& vw = args.need(weight, "weight");
      const dspp_tensor_view& vo = args.need(out, "out");
      if (vids.dtype != DSPP_I32) args.fail("ids must be i32, got " + describe(vids));
      if (vids.ndim >= DSPP_MAX_DIMS) args.fail("ids have too many dimensions: " + describe(vids));
      args.floating(vw, "weight");
      if (vw.ndim != 2) args.fail("weight must be [num, dim], got " + describe(vw));
      std::vector<int64_t> out_shape = shape_of(vids);
      out_shape.push_back(vw.shape[1]);
      args.like(vo, "out", vw.dtype, out_shape, "ids' shape + [dim], weight's dtype");
      args.below_2_31(numel(vids), "the number of ids");
      bind_();
      launch_embedding_forward(vw.dtype, static_cast<const int32_t*>(vids.data), vw.data, vo.data,
                               numel(vids), vw.shape[0], vw.shape[1],
                               static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status embedding_backward(const dspp_tensor_view* ids, const dspp_tensor_view* dout,
                                 const dspp_tensor_view* dweight, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("embedding_backward");
      const dspp_tensor_view& vids = args.need(ids, "ids");
      const dspp_tensor_view& vd = args.need(dout, "dout");
      const dspp_tensor_view& vdw = args.need(dweight, "dweight");
      if (vids.dtype != DSPP_I32) args.fail("ids must be i32, got " + describe(vids));
      if (vids.ndim >= DSPP_MAX_DIMS) args.fail("ids have too many dimensions: " + describe(vids));
      args.floating(vd, "dout");
      if (vdw.ndim != 2) args.fail("dweight must be [num, dim], got " + describe(vdw));
      args.grad_like(vdw, "dweight", vd.dtype, shape_of(vdw), "[num, dim], dout's dtype or f32");
      std::vector<int64_t> dout_shape = shape_of(vids);
      dout_shape.push_back(vdw.shape[1]);
      args.like(vd, "dout", vd.dtype, dout_shape, "ids' shape + [dim]");
      args.below_2_31(numel(vids), "the number of ids");
      args.below_2_31(vdw.shape[0], "the number of embeddings");
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      launch_embedding_backward(vd.dtype, static_cast<const int32_t*>(vids.data), vd.data,
                                vdw.dtype, vdw.data, numel(vids), vdw.shape[0], vdw.shape[1],
                                scratch);
    });
  }

  dspp_status attention_forward(const dspp_tensor_view* qkv, int32_t n_head,
                                const dspp_tensor_view* y, const dspp_tensor_view* lse,
                                void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("attention_forward");
      const dspp_tensor_view& vqkv = args.need(qkv, "qkv");
      const dspp_tensor_view& vy = args.need(y, "y");
      const dspp_tensor_view& vlse = args.need(lse, "lse");
      const Shape s = attention_shape(args, vqkv, n_head);
      args.like(vy, "y", vqkv.dtype, {s.b, s.t, s.c}, "[B, T, C], qkv's dtype");
      args.like(vlse, "lse", DSPP_F32, {s.b, n_head, s.t}, "[B, n_head, T]");
      bind_();
      launch_attention_forward(vqkv.dtype, vqkv.data, vy.data, static_cast<float*>(vlse.data), s.b,
                               s.t, s.c, n_head, static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status attention_backward(const dspp_tensor_view* qkv, const dspp_tensor_view* y,
                                 const dspp_tensor_view* lse, const dspp_tensor_view* dy,
                                 int32_t n_head, const dspp_tensor_view* dqkv,
                                 void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("attention_backward");
      const dspp_tensor_view& vqkv = args.need(qkv, "qkv");
      const dspp_tensor_view& vy = args.need(y, "y");
      const dspp_tensor_view& vlse = args.need(lse, "lse");
      const dspp_tensor_view& vdy = args.need(dy, "dy");
      const dspp_tensor_view& vdqkv = args.need(dqkv, "dqkv");
      const Shape s = attention_shape(args, vqkv, n_head);
      args.like(vy, "y", vqkv.dtype, {s.b, s.t, s.c}, "[B, T, C], qkv's dtype");
      args.like(vlse, "lse", DSPP_F32, {s.b, n_head, s.t}, "[B, n_head, T]");
      args.like(vdy, "dy", vqkv.dtype, {s.b, s.t, s.c}, "[B, T, C], qkv's dtype");
      args.like(vdqkv, "dqkv", vqkv.dtype, shape_of(vqkv), "like qkv");
      args.distinct(vdqkv, "dqkv", vqkv, "qkv");
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      launch_attention_backward(vqkv.dtype, vqkv.data, vy.data,
                                static_cast<const float*>(vlse.data), vdy.data, vdqkv.data, s.b,
                                s.t, s.c, n_head, scratch);
    });
  }

  dspp_status add(const dspp_tensor_view* a, const dspp_tensor_view* b, const dspp_tensor_view* out,
                  void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("add");
      const dspp_tensor_view& va = args.need(a, "a");
      const dspp_tensor_view& vb = args.need(b, "b");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(va, "a");
      args.like(vb, "b", va.dtype, shape_of(va), "like a");
      args.like(vo, "out", va.dtype, shape_of(va), "like a");
      bind_();
      launch_add(va.dtype, va.data, vb.data, vo.data, numel(va), static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status scale(const dspp_tensor_view* x, float alpha, const dspp_tensor_view* out,
                    void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("scale");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(vx, "x");
      args.like(vo, "out", vx.dtype, shape_of(vx), "like x");
      bind_();
      launch_scale(vx.dtype, vx.data, alpha, vo.data, numel(vx), static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status fill(const dspp_tensor_view* out, double value, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("fill");
      const dspp_tensor_view& vo = args.need(out, "out");
      if (!is_float(vo.dtype) && vo.dtype != DSPP_I32) {
        args.fail("out must be f32, bf16, f16 or i32, got " + describe(vo));
      }
      bind_();
      launch_fill(vo.dtype, vo.data, value, numel(vo), static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status fill_uniform(const dspp_tensor_view* out, uint64_t seed, uint64_t offset, float low,
                           float high, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("fill_uniform");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(vo, "out");
      const float span = high - low;
      if (!std::isfinite(low) || !std::isfinite(span) || span < 0.0f) {
        args.fail("low and high must be finite with low <= high, got " + std::to_string(low) +
                  " and " + std::to_string(high));
      }
      bind_();
      launch_fill_random(vo.dtype, vo.data, numel(vo), seed, offset, false, low, span,
                         static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status fill_normal(const dspp_tensor_view* out, uint64_t seed, uint64_t offset, float mean,
                          float std, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("fill_normal");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(vo, "out");
      if (!std::isfinite(mean) || !std::isfinite(std) || std < 0.0f) {
        args.fail("mean must be finite and std finite and >= 0, got " + std::to_string(mean) +
                  " and " + std::to_string(std));
      }
      bind_();
      launch_fill_random(vo.dtype, vo.data, numel(vo), seed, offset, true, mean, std,
                         static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status cast(const dspp_tensor_view* x, const dspp_tensor_view* out,
                   void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("cast");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(vx, "x");
      args.floating(vo, "out");
      if (shape_of(vo) != shape_of(vx)) {
        args.fail("out must be shaped like x " + shape_str(shape_of(vx)) + ", got " + describe(vo));
      }
      if (vo.dtype != vx.dtype) args.distinct(vo, "out", vx, "x");
      bind_();
      launch_cast(vx.dtype, vx.data, vo.dtype, vo.data, numel(vx),
                  static_cast<cudaStream_t>(stream));
    });
  }

  // ---- version 2 ----

  dspp_status sum_squares(const dspp_tensor_view* x, const dspp_tensor_view* out,
                          int32_t accumulate, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("sum_squares");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(vx, "x");
      args.count(vo, "out", DSPP_F64, 1, "one value");
      bind_();
      Scratch scratch(device_, static_cast<cudaStream_t>(stream));
      launch_sum_squares(vx.dtype, vx.data, numel(vx), static_cast<double*>(vo.data),
                         accumulate != 0, scratch);
    });
  }

  dspp_status adam_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                        const dspp_tensor_view* m, const dspp_tensor_view* v,
                        const DeviceAdamConsts* k, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("adam_step");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vg = args.need(g, "g");
      const dspp_tensor_view& vm = args.need(m, "m");
      const dspp_tensor_view& vv = args.need(v, "v");
      if (!k) args.fail("k is NULL");
      if (vp.dtype != DSPP_F32) args.fail("p must be f32, got " + describe(vp));
      const int64_t n = numel(vp);
      args.count(vg, "g", DSPP_F32, n, "like p");
      args.count(vm, "m", DSPP_F32, n, "like p");
      args.count(vv, "v", DSPP_F32, n, "like p");
      args.distinct(vg, "g", vp, "p");
      args.distinct(vm, "m", vp, "p");
      args.distinct(vv, "v", vp, "p");
      args.distinct(vm, "m", vg, "g");
      args.distinct(vv, "v", vg, "g");
      args.distinct(vv, "v", vm, "m");
      bind_();
      launch_adam_step(static_cast<float*>(vp.data), static_cast<const float*>(vg.data),
                       static_cast<float*>(vm.data), static_cast<float*>(vv.data), n, *k,
                       static_cast<cudaStream_t>(stream));
    });
  }

  // ---- version 3 ----

  dspp_status sgd_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                       const dspp_tensor_view* buf, const DeviceSgdConsts* k,
                       void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("sgd_step");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vg = args.need(g, "g");
      const dspp_tensor_view* vbuf = args.maybe(buf, "buf");
      if (!k) args.fail("k is NULL");
      const int64_t n = f32_count(args, vp, "p");
      args.count(vg, "g", DSPP_F32, n, "like p");
      args.distinct(vg, "g", vp, "p");
      if (!vbuf && k->momentum != 0.0f) {
        args.fail("buf is NULL but the momentum is " + std::to_string(k->momentum));
      }
      if (vbuf) {
        args.count(*vbuf, "buf", DSPP_F32, n, "like p");
        args.distinct(*vbuf, "buf", vp, "p");
        args.distinct(*vbuf, "buf", vg, "g");
      }
      bind_();
      launch_sgd_step(static_cast<float*>(vp.data), static_cast<const float*>(vg.data),
                      vbuf ? static_cast<float*>(vbuf->data) : nullptr, n, *k,
                      static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status lion_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                        const dspp_tensor_view* m, const DeviceLionConsts* k,
                        void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("lion_step");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vg = args.need(g, "g");
      const dspp_tensor_view& vm = args.need(m, "m");
      if (!k) args.fail("k is NULL");
      const int64_t n = f32_count(args, vp, "p");
      args.count(vg, "g", DSPP_F32, n, "like p");
      args.count(vm, "m", DSPP_F32, n, "like p");
      args.distinct(vg, "g", vp, "p");
      args.distinct(vm, "m", vp, "p");
      args.distinct(vm, "m", vg, "g");
      bind_();
      launch_lion_step(static_cast<float*>(vp.data), static_cast<const float*>(vg.data),
                       static_cast<float*>(vm.data), n, *k, static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status adagrad_step(const dspp_tensor_view* p, const dspp_tensor_view* g,
                           const dspp_tensor_view* sum, const DeviceAdagradConsts* k,
                           void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("adagrad_step");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vg = args.need(g, "g");
      const dspp_tensor_view& vs = args.need(sum, "sum");
      if (!k) args.fail("k is NULL");
      const int64_t n = f32_count(args, vp, "p");
      args.count(vg, "g", DSPP_F32, n, "like p");
      args.count(vs, "sum", DSPP_F32, n, "like p");
      args.distinct(vg, "g", vp, "p");
      args.distinct(vs, "sum", vp, "p");
      args.distinct(vs, "sum", vg, "g");
      bind_();
      launch_adagrad_step(static_cast<float*>(vp.data), static_cast<const float*>(vg.data),
                          static_cast<float*>(vs.data), n, *k, static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status lamb_moments(const dspp_tensor_view* p, const dspp_tensor_view* g,
                           const dspp_tensor_view* m, const dspp_tensor_view* v,
                           const DeviceLambConsts* k, const dspp_tensor_view* u,
                           void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("lamb_moments");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vg = args.need(g, "g");
      const dspp_tensor_view& vm = args.need(m, "m");
      const dspp_tensor_view& vv = args.need(v, "v");
      const dspp_tensor_view& vu = args.need(u, "u");
      if (!k) args.fail("k is NULL");
      const int64_t n = f32_count(args, vp, "p");
      args.count(vg, "g", DSPP_F32, n, "like p");
      args.count(vm, "m", DSPP_F32, n, "like p");
      args.count(vv, "v", DSPP_F32, n, "like p");
      args.count(vu, "u", DSPP_F32, n, "like p");
      all_distinct(args, {{&vp, "p"}, {&vg, "g"}, {&vm, "m"}, {&vv, "v"}, {&vu, "u"}});
      bind_();
      launch_lamb_moments(static_cast<const float*>(vp.data), static_cast<const float*>(vg.data),
                          static_cast<float*>(vm.data), static_cast<float*>(vv.data),
                          static_cast<float*>(vu.data), n, *k, static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status lamb_apply(const dspp_tensor_view* p, const dspp_tensor_view* m,
                         const dspp_tensor_view* v, const DeviceLambConsts* k, float scale,
                         void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("lamb_apply");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vm = args.need(m, "m");
      const dspp_tensor_view& vv = args.need(v, "v");
      if (!k) args.fail("k is NULL");
      const int64_t n = f32_count(args, vp, "p");
      args.count(vm, "m", DSPP_F32, n, "like p");
      args.count(vv, "v", DSPP_F32, n, "like p");
      all_distinct(args, {{&vp, "p"}, {&vm, "m"}, {&vv, "v"}});
      bind_();
      launch_lamb_apply(static_cast<float*>(vp.data), static_cast<const float*>(vm.data),
                        static_cast<const float*>(vv.data), n, *k, scale,
                        static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status muon_momentum(const dspp_tensor_view* g, const dspp_tensor_view* m,
                            const dspp_tensor_view* u, float beta, float one_minus_beta,
                            void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("muon_momentum");
      const dspp_tensor_view& vg = args.need(g, "g");
      const dspp_tensor_view& vm = args.need(m, "m");
      const dspp_tensor_view& vu = args.need(u, "u");
      const int64_t n = f32_count(args, vg, "g");
      args.count(vm, "m", DSPP_F32, n, "like g");
      args.count(vu, "u", DSPP_F32, n, "like g");
      all_distinct(args, {{&vg, "g"}, {&vm, "m"}, {&vu, "u"}});
      bind_();
      launch_muon_momentum(static_cast<const float*>(vg.data), static_cast<float*>(vm.data),
                           static_cast<float*>(vu.data), n, beta, one_minus_beta,
                           static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status decayed_update(const dspp_tensor_view* p, const dspp_tensor_view* u, float decay,
                             float step, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("decayed_update");
      const dspp_tensor_view& vp = args.need(p, "p");
      const dspp_tensor_view& vu = args.need(u, "u");
      const int64_t n = f32_count(args, vp, "p");
      args.count(vu, "u", DSPP_F32, n, "like p");
      args.distinct(vu, "u", vp, "p");
      bind_();
      launch_decayed_update(static_cast<float*>(vp.data), static_cast<const float*>(vu.data), n,
                            decay, step, static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status transpose(const dspp_tensor_view* x, const dspp_tensor_view* out,
                        void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("transpose");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vo = args.need(out, "out");
      args.floating(vx, "x");
      args.at_least_rank(vx, "x", 1);
      args.at_least_rank(vo, "out", 1);
      const Mat mx = matrix_of(vx), mo = matrix_of(vo);
      if (vo.dtype != vx.dtype || mo.rows != mx.cols || mo.cols != mx.rows) {
        args.fail("out must be a " + std::string(dtype_name(vx.dtype)) + " [" +
                  std::to_string(mx.cols) + ", " + std::to_string(mx.rows) +
                  "] matrix (x transposed, x's dtype), got " + describe(vo));
      }
      args.distinct(vo, "out", vx, "x");
      bind_();
      launch_transpose(vx.dtype, vx.data, vo.data, mx.rows, mx.cols,
                       static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status add_diagonal(const dspp_tensor_view* x, float value, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("add_diagonal");
      const dspp_tensor_view& vx = args.need(x, "x");
      f32_count(args, vx, "x");
      args.at_least_rank(vx, "x", 1);
      const Mat mx = matrix_of(vx);
      if (mx.rows != mx.cols) args.fail("x must be a square matrix, got " + describe(vx));
      bind_();
      launch_add_diagonal(static_cast<float*>(vx.data), mx.rows, value,
                          static_cast<cudaStream_t>(stream));
    });
  }

  dspp_status divide_by_norm(const dspp_tensor_view* x, const dspp_tensor_view* sum_sq, float eps,
                             const dspp_tensor_view* out, void* stream) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      Args args("divide_by_norm");
      const dspp_tensor_view& vx = args.need(x, "x");
      const dspp_tensor_view& vs = args.need(sum_sq, "sum_sq");
      const dspp_tensor_view& vo = args.need(out, "out");
      const int64_t n = f32_count(args, vx, "x");
      args.count(vs, "sum_sq", DSPP_F64, 1, "one value");
      args.count(vo, "out", DSPP_F32, n, "like x");
      bind_();
      launch_divide_by_norm(static_cast<const float*>(vx.data), static_cast<const double*>(vs.data),
                            eps, static_cast<float*>(vo.data), n,
                            static_cast<cudaStream_t>(stream));
    });
  }

 private:
  struct Shape {
    int64_t b, t, c;
  };
  // qkv [B, T, 3C] with C a multiple of n_head and a head size the kernels support.
  static Shape attention_shape(const Args& args, const dspp_tensor_view& qkv, int32_t n_head) {
    args.floating(qkv, "qkv");
    if (qkv.ndim != 3 || qkv.shape[2] % 3 != 0) {
      args.fail("qkv must be [B, T, 3C], got " + describe(qkv));
    }
    const Shape s{qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3};
    if (n_head <= 0 || s.c % n_head != 0 || s.c == 0) {
      args.fail("n_head (" + std::to_string(n_head) + ") must be positive and divide C (" +
                std::to_string(s.c) + ", from qkv " + describe(qkv) + ")");
    }
    if (s.c / n_head > kAttentionMaxHeadSize) {
      args.fail("head size " + std::to_string(s.c / n_head) + " (C " + std::to_string(s.c) +
                " / n_head " + std::to_string(n_head) + ") is above the supported " +
                std::to_string(kAttentionMaxHeadSize));
    }
    args.below_2_31(s.b * n_head, "B x n_head");
    args.below_2_31(s.t, "T");
    args.below_2_31(3 * s.c, "3C");
    if ((s.t + 63) / 64 > 65535) args.fail("T " + std::to_string(s.t) + " is above 64 x 65535");
    return s;
  }

  // The element count of an f32 view (the version 3 optimizer kernels).
  static int64_t f32_count(const Args& args, const dspp_tensor_view& v, const char* name) {
    if (v.dtype != DSPP_F32) args.fail(std::string(name) + " must be f32, got " + describe(v));
    return numel(v);
  }
  // No two of the views are the same memory.
  static void all_distinct(
      const Args& args,
      std::initializer_list<std::pair<const dspp_tensor_view*, const char*>> views) {
    for (auto a = views.begin(); a != views.end(); ++a) {
      for (auto b = views.begin(); b != a; ++b)
        args.distinct(*a->first, a->second, *b->first, b->second);
    }
  }

  const dspp_host_api* host_;
  dspp::Device& device_;
  std::function<void()> bind_;
  LtGemm gemm_;
};

}  // namespace

dspp::DeviceKernels* create_kernels(const dspp_host_api* host, dspp::Device& device,
                                    std::function<void()> bind) {
  return new CudaKernels(host, device, std::move(bind));
}

void destroy_kernels(dspp::DeviceKernels* kernels) noexcept {
  delete static_cast<CudaKernels*>(kernels);
}

}  // namespace dspp::cuda
