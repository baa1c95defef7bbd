// device/cuda's layer kernels (DeviceKernels) on a real GPU, each against a float64 reference
// computed here straight from the math (not from core/nn), on random inputs with fixed seeds.
// Inputs are rounded to the tested dtype first and the reference uses the rounded values, so a
// bound only has to cover the kernel's own arithmetic (f32, some sums f64) and the rounding of
// its outputs. Backward kernels are checked against float64 analytic derivatives.
//
// Bounds (per element |got - ref| <= bound), written next to each check; the usual ones:
//   f32 outputs: ~1e-5 of the magnitude of the terms summed (f32 has a 6e-8 unit roundoff; the
//     sums here are at most a few thousand terms, summed in blocks, so errors stay near 1e-6);
//   bf16 outputs: ~1e-2 (one rounding to 8 bits of mantissa is 2^-9 = 2e-3 of the value);
//   f16 outputs: ~2e-3 (one rounding to 11 bits is 2^-12 = 2.4e-4).
// The optimizer kernels (DeviceKernels version 2): sum_squares within 1e-12 of a compensated f64
// sum (see its test for why), adam_step bit for bit against the CPU kernel's fp32 expression;
// version 3: the steps of SGD, Lion, Adagrad and LAMB and Muon's elementwise pieces bit for bit
// against the CPU kernels' fp32 expressions, transpose and add_diagonal exactly, divide_by_norm
// bit for bit against the CPU's rounding of the root; version 4: fill_uniform bit for bit against
// <dspp/philox.h> on the host, fill_normal within a few f32 ulps of a float64 Box-Muller.
// Failures print how many elements missed, the worst one (by its error over its bound) with its
// index, both values and the bound. DSPP_KERNEL_TEST_VERBOSE=1 prints the worst ratio of every
// check, also when it passes (to see how much room each bound leaves).
//
// Skipped (exit 77) without a GPU; see tests/gpu_main.cpp.
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/philox.h>
#include <dspp/plugins.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iterator>
#include <limits>
#include <memory>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "half_bits.h"
#include "test_util.h"

namespace {

// ---- dtypes on the host (our own conversions, independent of the device code) --------------

const char* dtype_name(int32_t d) {
  switch (d) {
    case DSPP_F32:
      return "f32";
    case DSPP_BF16:
      return "bf16";
    case DSPP_F16:
      return "f16";
    case DSPP_I32:
      return "i32";
    case DSPP_F64:
      return "f64";
    default:
      return "?";
  }
}

size_t dtype_size(int32_t d) {
  return d == DSPP_BF16 || d == DSPP_F16 ? 2 : d == DSPP_F64 ? 8 : 4;
}

using half_bits::bf16_bits;
using half_bits::bf16_value;
using half_bits::bits_of;
using half_bits::f16_bits;
using half_bits::f16_value;
using half_bits::float_of;

// The value as the dtype stores it.
double round_to(int32_t dtype, double v) {
  const float f = static_cast<float>(v);
  if (dtype == DSPP_BF16) return bf16_value(bf16_bits(f));
  if (dtype == DSPP_F16) return f16_value(f16_bits(f));
  return f;
}
std::vector<double> round_all(int32_t dtype, std::vector<double> v) {
  for (double& x : v) x = round_to(dtype, x);
  return v;
}

std::vector<double> normal(size_t n, double mean, double std, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(mean, std);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

// The f32 grads always, and the dtype's own when it is another.
std::vector<int32_t> grad_types(int32_t dtype) {
  if (dtype == DSPP_F32) return {DSPP_F32};
  return {DSPP_F32, dtype};
}

std::string index_str(size_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] > 0 ? static_cast<int64_t>(flat % shape[d]) : 0;
    flat = shape[d] > 0 ? flat / shape[d] : flat;
  }
  std::string s = "[";
  for (size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

// ---- comparisons ----------------------------------------------------------------------------

bool verbose() {
  const char* v = std::getenv("DSPP_KERNEL_TEST_VERBOSE");
  return v && *v && std::strcmp(v, "0") != 0;
}

// |got[i] - ref[i]| <= bound[i] for every i (NaN fails).
void expect_within(const std::string& what, const std::vector<double>& got,
                   const std::vector<double>& ref, const std::vector<double>& bound,
                   const std::vector<int64_t>& shape) {
  REQUIRE(got.size() == ref.size());
  REQUIRE(bound.size() == ref.size());
  size_t bad = 0, worst = 0;
  double worst_ratio = -1.0;
  const double inf = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < got.size(); ++i) {
    // Equal values (infinities included) pass; NaN never does.
    const double err = got[i] == ref[i] ? 0.0 : std::fabs(got[i] - ref[i]);
    double ratio;
    if (std::isnan(err)) {
      ratio = inf;
    } else if (bound[i] > 0) {
      ratio = err / bound[i];
    } else {
      ratio = err > 0 ? inf : 0.0;
    }
    if (ratio > 1.0) ++bad;
    if (ratio > worst_ratio) {  // the first of equal ratios stays
      worst_ratio = ratio;
      worst = i;
    }
  }
  std::ostringstream os;
  os << std::setprecision(9) << what << ": ";
  if (got.empty()) {
    os << "no elements";
  } else {
    os << bad << " of " << got.size() << " elements outside the bound; worst at "
       << index_str(worst, shape) << ": got " << got[worst] << ", ref " << ref[worst] << ", |diff| "
       << std::fabs(got[worst] - ref[worst]) << ", bound " << bound[worst] << " (ratio "
       << worst_ratio << ")";
  }
  if (verbose()) std::printf("%s\n", os.str().c_str());
  if (bad > 0) FAIL_CHECK(os.str());
}

// bound = atol + rtol |ref|
void expect_close(const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& ref, const std::vector<int64_t>& shape, double atol,
                  double rtol) {
  std::vector<double> bound(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) bound[i] = atol + rtol * std::fabs(ref[i]);
  expect_within(what, got, ref, bound, shape);
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// ---- the device -----------------------------------------------------------------------------

void check(dspp_status st, const std::string& what) {
  dspp::check_plugin(st, what);
}

struct Gpu {
  dspp::PluginRegistry registry;  // outlives dev (declared first)
  std::shared_ptr<dspp::Device> dev;
  dspp::DeviceKernels* k = nullptr;
  void* stream = nullptr;

  Gpu() {
    registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
    dev = registry.create<dspp::Device>("device", "cuda", nullptr);
    check(dev->set_current(0), "set_current(0)");
    k = dev->kernels();
    REQUIRE(k != nullptr);
    REQUIRE(k->version() >= 1);
    check(dev->create_stream(&stream), "create_stream");
  }
  ~Gpu() {
    if (stream) {
      (void)dev->synchronize(stream);
      (void)dev->destroy_stream(stream);
    }
  }
  void sync() { check(dev->synchronize(stream), "synchronize"); }
};

// Device memory with a view; filled with 0xFF bytes (NaN in every float dtype) until written,
// so an output element a kernel forgets shows up as NaN.
class Buf {
 public:
  Buf(Gpu& gpu, int32_t dtype, std::vector<int64_t> shape) : gpu_(gpu), shape_(std::move(shape)) {
    REQUIRE(shape_.size() <= DSPP_MAX_DIMS);
    view_ = dspp_tensor_view{};
    view_.dtype = dtype;
    view_.ndim = static_cast<int32_t>(shape_.size());
    for (size_t i = 0; i < shape_.size(); ++i) view_.shape[i] = shape_[i];
    view_.device = dspp_device{DSPP_DEVICE_CUDA, 0};
    view_.stream = gpu.stream;
    bytes_ = static_cast<size_t>(product(shape_)) * dtype_size(dtype);
    check(gpu.dev->alloc(bytes_, gpu.stream, &view_.data), "alloc");
    check(gpu.dev->memset(view_.data, 0xFF, bytes_, gpu.stream), "memset");
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() {
    if (view_.data) (void)gpu_.dev->free(view_.data, gpu_.stream);
  }

  const dspp_tensor_view* v() const { return &view_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return product(shape_); }

  // Values rounded to the dtype (the caller passes values already rounded to compare exactly).
  void upload(const std::vector<double>& values) {
    REQUIRE(static_cast<int64_t>(values.size()) == numel());
    std::vector<unsigned char> host(bytes_);
    for (size_t i = 0; i < values.size(); ++i) {
      const float f = static_cast<float>(values[i]);
      if (view_.dtype == DSPP_F64) {
        std::memcpy(&host[8 * i], &values[i], 8);
      } else if (view_.dtype == DSPP_F32) {
        std::memcpy(&host[4 * i], &f, 4);
      } else if (view_.dtype == DSPP_BF16) {
        const uint16_t h = bf16_bits(f);
        std::memcpy(&host[2 * i], &h, 2);
      } else if (view_.dtype == DSPP_F16) {
        const uint16_t h = f16_bits(f);
        std::memcpy(&host[2 * i], &h, 2);
      } else {
        FAIL("upload: not a float dtype");
      }
    }
    put(host);
  }
  void upload_i32(const std::vector<int32_t>& values) {
    REQUIRE(view_.dtype == DSPP_I32);
    REQUIRE(static_cast<int64_t>(values.size()) == numel());
    std::vector<unsigned char> host(bytes_);
    if (bytes_) std::memcpy(host.data(), values.data(), bytes_);
    put(host);
  }
  std::vector<double> download() const {
    const std::vector<unsigned char> host = raw();
    std::vector<double> out(static_cast<size_t>(numel()));
    for (size_t i = 0; i < out.size(); ++i) {
      if (view_.dtype == DSPP_F32) {
        float f;
        std::memcpy(&f, &host[4 * i], 4);
        out[i] = f;
      } else if (view_.dtype == DSPP_I32) {
        int32_t x;
        std::memcpy(&x, &host[4 * i], 4);
        out[i] = x;
      } else if (view_.dtype == DSPP_F64) {
        std::memcpy(&out[i], &host[8 * i], 8);
      } else {
        uint16_t h;
        std::memcpy(&h, &host[2 * i], 2);
        out[i] = view_.dtype == DSPP_BF16 ? bf16_value(h) : f16_value(h);
      }
    }
    return out;
  }
  // The bytes, after the stream's work so far.
  std::vector<unsigned char> raw() const {
    std::vector<unsigned char> host(bytes_);
    if (bytes_) check(gpu_.dev->copy(host.data(), view_.data, bytes_, gpu_.stream), "copy d2h");
    gpu_.sync();
    return host;
  }

 private:
  void put(const std::vector<unsigned char>& host) {
    if (bytes_) check(gpu_.dev->copy(view_.data, host.data(), bytes_, gpu_.stream), "copy h2d");
  }
  Gpu& gpu_;
  std::vector<int64_t> shape_;
  dspp_tensor_view view_;
  size_t bytes_ = 0;
};

// The tolerance of one rounding-dominated output, by dtype (see the top of the file).
double tol_of(int32_t dtype) {
  return dtype == DSPP_BF16 ? 1e-2 : dtype == DSPP_F16 ? 2e-3 : 1e-5;
}

const int32_t kFloatTypes[] = {DSPP_F32, DSPP_BF16, DSPP_F16};

// ---- references -----------------------------------------------------------------------------

constexpr double kGeluK = 0.7978845608028654;  // sqrt(2 / pi)

double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(kGeluK * (x + 0.044715 * x * x * x)));
}
double gelu_grad_ref(double x) {
  const double t = std::tanh(kGeluK * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kGeluK * (1.0 + 3.0 * 0.044715 * x * x);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: bad arguments fail with a message naming the argument",
          "[gpu][kernels]") {
  Gpu g;
  Buf x(g, DSPP_F32, {4, 8});
  Buf w(g, DSPP_F32, {6, 8});
  Buf y(g, DSPP_F32, {4, 6});
  Buf wrong(g, DSPP_F32, {4, 7});
  Buf ids(g, DSPP_F32, {4});
  auto expect_error = [](dspp_status st, const std::string& part) {
    CHECK(st == DSPP_ERR_INVALID_ARGUMENT);
    const std::string msg = dspp::last_plugin_error();
    INFO("message: " << msg);
    CHECK(contains(msg, part));
  };
  expect_error(g.k->gemm(nullptr, 0, w.v(), 1, y.v(), 1, 0, DSPP_GEMM_EPILOGUE_NONE, nullptr,
                         nullptr, 0, g.stream),
               "gemm: a is NULL");
  expect_error(g.k->gemm(x.v(), 0, w.v(), 0, y.v(), 1, 0, DSPP_GEMM_EPILOGUE_NONE, nullptr, nullptr,
                         0, g.stream),
               "inner dimensions differ");
  expect_error(g.k->gemm(x.v(), 0, w.v(), 1, wrong.v(), 1, 0, DSPP_GEMM_EPILOGUE_NONE, nullptr,
                         nullptr, 0, g.stream),
               "c must be a [4, 6] matrix");
  expect_error(g.k->gemm(x.v(), 0, w.v(), 1, y.v(), 1, 0, DSPP_GEMM_EPILOGUE_BIAS, nullptr, nullptr,
                         0, g.stream),
               "bias is NULL");
  dspp_tensor_view host_view = *x.v();
  host_view.device = dspp_device{DSPP_DEVICE_CPU, 0};
  expect_error(g.k->gelu_forward(&host_view, y.v(), g.stream), "x must be CUDA device memory");
  expect_error(g.k->gelu_forward(x.v(), y.v(), g.stream), "y must be f32 [4, 8]");
  expect_error(
      g.k->layernorm_forward(x.v(), wrong.v(), wrong.v(), 1e-5f, x.v(), nullptr, nullptr, g.stream),
      "layernorm_forward: weight must be f32 [8]");
  expect_error(g.k->cross_entropy(x.v(), ids.v(), -100, 1.0f, nullptr, nullptr, nullptr, g.stream),
               "targets must be i32 [4]");
  expect_error(g.k->embedding_forward(ids.v(), w.v(), y.v(), g.stream), "ids must be i32");
  Buf qkv(g, DSPP_F32, {1, 2, 3 * 512});
  Buf att_y(g, DSPP_F32, {1, 2, 512});
  Buf lse(g, DSPP_F32, {1, 2, 2});
  expect_error(g.k->attention_forward(qkv.v(), 2, att_y.v(), lse.v(), g.stream), "head size 256");
  expect_error(g.k->attention_forward(qkv.v(), 3, att_y.v(), lse.v(), g.stream), "n_head (3)");
  expect_error(g.k->cast(x.v(), y.v(), g.stream), "out must be shaped like x");
  g.sync();
}

// ---- GEMM -----------------------------------------------------------------------------------

namespace {

struct GemmCase {
  const char* label;
  std::vector<int64_t> a_shape;
  int32_t ta;  // transposed
  std::vector<int64_t> b_shape;
  int32_t tb;
  std::vector<int64_t> c_shape;
  float alpha, beta;
  int32_t epilogue;
  int32_t pre_gelu;  // pass a pre_gelu output
};

// Runs one GEMM and compares c (and pre_gelu) with the float64 reference. Per element the bound
// is tol x (|alpha| sum_k |a b| + |beta c0| + |bias|), x1.2 after GELU (its slope is below 1.13),
// + 1e-6 (the f32 GELU formula's own cancellation in 1 + tanh for x << 0, the CPU's too).
void run_gemm(Gpu& g, int32_t ab_dtype, int32_t c_dtype, const GemmCase& cs, uint32_t flags,
              double tol, uint64_t seed) {
  INFO("gemm " << cs.label << ", a/b " << dtype_name(ab_dtype) << ", c " << dtype_name(c_dtype)
               << (flags & DSPP_GEMM_ALLOW_TF32 ? ", tf32" : ""));
  // A view's matrix: [product of all dimensions but the last, the last].
  auto mat = [](const std::vector<int64_t>& s) {
    return std::pair<int64_t, int64_t>(product({s.begin(), s.end() - 1}), s.back());
  };
  const auto [ar, ac] = mat(cs.a_shape);
  const auto [br, bc] = mat(cs.b_shape);
  const int64_t m = cs.ta ? ac : ar, k = cs.ta ? ar : ac, n = cs.tb ? br : bc;
  REQUIRE((cs.tb ? bc : br) == k);
  REQUIRE(product(cs.c_shape) == m * n);
  const bool has_bias = cs.epilogue & DSPP_GEMM_EPILOGUE_BIAS;
  const bool has_gelu = cs.epilogue & DSPP_GEMM_EPILOGUE_GELU;

  const auto a = round_all(ab_dtype, normal(static_cast<size_t>(ar * ac), 0, 1, seed));
  const auto b = round_all(ab_dtype, normal(static_cast<size_t>(br * bc), 0, 1, seed + 1));
  const auto c0 = round_all(c_dtype, normal(static_cast<size_t>(m * n), 0, 1, seed + 2));
  const auto bias = round_all(c_dtype, normal(static_cast<size_t>(n), 0, 1, seed + 3));
  Buf da(g, ab_dtype, cs.a_shape), db(g, ab_dtype, cs.b_shape), dc(g, c_dtype, cs.c_shape);
  Buf dbias(g, c_dtype, {n}), dpre(g, c_dtype, cs.c_shape);
  da.upload(a);
  db.upload(b);
  // With beta 0, c is left as allocated (NaN everywhere): c must not be read then.
  if (cs.beta != 0) dc.upload(c0);
  dbias.upload(bias);
  check(
      g.k->gemm(da.v(), cs.ta, db.v(), cs.tb, dc.v(), cs.alpha, cs.beta, cs.epilogue,
                has_bias ? dbias.v() : nullptr, cs.pre_gelu ? dpre.v() : nullptr, flags, g.stream),
      std::string("gemm ") + cs.label);

  std::vector<double> ref(m * n), ref_pre(m * n), bound(m * n), bound_pre(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0, mag = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const double av = cs.ta ? a[kk * ac + i] : a[i * ac + kk];
        const double bv = cs.tb ? b[j * bc + kk] : b[kk * bc + j];
        acc += av * bv;
        mag += std::fabs(av * bv);
      }
      double pre = cs.alpha * acc + (cs.beta != 0 ? cs.beta * c0[i * n + j] : 0.0);
      double scale = std::fabs(cs.alpha) * mag + std::fabs(cs.beta * c0[i * n + j]);
      if (has_bias) {
        pre += bias[j];
        scale += std::fabs(bias[j]);
      }
      ref_pre[i * n + j] = pre;
      bound_pre[i * n + j] = tol * scale + 1e-6;
      ref[i * n + j] = has_gelu ? gelu_ref(pre) : pre;
      bound[i * n + j] = (has_gelu ? 1.2 : 1.0) * tol * scale + 1e-6;
    }
  }
  expect_within(std::string("gemm ") + cs.label + " c", dc.download(), ref, bound, {m, n});
  if (cs.pre_gelu) {
    expect_within(std::string("gemm ") + cs.label + " pre_gelu", dpre.download(), ref_pre,
                  bound_pre, {m, n});
  }
}

// Linear's three GEMMs (x [.., in], W [out, in]) and the other patterns, odd sizes; one case a
// line: label, a's shape, ta, b's shape, tb, c's shape, alpha, beta, epilogue, pre_gelu.
constexpr int32_t kNone = DSPP_GEMM_EPILOGUE_NONE, kBias = DSPP_GEMM_EPILOGUE_BIAS;
constexpr int32_t kGelu = DSPP_GEMM_EPILOGUE_GELU, kBGelu = DSPP_GEMM_EPILOGUE_BIAS_GELU;
// clang-format off
const GemmCase kGemmCases[] = {
  {"forward y = x W^T + b",          {3, 7, 45},  0, {29, 45},   1, {3, 7, 29},   1, 0, kBias, 0},
  {"forward, larger",                {2, 64, 96}, 0, {256, 96},  1, {2, 64, 256}, 1, 0, kBias, 0},
  {"forward, one row",               {1, 1, 45},  0, {29, 45},   1, {1, 1, 29},   1, 0, kBias, 0},
  {"backward_input dx = dy W",       {3, 7, 29},  0, {29, 45},   0, {3, 7, 45},   1, 0, kNone, 0},
  {"backward_weight dW += dy^T x",   {3, 7, 29},  1, {3, 7, 45}, 0, {29, 45},     1, 1, kNone, 0},
  {"a^T b^T, alpha -1.5, beta 1/4", {13, 17},    1, {19, 13},   1, {17, 19}, -1.5f, .25f, kNone, 0},
  {"bias + GELU, pre_gelu, n 64",    {1, 5, 33},  0, {64, 33},   1, {1, 5, 64},   1, 0, kBGelu, 1},
  {"bias + GELU, pre_gelu, n 29",    {37, 45},    0, {29, 45},   1, {37, 29},     1, 0, kBGelu, 1},
  {"GELU alone",                     {37, 45},    0, {40, 45},   1, {37, 40},     1, 0, kGelu, 0},
  {"k = 0: c = beta c + bias",       {4, 0},      0, {29, 0},    1, {4, 29},   1, 0.5f, kBias, 0},
  {"k = 0, beta 0: c = gelu(bias)",  {4, 0},      0, {29, 0},    1, {4, 29},      1, 0, kBGelu, 1},
};
// clang-format on

}  // namespace

TEST_CASE("device/cuda kernels: gemm, Linear's three patterns and the epilogues",
          "[gpu][kernels][gemm]") {
  Gpu g;
  uint64_t seed = 100;
  for (int32_t dt : kFloatTypes) {
    for (const GemmCase& cs : kGemmCases) run_gemm(g, dt, dt, cs, 0, tol_of(dt), seed += 10);
  }
  // bf16/f16 inputs with an f32 result (a gradient accumulated in f32): products of 8/11-bit
  // mantissas are exact in f32; 1e-4 leaves room for the tensor cores' f32 accumulation order.
  for (int32_t dt : {DSPP_BF16, DSPP_F16}) {
    run_gemm(g, dt, DSPP_F32, kGemmCases[4], 0, 1e-4, seed += 10);
    run_gemm(g, dt, DSPP_F32, kGemmCases[0], 0, 1e-4, seed += 10);
  }
  // TF32 allowed: 10-bit mantissas, about 2 x 2^-11 of the magnitude.
  run_gemm(g, DSPP_F32, DSPP_F32, kGemmCases[1], DSPP_GEMM_ALLOW_TF32, 3e-3, seed += 10);
}

TEST_CASE("device/cuda kernels: bias_grad sums columns, deterministically",
          "[gpu][kernels][gemm]") {
  Gpu g;
  struct Case {
    int64_t m, n;
  };
  uint64_t seed = 200;
  for (const Case cs : {Case{37, 29}, Case{1, 5}, Case{300, 70}, Case{2049, 33}}) {
    for (int32_t dt : kFloatTypes) {
      for (int32_t gdt : grad_types(dt)) {
        for (int accumulate : {0, 1}) {
          INFO("dy " << dtype_name(dt) << " [" << cs.m << ", " << cs.n << "], db "
                     << dtype_name(gdt) << ", accumulate " << accumulate);
          const auto dy = round_all(dt, normal(cs.m * cs.n, 0, 1, ++seed));
          const auto db0 = round_all(gdt, normal(cs.n, 0, 1, ++seed));
          Buf ddy(g, dt, {cs.m, cs.n}), ddb(g, gdt, {cs.n});
          ddy.upload(dy);
          ddb.upload(db0);
          check(g.k->bias_grad(ddy.v(), ddb.v(), accumulate, g.stream), "bias_grad");
          const std::vector<unsigned char> first = ddb.raw();
          // Bound: tol(f32 accumulation, and the output dtype) x (sum |dy| + |db0|).
          std::vector<double> ref(cs.n), bound(cs.n);
          for (int64_t j = 0; j < cs.n; ++j) {
            double s = accumulate ? db0[j] : 0.0, mag = accumulate ? std::fabs(db0[j]) : 0.0;
            for (int64_t i = 0; i < cs.m; ++i) {
              s += dy[i * cs.n + j];
              mag += std::fabs(dy[i * cs.n + j]);
            }
            ref[j] = s;
            bound[j] = std::max(tol_of(gdt), 2e-6) * mag + 1e-6;
          }
          expect_within("bias_grad", ddb.download(), ref, bound, {cs.n});
          // The same bits again from the same start.
          ddb.upload(db0);
          check(g.k->bias_grad(ddy.v(), ddb.v(), accumulate, g.stream), "bias_grad");
          CHECK(ddb.raw() == first);
        }
      }
    }
  }
}

// ---- LayerNorm ------------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: layernorm forward and backward", "[gpu][kernels][layernorm]") {
  Gpu g;
  struct Case {
    std::vector<int64_t> shape;  // [..., C]
  };
  const float eps = 1e-5f;
  uint64_t seed = 300;
  // C below a warp, not a multiple of 32, above the 256 threads of a block, and above the 6144
  // columns whose backward accumulators fit in shared memory.
  for (const Case& cs : {Case{{1, 7, 45}}, Case{{3, 33, 96}}, Case{{2, 5, 1000}}, Case{{3, 7000}},
                         Case{{1, 1, 1}}}) {
    for (int32_t dt : kFloatTypes) {
      for (int32_t gdt : grad_types(dt)) {
        const int64_t c = cs.shape.back(), rows = product(cs.shape) / c;
        INFO("layernorm x " << dtype_name(dt) << " " << shape_str(cs.shape) << " with C " << c
                            << ", rows " << rows << ", grads " << dtype_name(gdt));
        const auto x = round_all(dt, normal(rows * c, 0.5, 2.0, ++seed));
        const auto w = round_all(dt, normal(c, 1.0, 0.2, ++seed));
        const auto b = round_all(dt, normal(c, 0.0, 0.5, ++seed));
        const auto dy = round_all(dt, normal(rows * c, 0.0, 1.0, ++seed));
        const auto dw0 = round_all(gdt, normal(c, 0.0, 1.0, ++seed));
        const auto db0 = round_all(gdt, normal(c, 0.0, 1.0, ++seed));
        Buf dx_(g, dt, cs.shape), dw_(g, dt, {c}), db_(g, dt, {c}), dy_(g, dt, cs.shape);
        Buf y_(g, dt, cs.shape), mean_(g, DSPP_F32, {rows}), rstd_(g, DSPP_F32, {rows});
        Buf gx_(g, dt, cs.shape), gw_(g, gdt, {c}), gb_(g, gdt, {c});
        dx_.upload(x);
        dw_.upload(w);
        db_.upload(b);
        dy_.upload(dy);
        gw_.upload(dw0);
        gb_.upload(db0);
        check(g.k->layernorm_forward(dx_.v(), dw_.v(), db_.v(), eps, y_.v(), mean_.v(), rstd_.v(),
                                     g.stream),
              "layernorm_forward");
        check(g.k->layernorm_backward(dy_.v(), dx_.v(), dw_.v(), mean_.v(), rstd_.v(), gx_.v(),
                                      gw_.v(), gb_.v(), g.stream),
              "layernorm_backward");

        std::vector<double> rmean(rows), rrstd(rows), ry(rows * c), rdx(rows * c);
        double dx_mag = 0.0;  // the largest term of any dx sum
        std::vector<double> rdw(dw0), rdb(db0), mag_w(c, 0.0), mag_b(c, 0.0);
        for (int64_t r = 0; r < rows; ++r) {
          const double* xr = &x[r * c];
          double m = 0;
          for (int64_t i = 0; i < c; ++i) m += xr[i];
          m /= c;
          double v = 0;
          for (int64_t i = 0; i < c; ++i) v += (xr[i] - m) * (xr[i] - m);
          v /= c;
          const double s = 1.0 / std::sqrt(v + static_cast<double>(eps));
          rmean[r] = m;
          rrstd[r] = s;
          double dn_mean = 0, dn_norm_mean = 0;
          for (int64_t i = 0; i < c; ++i) {
            const double norm = (xr[i] - m) * s;
            ry[r * c + i] = norm * w[i] + b[i];
            const double dn = dy[r * c + i] * w[i];
            dn_mean += dn;
            dn_norm_mean += dn * norm;
            rdw[i] += dy[r * c + i] * norm;
            rdb[i] += dy[r * c + i];
            mag_w[i] += std::fabs(dy[r * c + i] * norm);
            mag_b[i] += std::fabs(dy[r * c + i]);
          }
          dn_mean /= c;
          dn_norm_mean /= c;
          for (int64_t i = 0; i < c; ++i) {
            const double norm = (xr[i] - m) * s;
            rdx[r * c + i] = s * (dy[r * c + i] * w[i] - dn_mean - norm * dn_norm_mean);
            // dx is a difference of terms that can cancel to 0 (C = 1 exactly): bound its error
            // by the terms' size, not the result's.
            dx_mag = std::max(dx_mag, s * (std::fabs(dy[r * c + i] * w[i]) + std::fabs(dn_mean) +
                                           std::fabs(norm * dn_norm_mean)));
          }
        }
        // mean, rstd: f32 arithmetic on exact inputs whatever the dtype: 2e-5 relative (sums of up
        // to 7000 terms). y, dx: the dtype's rounding, relative to the row's largest value
        // (x - mean cancels), plus 2e-5 for f32. dweight/dbias: f32 sums of the rows' terms
        // (2e-5 of their magnitude), or the grad dtype's rounding.
        const double t = std::max(tol_of(dt), 2e-5);
        expect_close("layernorm mean", mean_.download(), rmean, {rows}, 2e-5 * 2.0, 2e-5);
        expect_close("layernorm rstd", rstd_.download(), rrstd, {rows}, 0, 2e-5);
        expect_close("layernorm y", y_.download(), ry, cs.shape, t * max_abs(ry), t);
        expect_close("layernorm dx", gx_.download(), rdx, cs.shape, t * dx_mag, t);
        const double tg = std::max(tol_of(gdt), 2e-5);
        std::vector<double> bw(c), bb(c);
        for (int64_t i = 0; i < c; ++i) {
          bw[i] = tg * (mag_w[i] + std::fabs(dw0[i])) + 1e-6;
          bb[i] = tg * (mag_b[i] + std::fabs(db0[i])) + 1e-6;
        }
        expect_within("layernorm dweight (+=)", gw_.download(), rdw, bw, {c});
        expect_within("layernorm dbias (+=)", gb_.download(), rdb, bb, {c});
      }
    }
  }
}

// ---- GELU -----------------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: gelu forward and backward, tanh approximation",
          "[gpu][kernels][gelu]") {
  Gpu g;
  uint64_t seed = 400;
  for (int32_t dt : kFloatTypes) {
    INFO("gelu " << dtype_name(dt));
    std::vector<double> x = normal(10007, 0.0, 2.5, ++seed);
    const double fixed[] = {0.0, 1e-3, -1e-3, 1.0, -1.0, 3.0, -3.0, 6.0, -6.0, 10.0, -10.0};
    for (size_t i = 0; i < std::size(fixed); ++i) x[i] = fixed[i];
    x = round_all(dt, x);
    const auto dy = round_all(dt, normal(x.size(), 0.0, 1.0, ++seed));
    const int64_t n = static_cast<int64_t>(x.size());
    Buf dx_(g, dt, {n}), dy_(g, dt, {n}), y_(g, dt, {n}), gx_(g, dt, {n});
    dx_.upload(x);
    dy_.upload(dy);
    check(g.k->gelu_forward(dx_.v(), y_.v(), g.stream), "gelu_forward");
    check(g.k->gelu_backward(dx_.v(), dy_.v(), gx_.v(), g.stream), "gelu_backward");
    std::vector<double> ry(x.size()), rdx(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      ry[i] = gelu_ref(x[i]);
      rdx[i] = gelu_grad_ref(x[i]) * dy[i];
    }
    // f32: 1e-5 relative, plus 1e-6 absolute for the formula's cancellation (1 + tanh for x << 0,
    // 1 - tanh^2 for large |x|): the CPU's f32 formula has the same error. Others: their rounding.
    const double t = tol_of(dt);
    expect_close("gelu y", y_.download(), ry, {n}, 1e-6, t);
    expect_close("gelu dx", gx_.download(), rdx, {n}, 3e-6, t);
    // In place: y = gelu(y), dx written over dy.
    check(g.k->gelu_forward(dx_.v(), dx_.v(), g.stream), "gelu_forward in place");
    expect_close("gelu y in place", dx_.download(), ry, {n}, 1e-6, t);
    dx_.upload(x);
    check(g.k->gelu_backward(dx_.v(), dy_.v(), dy_.v(), g.stream), "gelu_backward in place");
    expect_close("gelu dx in place", dy_.download(), rdx, {n}, 3e-6, t);
  }
}

// ---- cross-entropy --------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: cross-entropy loss fused with dlogits, ignore_index",
          "[gpu][kernels][loss]") {
  Gpu g;
  struct Case {
    int64_t rows, v;
    double ignored_share;  // of the targets
  };
  const int32_t kIgnore = -100;
  uint64_t seed = 500;
  for (const Case cs :
       {Case{37, 1000, 0.2}, Case{5, 50257, 0.2}, Case{1, 3, 0.0}, Case{6, 17, 1.0}}) {
    for (int32_t dt : kFloatTypes) {
      for (bool in_place : {false, true}) {
        const float scale = in_place ? 1.0f : 0.5f;
        INFO("cross_entropy logits " << dtype_name(dt) << " [" << cs.rows << ", " << cs.v
                                     << "], ignored share " << cs.ignored_share << ", scale "
                                     << scale << (in_place ? ", dlogits in place" : ""));
        const auto logits = round_all(dt, normal(cs.rows * cs.v, 0.0, 3.0, ++seed));
        std::mt19937_64 rng(++seed);
        std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(cs.v - 1));
        std::uniform_real_distribution<double> u(0, 1);
        std::vector<int32_t> targets(cs.rows);
        for (int32_t& t : targets) t = u(rng) < cs.ignored_share ? kIgnore : pick(rng);
        if (cs.ignored_share < 1.0) targets[0] = pick(rng);  // at least one counted row
        Buf dl(g, dt, {cs.rows, cs.v}), dt_(g, DSPP_I32, {cs.rows}), dloss(g, DSPP_F32, {cs.rows});
        Buf dmean(g, DSPP_F32, {1}), dd(g, dt, {cs.rows, cs.v});
        dl.upload(logits);
        dt_.upload_i32(targets);
        check(g.k->cross_entropy(dl.v(), dt_.v(), kIgnore, scale, dloss.v(), dmean.v(),
                                 in_place ? dl.v() : dd.v(), g.stream),
              "cross_entropy");

        std::vector<double> rloss(cs.rows), rd(cs.rows * cs.v, 0.0);
        double total = 0;
        int64_t count = 0;
        for (int32_t t : targets) count += t != kIgnore;
        const double f = count > 0 ? scale / static_cast<double>(count) : 0.0;
        for (int64_t r = 0; r < cs.rows; ++r) {
          const double* row = &logits[r * cs.v];
          double mx = row[0];
          for (int64_t i = 1; i < cs.v; ++i) mx = std::max(mx, row[i]);
          double s = 0;
          for (int64_t i = 0; i < cs.v; ++i) s += std::exp(row[i] - mx);
          const double lse = mx + std::log(s);
          if (targets[r] == kIgnore) {
            rloss[r] = 0;
            continue;
          }
          rloss[r] = lse - row[targets[r]];
          total += rloss[r];
          for (int64_t i = 0; i < cs.v; ++i) rd[r * cs.v + i] = f * std::exp(row[i] - lse);
          rd[r * cs.v + targets[r]] -= f;
        }
        const double rmean = count > 0 ? total / count : 0.0;
        // Losses and mean: f32 exp summed in f64 on exact inputs, whatever the dtype: 2e-5
        // absolute (lse is ~10) + 1e-5 relative. dlogits: 1e-5 relative for f32 (the rounding
        // of lse to f32 before the exp), the dtype's rounding otherwise; absolute 1e-5 x f for
        // the target's f (p - 1) when p is near 1.
        expect_close("cross_entropy losses", dloss.download(), rloss, {cs.rows}, 2e-5, 1e-5);
        expect_close("cross_entropy mean_loss", dmean.download(), {rmean}, {1}, 2e-5, 1e-5);
        const double t = tol_of(dt);
        expect_close("cross_entropy dlogits", in_place ? dl.download() : dd.download(), rd,
                     {cs.rows, cs.v}, (dt == DSPP_F32 ? 1e-5 : 1e-3) * f, t);
      }
    }
  }
}

// ---- embedding ------------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: embedding gather and deterministic scatter-add",
          "[gpu][kernels][embedding]") {
  Gpu g;
  struct Case {
    int64_t num, dim, b, t;
  };
  uint64_t seed = 600;
  for (const Case cs : {Case{50, 45, 3, 37}, Case{1000, 300, 2, 64}, Case{7, 1, 1, 1}}) {
    for (int32_t dt : kFloatTypes) {
      for (int32_t gdt : grad_types(dt)) {
        INFO("embedding [" << cs.num << ", " << cs.dim << "] " << dtype_name(dt) << ", ids ["
                           << cs.b << ", " << cs.t << "], grads " << dtype_name(gdt));
        const int64_t n = cs.b * cs.t;
        // Many repeats: half the tokens are id 3 (or the last id), the rest uniform; one id
        // outside the table on each side when there is room.
        std::mt19937_64 rng(++seed);
        std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(cs.num - 1));
        std::vector<int32_t> ids(n);
        for (int32_t& id : ids)
          id = rng() % 2 ? static_cast<int32_t>(std::min<int64_t>(3, cs.num - 1)) : pick(rng);
        if (n > 4) {
          ids[1] = -1;
          ids[n - 2] = static_cast<int32_t>(cs.num);
        }
        const auto w = round_all(dt, normal(cs.num * cs.dim, 0, 1, ++seed));
        const auto dout = round_all(dt, normal(n * cs.dim, 0, 1, ++seed));
        const auto dw0 = round_all(gdt, normal(cs.num * cs.dim, 0, 1, ++seed));
        Buf dids(g, DSPP_I32, {cs.b, cs.t}), dw(g, dt, {cs.num, cs.dim});
        Buf dout_(g, dt, {cs.b, cs.t, cs.dim}), dgw(g, gdt, {cs.num, cs.dim});
        Buf dy(g, dt, {cs.b, cs.t, cs.dim});
        dids.upload_i32(ids);
        dw.upload(w);
        dout_.upload(dout);
        dgw.upload(dw0);
        check(g.k->embedding_forward(dids.v(), dw.v(), dy.v(), g.stream), "embedding_forward");
        check(g.k->embedding_backward(dids.v(), dout_.v(), dgw.v(), g.stream),
              "embedding_backward");

        // Forward: an exact copy (a zero row for an id outside the table).
        std::vector<double> ry(n * cs.dim, 0.0);
        for (int64_t i = 0; i < n; ++i) {
          if (ids[i] < 0 || ids[i] >= cs.num) continue;
          for (int64_t c = 0; c < cs.dim; ++c) ry[i * cs.dim + c] = w[ids[i] * cs.dim + c];
        }
        expect_close("embedding forward (exact)", dy.download(), ry, {cs.b, cs.t, cs.dim}, 0, 0);

        // Backward: the CPU layer's f32 additions in token order, rounded once to the grad dtype
        // at the end: expected bit for bit. Also within 2e-6 x magnitude (f32) of float64.
        std::vector<float> f32_sum(cs.num * cs.dim);
        std::vector<double> ref64(dw0), mag(dw0.size());
        for (size_t i = 0; i < dw0.size(); ++i) {
          f32_sum[i] = static_cast<float>(dw0[i]);
          mag[i] = std::fabs(dw0[i]);
        }
        for (int64_t i = 0; i < n; ++i) {
          if (ids[i] < 0 || ids[i] >= cs.num) continue;
          for (int64_t c = 0; c < cs.dim; ++c) {
            const size_t j = static_cast<size_t>(ids[i] * cs.dim + c);
            f32_sum[j] += static_cast<float>(dout[i * cs.dim + c]);
            ref64[j] += dout[i * cs.dim + c];
            mag[j] += std::fabs(dout[i * cs.dim + c]);
          }
        }
        std::vector<double> exact(f32_sum.size()), bound(mag.size());
        for (size_t i = 0; i < exact.size(); ++i) {
          exact[i] = round_to(gdt, f32_sum[i]);
          bound[i] = std::max(tol_of(gdt), 2e-6) * mag[i];
        }
        const std::vector<double> got = dgw.download();
        expect_close("embedding backward (bit for bit the CPU's f32 order)", got, exact,
                     {cs.num, cs.dim}, 0, 0);
        expect_within("embedding backward vs float64", got, ref64, bound, {cs.num, cs.dim});
        // Deterministic: the same bits from the same start.
        const std::vector<unsigned char> first = dgw.raw();
        dgw.upload(dw0);
        check(g.k->embedding_backward(dids.v(), dout_.v(), dgw.v(), g.stream),
              "embedding_backward");
        CHECK(dgw.raw() == first);
      }
    }
  }
}

// ---- attention ------------------------------------------------------------------------------

namespace {

struct AttnCase {
  int64_t b, t, c, nh;
};
// Head sizes 4, 32, 24, 64, 128 (every kernel template; 64 and 128 take the tensor-core kernels
// for bf16/f16); T below, at and across the 64-row tiles; B = 1; B * n_head = 1.
const AttnCase kAttnCases[] = {{1, 1, 8, 2},     {2, 67, 96, 3},  {1, 130, 72, 3}, {2, 64, 128, 2},
                               {1, 100, 256, 2}, {1, 200, 64, 1}, {1, 1, 64, 1},   {3, 17, 256, 2}};

// float64 reference: y, lse and (with dy) dqkv.
void attention_ref(const AttnCase& cs, const std::vector<double>& qkv,
                   const std::vector<double>* dy, std::vector<double>& y, std::vector<double>& lse,
                   std::vector<double>* dqkv) {
  const int64_t B = cs.b, T = cs.t, C = cs.c, NH = cs.nh, hs = C / NH, C3 = 3 * C;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  y.assign(B * T * C, 0.0);
  lse.assign(B * NH * T, 0.0);
  if (dqkv) dqkv->assign(B * T * C3, 0.0);
  std::vector<double> p(T), dp(T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * C3 + h * hs];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const double* k = &qkv[(b * T + t2) * C3 + C + h * hs];
          double s = 0;
          for (int64_t i = 0; i < hs; ++i) s += q[i] * k[i];
          p[t2] = s * scale;
          mx = std::max(mx, p[t2]);
        }
        double sum = 0;
        for (int64_t t2 = 0; t2 <= t; ++t2) sum += std::exp(p[t2] - mx);
        lse[(b * NH + h) * T + t] = mx + std::log(sum);
        for (int64_t t2 = 0; t2 <= t; ++t2) p[t2] = std::exp(p[t2] - mx) / sum;
        double* o = &y[(b * T + t) * C + h * hs];
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const double* v = &qkv[(b * T + t2) * C3 + 2 * C + h * hs];
          for (int64_t i = 0; i < hs; ++i) o[i] += p[t2] * v[i];
        }
        if (!dqkv) continue;
        // o = sum p v: dv += p dout, dp = dout . v; softmax: ds = p (dp - sum p dp);
        // s = scale q . k: dq += scale ds k, dk += scale ds q.
        const double* dout = &(*dy)[(b * T + t) * C + h * hs];
        double pdp = 0;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const double* v = &qkv[(b * T + t2) * C3 + 2 * C + h * hs];
          double* dv = &(*dqkv)[(b * T + t2) * C3 + 2 * C + h * hs];
          double s = 0;
          for (int64_t i = 0; i < hs; ++i) {
            s += dout[i] * v[i];
            dv[i] += p[t2] * dout[i];
          }
          dp[t2] = s;
          pdp += p[t2] * s;
        }
        double* dq = &(*dqkv)[(b * T + t) * C3 + h * hs];
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const double* k = &qkv[(b * T + t2) * C3 + C + h * hs];
          double* dk = &(*dqkv)[(b * T + t2) * C3 + C + h * hs];
          const double ds = p[t2] * (dp[t2] - pdp) * scale;
          for (int64_t i = 0; i < hs; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
}

// The rows t <= t0 of a [B, T, X] or [B, NH, T] buffer's bytes.
bool rows_equal(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b,
                int64_t outer, int64_t t_len, int64_t row_bytes, int64_t t0) {
  for (int64_t o = 0; o < outer; ++o) {
    const size_t off = static_cast<size_t>(o * t_len * row_bytes);
    const size_t len = static_cast<size_t>((t0 + 1) * row_bytes);
    if (std::memcmp(a.data() + off, b.data() + off, len) != 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("device/cuda kernels: causal attention forward and backward",
          "[gpu][kernels][attention]") {
  Gpu g;
  uint64_t seed = 700;
  for (const AttnCase& cs : kAttnCases) {
    for (int32_t dt : kFloatTypes) {
      INFO("attention " << dtype_name(dt) << " B " << cs.b << ", T " << cs.t << ", C " << cs.c
                        << ", n_head " << cs.nh << " (head size " << cs.c / cs.nh << ")");
      const int64_t C3 = 3 * cs.c;
      const auto qkv = round_all(dt, normal(cs.b * cs.t * C3, 0, 1, ++seed));
      const auto dy = round_all(dt, normal(cs.b * cs.t * cs.c, 0, 1, ++seed));
      Buf dqkv_in(g, dt, {cs.b, cs.t, C3}), dy_(g, dt, {cs.b, cs.t, cs.c});
      Buf y_(g, dt, {cs.b, cs.t, cs.c}), lse_(g, DSPP_F32, {cs.b, cs.nh, cs.t});
      Buf dqkv(g, dt, {cs.b, cs.t, C3});
      dqkv_in.upload(qkv);
      dy_.upload(dy);
      check(g.k->attention_forward(dqkv_in.v(), static_cast<int32_t>(cs.nh), y_.v(), lse_.v(),
                                   g.stream),
            "attention_forward");
      check(g.k->attention_backward(dqkv_in.v(), y_.v(), lse_.v(), dy_.v(),
                                    static_cast<int32_t>(cs.nh), dqkv.v(), g.stream),
            "attention_backward");
      std::vector<double> ry, rlse, rdqkv;
      attention_ref(cs, qkv, &dy, ry, rlse, &rdqkv);
      // y: a convex combination of v: f32 2e-5 (+ 1e-4 relative), the dtype's rounding
      // otherwise. lse: f32 arithmetic on exact inputs for every dtype: 2e-5 + 1e-5 relative.
      // dqkv: sums over up to 200 keys of products of O(1) terms, relative to the largest
      // element: f32 5e-5 (+ 1e-4 relative), bf16 2e-2, f16 4e-3 (its inputs y and dy are
      // rounded too).
      const double t = tol_of(dt);
      expect_close("attention y", y_.download(), ry, {cs.b, cs.t, cs.c},
                   dt == DSPP_F32 ? 2e-5 : t * max_abs(ry), dt == DSPP_F32 ? 1e-4 : t);
      expect_close("attention lse", lse_.download(), rlse, {cs.b, cs.nh, cs.t}, 2e-5, 1e-5);
      const double tb = dt == DSPP_F32 ? 5e-5 : 2 * t;
      expect_close("attention dqkv", dqkv.download(), rdqkv, {cs.b, cs.t, C3}, tb * max_abs(rdqkv),
                   dt == DSPP_F32 ? 1e-4 : 2 * t);
      // Deterministic: the same bits from a second forward and backward, over outputs refilled.
      const std::vector<unsigned char> y1 = y_.raw(), lse1 = lse_.raw(), d1 = dqkv.raw();
      check(g.k->fill(y_.v(), 7, g.stream), "fill");
      check(g.k->fill(lse_.v(), 7, g.stream), "fill");
      check(g.k->fill(dqkv.v(), 7, g.stream), "fill");
      check(g.k->attention_forward(dqkv_in.v(), static_cast<int32_t>(cs.nh), y_.v(), lse_.v(),
                                   g.stream),
            "attention_forward");
      check(g.k->attention_backward(dqkv_in.v(), y_.v(), lse_.v(), dy_.v(),
                                    static_cast<int32_t>(cs.nh), dqkv.v(), g.stream),
            "attention_backward");
      CHECK(y_.raw() == y1);
      CHECK(lse_.raw() == lse1);
      CHECK(dqkv.raw() == d1);
    }
  }
}

TEST_CASE("device/cuda kernels: attention is causal, bit for bit", "[gpu][kernels][attention]") {
  // Changing the keys, values and output gradients of the positions after t0 must leave every
  // output of the positions up to t0 unchanged to the last bit: y, lse and dq (dk and dv of
  // earlier positions do depend on later queries).
  // Head size 24 (CUDA-core kernels for every dtype) and 64 (tensor cores for bf16/f16).
  Gpu g;
  for (const AttnCase& cs : {AttnCase{2, 130, 72, 3}, AttnCase{2, 130, 128, 2}}) {
    const int64_t t0 = 70, C3 = 3 * cs.c;
    const int32_t nh = static_cast<int32_t>(cs.nh);
    for (int32_t dt : {DSPP_F32, DSPP_BF16, DSPP_F16}) {
      INFO("attention causality, " << dtype_name(dt) << ", head size " << cs.c / cs.nh << ", t0 "
                                   << t0);
      auto qkv = round_all(dt, normal(cs.b * cs.t * C3, 0, 1, 800));
      auto dy = round_all(dt, normal(cs.b * cs.t * cs.c, 0, 1, 801));
      Buf dqkv_in(g, dt, {cs.b, cs.t, C3}), dy_(g, dt, {cs.b, cs.t, cs.c});
      Buf y_(g, dt, {cs.b, cs.t, cs.c}), lse_(g, DSPP_F32, {cs.b, cs.nh, cs.t});
      Buf dqkv(g, dt, {cs.b, cs.t, C3});
      auto run = [&] {
        dqkv_in.upload(qkv);
        dy_.upload(dy);
        check(g.k->attention_forward(dqkv_in.v(), nh, y_.v(), lse_.v(), g.stream),
              "attention_forward");
        check(
            g.k->attention_backward(dqkv_in.v(), y_.v(), lse_.v(), dy_.v(), nh, dqkv.v(), g.stream),
            "attention_backward");
      };
      run();
      const auto y1 = y_.raw(), lse1 = lse_.raw(), d1 = dqkv.raw();
      const auto noise = normal(qkv.size() + dy.size(), 0, 3, 802);
      for (int64_t b = 0; b < cs.b; ++b) {
        for (int64_t t = t0 + 1; t < cs.t; ++t) {
          for (int64_t i = cs.c; i < C3; ++i) {  // k and v
            const size_t j = static_cast<size_t>((b * cs.t + t) * C3 + i);
            qkv[j] = round_to(dt, noise[j]);
          }
          for (int64_t i = 0; i < cs.c; ++i) {
            const size_t j = static_cast<size_t>((b * cs.t + t) * cs.c + i);
            dy[j] = round_to(dt, noise[qkv.size() + j]);
          }
        }
      }
      run();
      const auto y2 = y_.raw(), lse2 = lse_.raw(), d2 = dqkv.raw();
      const int64_t es = static_cast<int64_t>(dtype_size(dt));
      CHECK(rows_equal(y1, y2, cs.b, cs.t, cs.c * es, t0));
      CHECK(rows_equal(lse1, lse2, cs.b * cs.nh, cs.t, 4, t0));
      // dq: the first C columns of each dqkv row.
      bool dq_same = true;
      for (int64_t b = 0; b < cs.b; ++b) {
        for (int64_t t = 0; t <= t0; ++t) {
          const size_t off = static_cast<size_t>(((b * cs.t + t) * C3) * es);
          dq_same = dq_same && std::memcmp(d1.data() + off, d2.data() + off, cs.c * es) == 0;
        }
      }
      CHECK(dq_same);
      // And the later rows did change (the perturbation reached the kernels).
      CHECK_FALSE(rows_equal(y1, y2, cs.b, cs.t, cs.c * es, cs.t - 1));
    }
  }
}

// ---- elementwise ----------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: add, scale, fill and cast", "[gpu][kernels][elementwise]") {
  Gpu g;
  const int64_t n = 4099;
  uint64_t seed = 900;
  for (int32_t dt : kFloatTypes) {
    INFO("elementwise " << dtype_name(dt));
    const auto a = round_all(dt, normal(n, 0, 1, ++seed));
    const auto b = round_all(dt, normal(n, 0, 1, ++seed));
    Buf da(g, dt, {n}), db(g, dt, {n}), dout(g, dt, {n});
    da.upload(a);
    db.upload(b);
    check(g.k->add(da.v(), db.v(), dout.v(), g.stream), "add");
    // One f32 addition (exact for these inputs) rounded once: half an ulp of the dtype.
    std::vector<double> rsum(n), rscaled(n);
    for (int64_t i = 0; i < n; ++i) {
      rsum[i] = round_to(dt, a[i] + b[i]);
      rscaled[i] = round_to(dt, static_cast<float>(-0.375f * static_cast<float>(a[i])));
    }
    expect_close("add", dout.download(), rsum, {n}, 0, 0);
    check(g.k->add(da.v(), db.v(), da.v(), g.stream), "add in place");
    expect_close("add in place", da.download(), rsum, {n}, 0, 0);
    da.upload(a);
    check(g.k->scale(da.v(), -0.375f, da.v(), g.stream), "scale in place");
    expect_close("scale", da.download(), rscaled, {n}, 0, 0);
    check(g.k->fill(dout.v(), 0.1, g.stream), "fill");
    expect_close("fill", dout.download(), std::vector<double>(n, round_to(dt, 0.1)), {n}, 0, 0);
  }
  {
    Buf di(g, DSPP_I32, {n});
    check(g.k->fill(di.v(), -7, g.stream), "fill i32");
    expect_close("fill i32", di.download(), std::vector<double>(n, -7.0), {n}, 0, 0);
  }
  // Casts between every pair, round to nearest even, bit for bit: random values plus zeros,
  // halfway cases, f16 overflow and subnormals of each format.
  std::vector<double> x = normal(n, 0, 10, ++seed);
  // 1 + 2^-8 and 1 + 3 2^-8: bf16 ties; 1 + 2^-11 and 1 + 3 2^-11: f16 ties; 65520: the f16
  // tie that rounds to infinity; 1e-6, 6e-8: f16 subnormals; 1e-40: an f32 subnormal.
  const double special[] = {0.0,        -0.0,       1.0,           -2.5,         70000.0, -65519.0,
                            65520.0,    1e-6,       -3e-7,         6e-8,         1e-40,   -1e-39,
                            1.00390625, 1.01171875, 1.00048828125, 1.00146484375};
  for (size_t i = 0; i < std::size(special); ++i) x[i] = special[i];
  for (int32_t from : kFloatTypes) {
    const auto xin = round_all(from, x);
    Buf dx(g, from, {n});
    dx.upload(xin);
    for (int32_t to : kFloatTypes) {
      INFO("cast " << dtype_name(from) << " -> " << dtype_name(to));
      Buf dy(g, to, {n});
      check(g.k->cast(dx.v(), dy.v(), g.stream), "cast");
      expect_close("cast", dy.download(), round_all(to, xin), {n}, 0, 0);
    }
  }
}

// ---- optimizer kernels (version 2) ----------------------------------------------------------

namespace {

// The sum of squares in f64 with Neumaier's compensation: within ~2 ulp of the exact sum for
// these sizes (the squares of floats are exact in f64), so the bound of the check covers the
// kernel's rounding only.
double sum_squares_ref(const std::vector<double>& x, double start) {
  double s = start, c = 0.0;
  for (double v : x) {
    const double t = v * v;
    const double u = s + t;
    c += std::fabs(s) >= std::fabs(t) ? (s - u) + t : (t - u) + s;
    s = u;
  }
  return s + c;
}

// DeviceAdamConsts as the CPU optimizer makes them (plugins/optimizer/common/adam_kernel.h):
// computed in f64, rounded once.
dspp::DeviceAdamConsts adam_consts_ref(double lr, double beta1, double beta2, double eps, double wd,
                                       int64_t t, bool bias_correction, bool decoupled) {
  const double bc1 = bias_correction ? 1.0 - std::pow(beta1, static_cast<double>(t)) : 1.0;
  const double bc2 = bias_correction ? 1.0 - std::pow(beta2, static_cast<double>(t)) : 1.0;
  dspp::DeviceAdamConsts k{};
  k.beta1 = static_cast<float>(beta1);
  k.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  k.beta2 = static_cast<float>(beta2);
  k.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  k.step_size = static_cast<float>(lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.eps = static_cast<float>(eps);
  k.decay = static_cast<float>(decoupled ? 1.0 - lr * wd : 1.0);
  k.l2 = static_cast<float>(decoupled ? 0.0 : wd);
  return k;
}

// One element of the step in fp32, the CPU kernel's operations in its order. Every operation
// goes through a volatile float, so each is rounded to fp32 on its own and the compiler cannot
// contract a multiply and an add into an FMA (the device kernel uses uncontracted intrinsics).
void adam_ref_element(float& p, float g, float& m, float& v, const dspp::DeviceAdamConsts& k) {
  const float pi = p;
  volatile float gi = g;
  if (k.l2 != 0.0f) {
    volatile const float l2p = k.l2 * pi;
    gi = gi + l2p;
  }
  volatile const float m_old = k.beta1 * m;
  volatile const float m_new = k.one_minus_beta1 * gi;
  volatile const float mi = m_old + m_new;
  volatile const float v_old = k.beta2 * v;
  volatile const float v_g = k.one_minus_beta2 * gi;
  volatile const float v_new = v_g * gi;
  volatile const float vi = v_old + v_new;
  volatile const float root = std::sqrt(static_cast<float>(vi));
  volatile const float scaled = root * k.inv_sqrt_bc2;
  volatile const float denom = scaled + k.eps;
  volatile const float ratio = mi / denom;
  volatile const float update = k.step_size * ratio;
  volatile const float decayed = pi * k.decay;
  m = mi;
  v = vi;
  p = decayed - update;
}

// f32 results bit for bit; a failure names the first differing element and both values.
void expect_bits(const std::string& what, const std::vector<unsigned char>& got,
                 const std::vector<float>& ref) {
  REQUIRE(got.size() == ref.size() * 4);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::memcmp(&got[4 * i], &ref[i], 4) != 0 && bad++ == 0) first = i;
  }
  if (bad > 0) {
    float f;
    std::memcpy(&f, &got[4 * first], 4);
    std::ostringstream os;
    os << std::setprecision(9) << what << ": " << bad << " of " << ref.size()
       << " elements differ; first at " << first << ": got " << f << " (0x" << std::hex
       << bits_of(f) << "), ref " << ref[first] << " (0x" << bits_of(ref[first]) << ")";
    FAIL_CHECK(os.str());
  }
}

}  // namespace

TEST_CASE("device/cuda kernels: sum_squares in f64 over every float dtype and deterministic",
          "[gpu][kernels][optimizer]") {
  // Bound: |got - ref| <= 1e-12 ref, for every dtype. Each square of a float is exact in f64
  // (at most 48 mantissa bits), so only the f64 additions round: the kernel adds at most ~16
  // squares per thread here (8192 at n = 2^31), then 5 shuffle levels, 8 warps, 5 more levels
  // and 32 warps over the block partials, about 66 roundings of 2^-53 of the (non-negative) sum
  // on any path, 7e-15 relative (1e-12 at n = 2^31); the compensated reference is within
  // ~2 x 2^-53. accumulate adds one more rounding.
  Gpu g;
  REQUIRE(g.k->version() >= 2);
  const std::vector<std::vector<int64_t>> shapes = {{0},       {2, 0, 3}, {1},     {7},
                                                    {3, 5, 7}, {4097},    {65537}, {3000017}};
  uint64_t seed = 1200;
  for (const auto& shape : shapes) {
    for (int32_t dt : kFloatTypes) {
      INFO("sum_squares " << dtype_name(dt) << " " << shape_str(shape));
      const int64_t n = product(shape);
      const auto x = round_all(dt, normal(static_cast<size_t>(n), 0.5, 2, ++seed));
      Buf dx(g, dt, shape), out(g, DSPP_F64, {1});
      dx.upload(x);
      // accumulate 0: out is NaN until written and must not be read.
      check(g.k->sum_squares(dx.v(), out.v(), 0, g.stream), "sum_squares");
      const std::vector<unsigned char> first = out.raw();
      expect_close("sum_squares", out.download(), {sum_squares_ref(x, 0.0)}, {1}, 0, 1e-12);
      // The same bits on a second run.
      check(g.k->sum_squares(dx.v(), out.v(), 0, g.stream), "sum_squares again");
      CHECK(out.raw() == first);
      // accumulate 1 adds to what out holds.
      const double start = 12.375;
      out.upload({start});
      check(g.k->sum_squares(dx.v(), out.v(), 1, g.stream), "sum_squares accumulate");
      const std::vector<unsigned char> acc = out.raw();
      expect_close("sum_squares accumulate", out.download(), {sum_squares_ref(x, start)}, {1}, 0,
                   1e-12);
      out.upload({start});
      check(g.k->sum_squares(dx.v(), out.v(), 1, g.stream), "sum_squares accumulate again");
      CHECK(out.raw() == acc);
    }
  }
  // A non-finite element makes the sum non-finite (what the overflow check reads).
  for (int32_t dt : kFloatTypes) {
    for (double bad :
         {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
      INFO("sum_squares " << dtype_name(dt) << " with " << bad);
      const int64_t n = 4097;
      auto x = round_all(dt, normal(n, 0, 1, ++seed));
      x[1234] = bad;
      Buf dx(g, dt, {n}), out(g, DSPP_F64, {1});
      dx.upload(x);
      check(g.k->sum_squares(dx.v(), out.v(), 0, g.stream), "sum_squares");
      const double got = out.download()[0];
      CHECK(std::isinf(got));
      CHECK_FALSE(std::isfinite(got));
    }
  }
  {
    const int64_t n = 4097;
    auto x = normal(n, 0, 1, ++seed);
    x[4000] = std::numeric_limits<double>::quiet_NaN();
    Buf dx(g, DSPP_F32, {n}), out(g, DSPP_F64, {1});
    dx.upload(x);
    out.upload({1.0});
    check(g.k->sum_squares(dx.v(), out.v(), 1, g.stream), "sum_squares nan");
    CHECK(std::isnan(out.download()[0]));
  }
  // Bad arguments: nothing enqueued, out unchanged.
  {
    Buf dx(g, DSPP_F32, {5}), out(g, DSPP_F64, {1}), out32(g, DSPP_F32, {1});
    Buf ids(g, DSPP_I32, {5});
    out.upload({3.0});
    CHECK(g.k->sum_squares(dx.v(), out32.v(), 0, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "sum_squares: out must be f64 with 1 elements"));
    CHECK(g.k->sum_squares(ids.v(), out.v(), 0, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "sum_squares: x must be f32, bf16 or f16"));
    CHECK(g.k->sum_squares(nullptr, out.v(), 0, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "sum_squares: x is NULL"));
    CHECK(out.download() == std::vector<double>{3.0});
  }
}

TEST_CASE("device/cuda kernels: adam_step matches the CPU kernel's fp32 bit for bit",
          "[gpu][kernels][optimizer]") {
  Gpu g;
  REQUIRE(g.k->version() >= 2);
  struct Case {
    const char* label;
    bool decoupled;
    bool bias_correction;
    int64_t t;
    bool zero_moments;  // the first step of a run: m = v = 0
  };
  const Case cases[] = {
      {"AdamW step 1", true, true, 1, true},
      {"AdamW step 7", true, true, 7, false},
      {"L2 step 1", false, true, 1, true},
      {"L2 step 7", false, true, 7, false},
      {"AdamW no bias correction", true, false, 7, false},
  };
  // 1027 = 4 x 256 + 3 and 100003: the float4 path and its tail; 1, 3, 5: the scalar path only.
  const int64_t sizes[] = {1, 3, 5, 1027, 100003};
  uint64_t seed = 1300;
  for (const Case& cs : cases) {
    const dspp::DeviceAdamConsts k =
        adam_consts_ref(1e-3, 0.9, 0.999, 1e-8, 0.01, cs.t, cs.bias_correction, cs.decoupled);
    CHECK((k.l2 != 0.0f) == !cs.decoupled);
    CHECK((k.decay != 1.0f) == cs.decoupled);
    for (int64_t n : sizes) {
      for (int misaligned : {0, 1}) {
        INFO(cs.label << ", n " << n << (misaligned ? ", p one float past an alignment" : ""));
        auto to_f = [](const std::vector<double>& d) {
          return std::vector<float>(d.begin(), d.end());
        };
        std::vector<float> p = to_f(normal(n, 0, 1, ++seed));
        const std::vector<float> gr = to_f(normal(n, 0, 1e-2, ++seed));
        std::vector<float> m(n, 0.0f), v(n, 0.0f);
        if (!cs.zero_moments) {
          m = to_f(normal(n, 0, 1e-2, ++seed));
          const std::vector<double> r = normal(n, 0, 1e-2, ++seed);
          for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(r[i] * r[i]);
        }
        // An infinite parameter stays infinite without an L2 term (no 0 x inf).
        if (cs.decoupled && n > 3) p[2] = std::numeric_limits<float>::infinity();
        // p: a view one float into its block when misaligned (the scalar kernel alone), with
        // another shape than g (only the element count has to match).
        Buf dp_block(g, DSPP_F32, {n + 1}), dg(g, DSPP_F32, {1, n}), dm(g, DSPP_F32, {n}),
            dv(g, DSPP_F32, {n});
        std::vector<double> p_block(p.begin(), p.end());
        p_block.insert(misaligned ? p_block.begin() : p_block.end(), 0.0);
        dp_block.upload(p_block);
        dg.upload(std::vector<double>(gr.begin(), gr.end()));
        dm.upload(std::vector<double>(m.begin(), m.end()));
        dv.upload(std::vector<double>(v.begin(), v.end()));
        dspp_tensor_view pv = *dp_block.v();
        pv.shape[0] = n;
        if (misaligned) pv.data = static_cast<float*>(pv.data) + 1;
        check(g.k->adam_step(&pv, dg.v(), dm.v(), dv.v(), &k, g.stream), "adam_step");
        for (int64_t i = 0; i < n; ++i) adam_ref_element(p[i], gr[i], m[i], v[i], k);
        std::vector<unsigned char> got_p = dp_block.raw();
        got_p.erase(misaligned ? got_p.begin() : got_p.end() - 4,
                    misaligned ? got_p.begin() + 4 : got_p.end());
        expect_bits("adam_step p", got_p, p);
        expect_bits("adam_step m", dm.raw(), m);
        expect_bits("adam_step v", dv.raw(), v);
        // The element outside the view is untouched.
        const std::vector<double> all = dp_block.download();
        CHECK(all[misaligned ? 0 : static_cast<size_t>(n)] == 0.0);
      }
    }
  }
  // Bad arguments: nothing enqueued (p unchanged), a message naming the argument.
  {
    const dspp::DeviceAdamConsts k = adam_consts_ref(1e-3, 0.9, 0.999, 1e-8, 0, 1, true, true);
    Buf dp(g, DSPP_F32, {3, 3}), dg(g, DSPP_F32, {10}), dg9(g, DSPP_F32, {9});
    Buf dm(g, DSPP_F32, {9}), dv(g, DSPP_F32, {9}), dm16(g, DSPP_BF16, {9});
    dp.upload(std::vector<double>(9, 1.5));
    const std::vector<unsigned char> before = dp.raw();
    CHECK(g.k->adam_step(dp.v(), dg.v(), dm.v(), dv.v(), &k, g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "adam_step: g must be f32 with 9 elements"));
    CHECK(g.k->adam_step(dp.v(), dg9.v(), dm16.v(), dv.v(), &k, g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "adam_step: m must be f32 with 9 elements"));
    CHECK(g.k->adam_step(dp.v(), dg9.v(), dm.v(), dv.v(), nullptr, g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "adam_step: k is NULL"));
    CHECK(g.k->adam_step(dp.v(), dg9.v(), dm.v(), dm.v(), &k, g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "adam_step: v must not be the same memory as m"));
    CHECK(dp.raw() == before);
  }
}

// ---- optimizer kernels (version 3) ----------------------------------------------------------

namespace {

// The CPU plugins' element expressions (plugins/optimizer/*/*.cpp) in fp32, every operation
// through a volatile float so each is rounded on its own, in the CPU's order (no contraction).
void sgd_ref_element(float& p, float g, float& buf, const dspp::DeviceSgdConsts& k) {
  const float pi = p;
  volatile const float sg = k.sign * g;
  volatile const float wp = k.wd * pi;
  volatile const float d = sg + wp;
  float u = d;
  if (k.momentum != 0.0f) {
    float b = d;
    if (!k.first) {
      volatile const float mb = k.momentum * buf;
      volatile const float dd = k.one_minus_dampening * d;
      b = mb + dd;
    }
    buf = b;
    if (k.nesterov) {
      volatile const float mb2 = k.momentum * b;
      u = d + mb2;
    } else {
      u = b;
    }
  }
  volatile const float step = k.lr * u;
  p = pi - step;
}

void lion_ref_element(float& p, float g, float& m, const dspp::DeviceLionConsts& k) {
  volatile const float bm = k.beta1 * m;
  volatile const float bg = k.one_minus_beta1 * g;
  volatile const float c = bm + bg;
  const float sign = (c > 0.0f ? 1.0f : 0.0f) - (c < 0.0f ? 1.0f : 0.0f);
  volatile const float decayed = p * k.decay;
  volatile const float step = k.lr * sign;
  p = decayed - step;
  volatile const float bm2 = k.beta2 * m;
  volatile const float bg2 = k.one_minus_beta2 * g;
  m = bm2 + bg2;
}

void adagrad_ref_element(float& p, float g, float& sum, const dspp::DeviceAdagradConsts& k) {
  const float pi = p;
  volatile const float sg = k.sign * g;
  volatile const float wp = k.wd * pi;
  volatile const float gi = sg + wp;
  volatile const float g2 = gi * gi;
  volatile const float s = sum + g2;
  sum = s;
  volatile const float root = std::sqrt(static_cast<float>(s));
  volatile const float denom = root + k.eps;
  volatile const float ratio = gi / denom;
  volatile const float step = k.clr * ratio;
  p = pi - step;
}

float lamb_update_ref(float m, float v, float p, const dspp::DeviceLambConsts& k) {
  float denom;
  if (k.eps_inside_sqrt) {
    volatile const float ve = v + k.eps;
    denom = std::sqrt(static_cast<float>(ve));
  } else {
    volatile const float root = std::sqrt(v);
    denom = root + k.eps;
  }
  volatile const float ratio = m / denom;
  volatile const float wp = k.wd * p;
  return ratio + wp;
}

void lamb_moments_ref_element(float p, float g, float& m, float& v, float& u,
                              const dspp::DeviceLambConsts& k) {
  volatile const float bm = k.beta1 * m;
  volatile const float bg = k.one_minus_beta1 * g;
  volatile const float mi = bm + bg;
  volatile const float bv = k.beta2 * v;
  volatile const float vg = k.one_minus_beta2 * g;
  volatile const float vgg = vg * g;
  volatile const float vi = bv + vgg;
  m = mi;
  v = vi;
  u = lamb_update_ref(mi, vi, p, k);
}

void muon_momentum_ref_element(float g, float& m, float& u, float beta, float one_minus_beta) {
  volatile const float bm = beta * m;
  volatile const float bg = one_minus_beta * g;
  volatile const float mi = bm + bg;
  m = mi;
  volatile const float bmi = beta * mi;
  u = bg + bmi;
}

float decayed_ref(float p, float u, float decay, float step) {
  volatile const float pd = p * decay;
  volatile const float su = step * u;
  return pd - su;
}

std::vector<float> floats(const std::vector<double>& d) {
  return std::vector<float>(d.begin(), d.end());
}
std::vector<double> doubles(const std::vector<float>& f) {
  return std::vector<double>(f.begin(), f.end());
}

}  // namespace

TEST_CASE("device/cuda kernels: the version 3 optimizer steps match the CPU kernels bit for bit",
          "[gpu][kernels][optimizer]") {
  Gpu g;
  REQUIRE(g.k->version() >= 3);
  const float inf = std::numeric_limits<float>::infinity();
  // 1027 and 100003: several blocks and a grid-stride tail; 1 and 5: a partial block.
  const int64_t sizes[] = {1, 5, 1027, 100003};
  uint64_t seed = 1500;
  for (int64_t n : sizes) {
    INFO("n " << n);
    const std::vector<float> p0 = floats(normal(n, 0, 1, ++seed));
    const std::vector<float> g0 = floats(normal(n, 0, 1e-2, ++seed));
    const std::vector<float> s0 = floats(normal(n, 0, 1e-2, ++seed));  // a state
    std::vector<float> v0 = floats(normal(n, 0, 1e-2, ++seed));
    for (float& x : v0) x = x * x;  // a second moment
    Buf dp(g, DSPP_F32, {n}), dg(g, DSPP_F32, {n}), ds(g, DSPP_F32, {n}), dv(g, DSPP_F32, {n});
    Buf du(g, DSPP_F32, {n});
    auto load = [&] {
      dp.upload(doubles(p0));
      dg.upload(doubles(g0));
      ds.upload(doubles(s0));
      dv.upload(doubles(v0));
    };

    // SGD: plain (maximize, no buffer), momentum on its first step, dampened, Nesterov.
    struct SgdCase {
      const char* label;
      dspp::DeviceSgdConsts k;
      bool buf;
    };
    const SgdCase sgd_cases[] = {
        {"sgd plain, maximize", {1e-2f, 1e-2f, 0.0f, 1.0f, -1.0f, 0, 0}, false},
        {"sgd momentum, first step", {1e-2f, 0.0f, 0.9f, 1.0f, 1.0f, 1, 0}, true},
        {"sgd momentum, dampening 0.1", {1e-2f, 1e-2f, 0.9f, 0.9f, 1.0f, 0, 0}, true},
        {"sgd nesterov", {1e-2f, 1e-2f, 0.9f, 1.0f, 1.0f, 0, 1}, true},
    };
    for (const SgdCase& c : sgd_cases) {
      INFO(c.label);
      load();
      check(g.k->sgd_step(dp.v(), dg.v(), c.buf ? ds.v() : nullptr, &c.k, g.stream), "sgd_step");
      std::vector<float> p = p0, b = s0;
      for (int64_t i = 0; i < n; ++i) sgd_ref_element(p[i], g0[i], b[i], c.k);
      expect_bits("sgd_step p", dp.raw(), p);
      expect_bits("sgd_step buf", ds.raw(), c.buf ? b : s0);
    }

    // Lion, with c == 0 exactly at element 0 (m = g = 0: sign 0) and an infinite p at 2.
    {
      const dspp::DeviceLionConsts k{0.9f, 0.1f, 0.99f, 0.01f, 1e-3f, 1.0f - 1e-4f};
      std::vector<float> p = p0, m = s0, gr = g0;
      m[0] = 0.0f;
      gr[0] = 0.0f;
      if (n > 2) p[2] = inf;
      dp.upload(doubles(p));
      dg.upload(doubles(gr));
      ds.upload(doubles(m));
      check(g.k->lion_step(dp.v(), dg.v(), ds.v(), &k, g.stream), "lion_step");
      for (int64_t i = 0; i < n; ++i) lion_ref_element(p[i], gr[i], m[i], k);
      expect_bits("lion_step p", dp.raw(), p);
      expect_bits("lion_step m", ds.raw(), m);
    }

    // Adagrad: L2 and maximize; the sum starts positive.
    for (const dspp::DeviceAdagradConsts& k :
         {dspp::DeviceAdagradConsts{1e-2f, 0.0f, 1e-10f, 1.0f},
          dspp::DeviceAdagradConsts{5e-3f, 1e-2f, 1e-8f, -1.0f}}) {
      INFO("adagrad sign " << k.sign);
      load();
      dv.upload(doubles(v0));
      check(g.k->adagrad_step(dp.v(), dg.v(), dv.v(), &k, g.stream), "adagrad_step");
      std::vector<float> p = p0, sum = v0;
      for (int64_t i = 0; i < n; ++i) adagrad_ref_element(p[i], g0[i], sum[i], k);
      expect_bits("adagrad_step p", dp.raw(), p);
      expect_bits("adagrad_step sum", dv.raw(), sum);
    }

    // LAMB: both denominators; then the second pass with a scale.
    for (int32_t inside : {0, 1}) {
      INFO("lamb eps_inside_sqrt " << inside);
      const dspp::DeviceLambConsts k{0.9f, 0.1f, 0.999f, 0.001f, 1e-6f, 1e-2f, inside};
      load();
      check(g.k->lamb_moments(dp.v(), dg.v(), ds.v(), dv.v(), &k, du.v(), g.stream),
            "lamb_moments");
      std::vector<float> m = s0, v = v0, u(n), p = p0;
      for (int64_t i = 0; i < n; ++i) lamb_moments_ref_element(p0[i], g0[i], m[i], v[i], u[i], k);
      expect_bits("lamb_moments m", ds.raw(), m);
      expect_bits("lamb_moments v", dv.raw(), v);
      expect_bits("lamb_moments u", du.raw(), u);
      expect_bits("lamb_moments leaves p", dp.raw(), p0);
      const float scale = 1.234e-3f;
      check(g.k->lamb_apply(dp.v(), ds.v(), dv.v(), &k, scale, g.stream), "lamb_apply");
      for (int64_t i = 0; i < n; ++i) {
        volatile const float step = scale * lamb_update_ref(m[i], v[i], p[i], k);
        p[i] = p[i] - step;
      }
      expect_bits("lamb_apply p", dp.raw(), p);
    }

    // Muon's momentum and decayed update (also the non-finite rule: u = g with an inf).
    {
      load();
      const float beta = 0.95f, omb = static_cast<float>(1.0 - 0.95);
      check(g.k->muon_momentum(dg.v(), ds.v(), du.v(), beta, omb, g.stream), "muon_momentum");
      std::vector<float> m = s0, u(n);
      for (int64_t i = 0; i < n; ++i) muon_momentum_ref_element(g0[i], m[i], u[i], beta, omb);
      expect_bits("muon_momentum m", ds.raw(), m);
      expect_bits("muon_momentum u", du.raw(), u);
      std::vector<float> gr = g0;
      gr[n / 2] = inf;
      dg.upload(doubles(gr));
      check(g.k->decayed_update(dp.v(), dg.v(), 0.998f, 0.02f, g.stream), "decayed_update");
      std::vector<float> p = p0;
      for (int64_t i = 0; i < n; ++i) p[i] = decayed_ref(p[i], gr[i], 0.998f, 0.02f);
      expect_bits("decayed_update p", dp.raw(), p);
      CHECK(std::isinf(p[n / 2]));
    }
  }

  // Bad arguments: nothing enqueued, a message naming the argument.
  {
    Buf dp(g, DSPP_F32, {9}), dg(g, DSPP_F32, {9}), dg8(g, DSPP_F32, {8}), dm(g, DSPP_F32, {9});
    Buf d16(g, DSPP_BF16, {9});
    dp.upload(std::vector<double>(9, 1.5));
    const std::vector<unsigned char> before = dp.raw();
    const dspp::DeviceSgdConsts sk{1e-2f, 0.0f, 0.9f, 1.0f, 1.0f, 0, 0};
    CHECK(g.k->sgd_step(dp.v(), dg.v(), nullptr, &sk, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "sgd_step: buf is NULL but the momentum is"));
    CHECK(g.k->sgd_step(dp.v(), dg8.v(), dm.v(), &sk, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "sgd_step: g must be f32 with 9 elements"));
    const dspp::DeviceLionConsts lk{0.9f, 0.1f, 0.99f, 0.01f, 1e-3f, 1.0f};
    CHECK(g.k->lion_step(dp.v(), dg.v(), dp.v(), &lk, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "lion_step: m must not be the same memory as p"));
    CHECK(g.k->adagrad_step(d16.v(), dg.v(), dm.v(), nullptr, g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "adagrad_step: k is NULL"));
    const dspp::DeviceLambConsts bk{0.9f, 0.1f, 0.999f, 0.001f, 1e-6f, 0.0f, 0};
    CHECK(g.k->lamb_moments(dp.v(), dg.v(), dm.v(), dm.v(), &bk, dg8.v(), g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "lamb_moments: u must be f32 with 9 elements"));
    CHECK(g.k->muon_momentum(d16.v(), dm.v(), dp.v(), 0.9f, 0.1f, g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "muon_momentum: g must be f32, got bf16 [9]"));
    CHECK(g.k->decayed_update(dp.v(), dp.v(), 1.0f, 0.1f, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(
        contains(dspp::last_plugin_error(), "decayed_update: u must not be the same memory as p"));
    CHECK(dp.raw() == before);
  }
}

TEST_CASE("device/cuda kernels: transpose, add_diagonal and divide_by_norm (Muon's pieces)",
          "[gpu][kernels][optimizer]") {
  Gpu g;
  REQUIRE(g.k->version() >= 3);
  uint64_t seed = 1600;
  // transpose: bits moved, every float dtype; shapes around the 32 x 32 tile and a 3-d view
  // (its matrix [2 x 70, 40]).
  const std::vector<std::vector<int64_t>> shapes = {{1, 1},   {3, 5},      {32, 32}, {33, 65},
                                                    {100, 7}, {2, 70, 40}, {257, 1}};
  for (const auto& shape : shapes) {
    for (int32_t dt : kFloatTypes) {
      INFO("transpose " << dtype_name(dt) << " " << shape_str(shape));
      const int64_t cols = shape.back(), rows = product(shape) / cols;
      const auto x = round_all(dt, normal(static_cast<size_t>(rows * cols), 0, 1, ++seed));
      Buf dx(g, dt, shape), dout(g, dt, {cols, rows});
      dx.upload(x);
      check(g.k->transpose(dx.v(), dout.v(), g.stream), "transpose");
      std::vector<double> ref(static_cast<size_t>(rows * cols));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) ref[c * rows + r] = x[r * cols + c];
      expect_close("transpose", dout.download(), ref, {cols, rows}, 0, 0);
    }
  }
  {
    Buf dx(g, DSPP_F32, {4, 6}), wrong(g, DSPP_F32, {4, 6}), d16(g, DSPP_BF16, {6, 4});
    CHECK(g.k->transpose(dx.v(), wrong.v(), g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "transpose: out must be a f32 [6, 4] matrix"));
    CHECK(g.k->transpose(dx.v(), d16.v(), g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(g.k->transpose(dx.v(), dx.v(), g.stream) == DSPP_ERR_INVALID_ARGUMENT);
  }

  // add_diagonal: one fp32 addition on the diagonal, the rest untouched.
  for (int64_t n : {1, 7, 300}) {
    INFO("add_diagonal n " << n);
    const std::vector<float> x = floats(normal(static_cast<size_t>(n * n), 0, 1, ++seed));
    Buf dx(g, DSPP_F32, {n, n});
    dx.upload(doubles(x));
    check(g.k->add_diagonal(dx.v(), 3.4445f, g.stream), "add_diagonal");
    std::vector<float> ref = x;
    for (int64_t d = 0; d < n; ++d) {
      volatile const float sum = ref[d * n + d] + 3.4445f;
      ref[d * n + d] = sum;
    }
    expect_bits("add_diagonal", dx.raw(), ref);
  }
  {
    Buf dx(g, DSPP_F32, {4, 6});
    CHECK(g.k->add_diagonal(dx.v(), 1.0f, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "add_diagonal: x must be a square matrix"));
  }

  // divide_by_norm from sum_squares, as Newton-Schulz normalises: the root in f64 rounded once,
  // + eps and the division in f32; in place and out of place; a zero matrix stays zero.
  for (int64_t n : {1, 1000, 65537}) {
    INFO("divide_by_norm n " << n);
    const std::vector<float> x = floats(normal(static_cast<size_t>(n), 0, 0.1, ++seed));
    Buf dx(g, DSPP_F32, {n}), dout(g, DSPP_F32, {n}), sq(g, DSPP_F64, {1});
    dx.upload(doubles(x));
    check(g.k->sum_squares(dx.v(), sq.v(), 0, g.stream), "sum_squares");
    const double s = sq.download()[0];
    const float eps = 1e-7f;
    volatile const float root = static_cast<float>(std::sqrt(s));
    volatile const float denom = root + eps;
    std::vector<float> ref(n);
    for (int64_t i = 0; i < n; ++i) {
      volatile const float q = x[i] / denom;
      ref[i] = q;
    }
    check(g.k->divide_by_norm(dx.v(), sq.v(), eps, dout.v(), g.stream), "divide_by_norm");
    expect_bits("divide_by_norm", dout.raw(), ref);
    check(g.k->divide_by_norm(dx.v(), sq.v(), eps, dx.v(), g.stream), "divide_by_norm in place");
    expect_bits("divide_by_norm in place", dx.raw(), ref);
    dx.upload(std::vector<double>(n, 0.0));
    check(g.k->sum_squares(dx.v(), sq.v(), 0, g.stream), "sum_squares of zeros");
    check(g.k->divide_by_norm(dx.v(), sq.v(), eps, dout.v(), g.stream), "divide_by_norm zeros");
    expect_bits("divide_by_norm of zeros", dout.raw(), std::vector<float>(n, 0.0f));
  }
  {
    Buf dx(g, DSPP_F32, {5}), sq32(g, DSPP_F32, {1}), out(g, DSPP_F32, {4});
    CHECK(g.k->divide_by_norm(dx.v(), sq32.v(), 1e-7f, dx.v(), g.stream) ==
          DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "divide_by_norm: sum_sq must be f64 with 1"));
  }

  // gemm as Newton-Schulz calls it: X X^T with a and b the same memory, f32 without TF32, and
  // beta != 0 on a copy (B = b A + c A A). Bound as the gemm test's: 1e-5 of sum |a b|.
  {
    const int64_t n = 24, m = 72;
    const auto x = round_all(DSPP_F32, normal(static_cast<size_t>(n * m), 0, 1, ++seed));
    Buf dx(g, DSPP_F32, {n, m}), da(g, DSPP_F32, {n, n}), db(g, DSPP_F32, {n, n});
    dx.upload(x);
    check(g.k->gemm(dx.v(), 0, dx.v(), 1, da.v(), 1.0f, 0.0f, DSPP_GEMM_EPILOGUE_NONE, nullptr,
                    nullptr, 0, g.stream),
          "gemm X X^T");
    std::vector<double> ref(n * n), bound(n * n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0, mag = 0;
        for (int64_t q = 0; q < m; ++q) {
          acc += x[i * m + q] * x[j * m + q];
          mag += std::fabs(x[i * m + q] * x[j * m + q]);
        }
        ref[i * n + j] = acc;
        bound[i * n + j] = 1e-5 * mag;
      }
    }
    expect_within("gemm X X^T", da.download(), ref, bound, {n, n});
    const std::vector<double> a = da.download();
    db.upload(a);
    check(g.k->gemm(da.v(), 0, da.v(), 0, db.v(), 2.0315f, -4.7750f, DSPP_GEMM_EPILOGUE_NONE,
                    nullptr, nullptr, 0, g.stream),
          "gemm b A + c A A");
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0, mag = 0;
        for (int64_t q = 0; q < n; ++q) {
          acc += a[i * n + q] * a[q * n + j];
          mag += std::fabs(a[i * n + q] * a[q * n + j]);
        }
        ref[i * n + j] = 2.0315 * acc + -4.7750 * a[i * n + j];
        bound[i * n + j] = 1e-5 * (2.0315 * mag + 4.7750 * std::fabs(a[i * n + j]));
      }
    }
    expect_within("gemm b A + c A A", db.download(), ref, bound, {n, n});
  }
}

// ---- steady state ---------------------------------------------------------------------------

TEST_CASE("device/cuda kernels: philox fill_uniform and fill_normal by the counter mapping",
          "[gpu][kernels][random]") {
  Gpu g;
  REQUIRE(g.k->version() >= 4);
  using namespace dspp::philox;
  const uint64_t seed = 0x9e3779b97f4a7c15ull;
  const int64_t n = 100003;      // not a multiple of 4, several blocks of threads
  const uint64_t offset = 4097;  // the stream starts mid-block (lane 1)
  // Uniform: fma(high - low, u, low) in f32 from the host's own Philox words, bit for bit, in f32;
  // bf16 and f16 are that f32 value rounded once (round to nearest even), exactly.
  const float low = -0.75f, high = 2.5f;
  std::vector<double> ref(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t e = offset + static_cast<uint64_t>(i);
    ref[static_cast<size_t>(i)] =
        std::fmaf(high - low, unit_float(block_of(seed, e).w[e & 3]), low);
  }
  for (int32_t dt : kFloatTypes) {
    INFO("fill_uniform " << dtype_name(dt));
    Buf out(g, dt, {n});
    check(g.k->fill_uniform(out.v(), seed, offset, low, high, g.stream), "fill_uniform");
    expect_close("fill_uniform", out.download(), round_all(dt, ref), {n}, 0, 0);
  }
  // The counter property: two fills at offsets o and o + k equal one fill of the whole range.
  {
    const int64_t k = 777;
    Buf whole(g, DSPP_F32, {n}), a(g, DSPP_F32, {k}), b(g, DSPP_F32, {n - k});
    check(g.k->fill_uniform(whole.v(), seed, offset, low, high, g.stream), "fill_uniform");
    check(g.k->fill_uniform(a.v(), seed, offset, low, high, g.stream), "fill_uniform");
    check(g.k->fill_uniform(b.v(), seed, offset + k, low, high, g.stream), "fill_uniform");
    std::vector<double> joined = a.download(), rest = b.download();
    joined.insert(joined.end(), rest.begin(), rest.end());
    expect_close("fill_uniform in two parts", joined, whole.download(), {n}, 0, 0);
  }
  // Normal: Box-Muller from the same words, the reference in float64; the device's f32 log,
  // sqrt and sincospi are each within a few ulps, so |got - ref| <= 4e-6 (1 + |ref|) (|z| < 6
  // for u1 >= 2^-24) covers them, while a wrong lane or word gives an O(1) error.
  const float mean = 0.5f, sd = 2.0f;
  std::vector<double> nref(static_cast<size_t>(n));
  double sum = 0.0, sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t e = offset + static_cast<uint64_t>(i);
    const Words b = block_of(seed, e);
    const int p = static_cast<int>((e & 3) >> 1);
    const double u1 = (static_cast<double>(b.w[2 * p] >> 8) + 1.0) * 0x1p-24;
    const double u2 = static_cast<double>(b.w[2 * p + 1] >> 8) * 0x1p-24;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double z = (e & 1) ? r * std::sin(2.0 * std::numbers::pi * u2)
                             : r * std::cos(2.0 * std::numbers::pi * u2);
    nref[static_cast<size_t>(i)] = mean + sd * z;
    sum += z;
    sum_sq += z * z;
  }
  {
    Buf out(g, DSPP_F32, {n});
    check(g.k->fill_normal(out.v(), seed, offset, mean, sd, g.stream), "fill_normal");
    std::vector<double> got = out.download();
    // As standard normals, so the bound is relative to |z|.
    std::vector<double> gz(got.size()), rz(got.size());
    for (size_t i = 0; i < got.size(); ++i) {
      gz[i] = (got[i] - mean) / sd;
      rz[i] = (nref[i] - mean) / sd;
    }
    expect_close("fill_normal", gz, rz, {n}, 4e-6, 4e-6);
  }
  // The reference itself looks normal (a check on the mapping, not on the GPU): mean within
  // 5 / sqrt(n) of 0, variance within 2% of 1.
  CHECK(std::fabs(sum / n) < 5.0 / std::sqrt(static_cast<double>(n)));
  CHECK(std::fabs(sum_sq / n - 1.0) < 0.02);
  // Arguments.
  {
    Buf out(g, DSPP_F32, {8});
    CHECK(g.k->fill_uniform(out.v(), seed, 0, 1.0f, 0.0f, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    CHECK(contains(dspp::last_plugin_error(), "fill_uniform: low and high must be finite"));
    CHECK(g.k->fill_normal(out.v(), seed, 0, 0.0f, -1.0f, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
    Buf ints(g, DSPP_I32, {8});
    CHECK(g.k->fill_normal(ints.v(), seed, 0, 0.0f, 1.0f, g.stream) == DSPP_ERR_INVALID_ARGUMENT);
  }
}

TEST_CASE("device/cuda kernels: a repeated training step calls cudaMalloc only in the first",
          "[gpu][kernels]") {
  // Scratch memory (GEMM workspace, reduction partials, sort buffers) comes from the caching
  // allocator on the call's stream: after one step, the same step allocates nothing new.
  Gpu g;
  const int64_t B = 2, T = 67, C = 96, V = 1000, NH = 3;
  Buf x(g, DSPP_BF16, {B, T, C}), w(g, DSPP_BF16, {3 * C, C}), bias(g, DSPP_BF16, {3 * C});
  Buf qkv(g, DSPP_BF16, {B, T, 3 * C}), y(g, DSPP_BF16, {B, T, C}), lse(g, DSPP_F32, {B, NH, T});
  Buf dqkv(g, DSPP_BF16, {B, T, 3 * C}), dw(g, DSPP_F32, {3 * C, C}), db(g, DSPP_F32, {3 * C});
  Buf lnw(g, DSPP_BF16, {C}), mean(g, DSPP_F32, {B * T}), rstd(g, DSPP_F32, {B * T});
  Buf logits(g, DSPP_BF16, {B, T, V}), targets(g, DSPP_I32, {B, T}), loss(g, DSPP_F32, {1});
  Buf ids(g, DSPP_I32, {B, T}), emb(g, DSPP_BF16, {V, C}), demb(g, DSPP_F32, {V, C});
  Buf norm(g, DSPP_F64, {1});
  x.upload(round_all(DSPP_BF16, normal(B * T * C, 0, 1, 1)));
  w.upload(round_all(DSPP_BF16, normal(3 * C * C, 0, 0.1, 2)));
  bias.upload(std::vector<double>(3 * C, 0.0));
  lnw.upload(std::vector<double>(C, 1.0));
  logits.upload(round_all(DSPP_BF16, normal(B * T * V, 0, 1, 3)));
  std::vector<int32_t> t(B * T);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 37) % V);
  targets.upload_i32(t);
  ids.upload_i32(t);
  emb.upload(round_all(DSPP_BF16, normal(V * C, 0, 1, 4)));
  check(g.k->fill(dw.v(), 0, g.stream), "fill");
  check(g.k->fill(db.v(), 0, g.stream), "fill");
  check(g.k->fill(demb.v(), 0, g.stream), "fill");
  auto step = [&] {
    check(
        g.k->layernorm_forward(x.v(), lnw.v(), lnw.v(), 1e-5f, y.v(), mean.v(), rstd.v(), g.stream),
        "layernorm_forward");
    check(g.k->gemm(y.v(), 0, w.v(), 1, qkv.v(), 1, 0, DSPP_GEMM_EPILOGUE_BIAS, bias.v(), nullptr,
                    0, g.stream),
          "gemm");
    check(g.k->attention_forward(qkv.v(), NH, y.v(), lse.v(), g.stream), "attention_forward");
    check(g.k->attention_backward(qkv.v(), y.v(), lse.v(), y.v(), NH, dqkv.v(), g.stream),
          "attention_backward");
    check(g.k->gemm(dqkv.v(), 1, x.v(), 0, dw.v(), 1, 1, DSPP_GEMM_EPILOGUE_NONE, nullptr, nullptr,
                    0, g.stream),
          "gemm dW");
    check(g.k->bias_grad(dqkv.v(), db.v(), 1, g.stream), "bias_grad");
    check(g.k->layernorm_backward(x.v(), x.v(), lnw.v(), mean.v(), rstd.v(), y.v(), nullptr,
                                  nullptr, g.stream),
          "layernorm_backward");
    check(g.k->cross_entropy(logits.v(), targets.v(), -100, 1.0f, nullptr, loss.v(), logits.v(),
                             g.stream),
          "cross_entropy");
    check(g.k->embedding_backward(ids.v(), x.v(), demb.v(), g.stream), "embedding_backward");
    if (g.k->version() >= 2) {
      check(g.k->sum_squares(dw.v(), norm.v(), 0, g.stream), "sum_squares");
      check(g.k->sum_squares(demb.v(), norm.v(), 1, g.stream), "sum_squares");
    }
    g.sync();
  };
  auto mallocs = [&] {
    dspp::DeviceMemoryStats s{};
    s.struct_size = sizeof s;
    check(g.dev->memory_stats(&s), "memory_stats");
    return s.device_mallocs;
  };
  step();
  const uint64_t after_first = mallocs();
  for (int i = 0; i < 3; ++i) step();
  CHECK(mallocs() == after_first);
}
