// optimizer/muon: DeepSpeed's hybrid Muon (MuonWithAuxAdam) over flat fp32 buffers.
//
// Segments flagged DSPP_PARAM_USE_MUON (flagger/muon sets the flag) get Muon; the others get
// AdamW, as DeepSpeed's engine splits every param group into a Muon half and an Adam half.
//
// Muon, per parameter (DeepSpeed's muon_update: nesterov on, 5 Newton-Schulz steps):
//   m = beta m + (1 - beta) g                        beta = `momentum`
//   u = (1 - beta) g + beta m                        Nesterov: the gradient blended towards m
//   O = NS(u), per matrix: a tall one is transposed to its wide orientation (n x m, n <= m),
//       X = u / (||u||_F + 1e-7), then 5 times  A = X X^T,  X = a X + (b A + c A^2) X
//       with (a, b, c) = (3.4445, -4.7750, 2.0315)
//   p = p (1 - lr wd) - lr sqrt(max(1, rows / cols)) O
// The matrices of a parameter: a 2-D one is one matrix; a 4-D one (a conv filter) is viewed as
// d0 x (d1 d2 d3); any other ndim >= 3 is a batch of d[-2] x d[-1] matrices (DeepSpeed's batched
// NS, as for expert weights). rows / cols of the scale are always the parameter's own last two
// dims, also for 4-D (DeepSpeed's and Keller Jordan's rule). DeepSpeed 0.19.8 itself raises on a
// 4-D parameter (its non-finite guard broadcasts the 2-D view against the 4-D gradient); this
// follows its NS kernels and scale, which scripts/reference/muon.py checks.
// ns_method "gram" (DeepSpeed's default) runs the same iteration on the n x n Gram matrix of a
// non-square X: X_k = Q_k X_0 with Q_{k+1} = (a I + Z_k) Q_k, Z_k = b R_k + c R_k^2 and
// R_{k+1} = (a I + Z_k)^2 R_k, restarting once (X = Q X, R = X X^T) before the third step as
// DeepSpeed does; equal to "standard" in exact arithmetic, fewer flops when m >> n. A square
// matrix takes the standard iteration under both methods.
// A gradient with a non-finite element leaves the momentum as it was and is itself applied as the
// update (p = p (1 - lr wd) - lr g), so the overflow shows in the parameters, as in DeepSpeed.
//
// AdamW (the other segments): DeepSpeed's FusedAdam/inline Adam with bias correction
// (adam_kernel.h); `adam_w_mode: false` adds the weight decay to the gradient instead (L2). Muon's
// weight decay is always decoupled.
//
// Options resolve as DeepSpeed's engine resolves them (_muon_param_groups): the default (Muon:
// lr 0.02, momentum 0.95, weight_decay 0, ns_method "gram"; Adam: lr 3e-4, betas (0.9, 0.95), eps
// 1e-10, weight_decay 0), then optimizer.params (lr and weight_decay go to both halves), then
// muon_lr / adam_lr, then the group's own values (ParamGroupSetup lr / weight_decay and its
// options_json: lr, weight_decay, momentum, ns_method, betas, eps).
//
// Learning rates at a step: a group holding only one half steps at the group's lr (StepArgs::lrs,
// else its resolved lr), which is DeepSpeed's behaviour when the engine splits groups into halves
// as DeepSpeed does. A group holding both halves reports its Muon lr as its lr; the scheduler's
// value then drives the Muon half, and the Adam half is scaled by the same factor (its lr times
// lrs[g] / the Muon lr; its own lr when the Muon lr is 0). StepArgs::betas1 is ignored with a
// warning: DeepSpeed's schedulers do not cycle momentum for Muon (its param-group defaults have no
// betas, so OneCycle turns cycle_momentum off).
//
// Precision: fp32 throughout. DeepSpeed runs NS in bf16 ("standard") or fp16 ("gram") where the
// accelerator has them and fp32 elsewhere.
//
// Batching: the Muon matrices are stepped one after another when they are large, each GEMM
// threaded by OpenBLAS; the small ones (below OpenBLAS's own threading threshold) are spread over
// OpenMP threads, one matrix per thread at a time. Each matrix's arithmetic is the same either
// way, so results do not depend on the number of threads.
//
// On a GPU (OptimizerSetup::device CUDA, DeviceKernels version 3) the same steps run on the
// host's device, on the legacy default stream: the AdamW half through adam_step, Muon through
// muon_momentum (the momentum and Nesterov blend, the CPU's fp32 operations), the very
// Newton-Schulz sequence of GEMMs and copies of ns_standard()/ns_gram() (templates over HostOps /
// DeviceOps) with DeviceKernels::gemm in f32 without TF32, transpose for tall matrices,
// sum_squares + divide_by_norm for the Frobenius normalisation, add_diagonal for a I + Z, and
// decayed_update for p = p decay - lr scale O. The non-finite rule needs a decision on the host:
// the gradients' sums of squares (non-finite exactly when an element is) are computed for every
// Muon parameter first and copied to the host together, one device-to-host copy per step. The
// buffers of the largest matrix are allocated once per init(). Elementwise results equal the
// CPU's bit for bit; the GEMMs sum in another order than OpenBLAS, so the orthogonalised update
// agrees with the CPU's to fp32 rounding amplified by Newton-Schulz (tests/test_gpu_optimizers).
#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../common/adam_kernel.h"
#include "../common/flat_optimizer.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using dspp::optim::adam_consts;
using dspp::optim::adam_kernel;
using dspp::optim::AdamConsts;
using dspp::optim::ConfigReader;
using dspp::optim::fail;
using dspp::optim::FlatOptimizer;
using dspp::optim::GroupStep;
using dspp::optim::OptionReader;

constexpr float kNsA = 3.4445f, kNsB = -4.7750f, kNsC = 2.0315f;
constexpr int kNsSteps = 5;
constexpr int kGramRestart = 2;  // the Gram iteration rebuilds X and R before this step
constexpr float kNsEps = 1e-7f;
// OpenBLAS runs a GEMM of m*n*k <= 65536 * 4 on the calling thread (SMP_THRESHOLD_MIN *
// GEMM_MULTITHREAD_THRESHOLD): matrices below that are the ones worth spreading over threads.
constexpr int64_t kSmallGemm = 65536 * 4;
// Below this much NS work (sum of n*n*m) in small matrices, waking threads costs more.
constexpr int64_t kParallelWork = 1 << 17;

struct MuonHalf {
  double lr = 0.02;
  double momentum = 0.95;
  double weight_decay = 0.0;
  bool gram = true;
};

struct AdamHalf {
  double lr = 3e-4;
  std::array<double, 2> betas{0.9, 0.95};
  double eps = 1e-10;
  double weight_decay = 0.0;
};

struct GroupHyper {
  MuonHalf muon;
  AdamHalf adam;
  bool has_muon = false;
};

// One Muon parameter: `batch` matrices of rows x cols, stored one after another.
struct MatrixJob {
  int32_t group;
  bool no_decay;
  int64_t offset;  // in the flat buffers
  int64_t numel;
  int64_t batch, rows, cols;
  double scale;  // sqrt(max(1, d[-2] / d[-1]))
  int64_t work;  // batch * n * n * m: the size of its GEMMs
};

// Per-step constants of one Muon parameter.
struct MuonStep {
  float beta, one_minus_beta;
  float lr, decay;  // decay = 1 - lr * wd
  float lr_scale;   // lr * scale
  bool gram;
};

// C (r x c) = alpha A (r x k) op(B) + beta C, row-major; op(B) is B (k x c) or, with trans_b, the
// transpose of B (c x k).
void gemm(bool trans_b, int64_t r, int64_t c, int64_t k, float alpha, const float* A,
          const float* B, float beta, float* C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(r), static_cast<blasint>(c), static_cast<blasint>(k), alpha, A,
              static_cast<blasint>(k), B, static_cast<blasint>(trans_b ? k : c), beta, C,
              static_cast<blasint>(c));
}

void copy(const float* from, int64_t n, float* to) {
  std::memcpy(to, from, static_cast<size_t>(n) * sizeof(float));
}

// The three operations of the Newton-Schulz iterations on host memory (OpenBLAS, memcpy, a loop).
// DeviceOps (below) has the same on the GPU, so both paths run the one sequence written in
// ns_standard() and ns_gram().
struct HostOps {
  void gemm(bool trans_b, int64_t r, int64_t c, int64_t k, float alpha, const float* A,
            const float* B, float beta, float* C) const {
    ::gemm(trans_b, r, c, k, alpha, A, B, beta, C);
  }
  void copy(const float* from, int64_t n, float* to) const { ::copy(from, n, to); }
  // x[d, d] += value for the n x n matrix x.
  void add_diagonal(float* x, int64_t n, float value) const {
    for (int64_t d = 0; d < n; ++d) x[d * n + d] += value;
  }
};

// Workspace floats one matrix of n x m (n <= m) needs besides its update: X and Y (n x m) and six
// n x n buffers (the Gram iteration's R, Z, Q, Q', RZ, R'; the standard one uses two).
int64_t matrix_workspace(int64_t n, int64_t m) {
  return 2 * n * m + 6 * n * n;
}

// The standard quintic iteration on X (n x m), in place (X and Y swap; the result is in *X).
template <class Ops>
void ns_standard(const Ops& ops, float** X, float** Y, float* A, float* B, int64_t n, int64_t m) {
  for (int it = 0; it < kNsSteps; ++it) {
    ops.gemm(true, n, n, m, 1.0f, *X, *X, 0.0f, A);  // A = X X^T
    ops.copy(A, n * n, B);
    ops.gemm(false, n, n, n, kNsC, A, A, kNsB, B);  // B = b A + c A A
    ops.copy(*X, n * m, *Y);
    ops.gemm(false, n, m, n, 1.0f, B, *X, kNsA, *Y);  // Y = a X + B X
    std::swap(*X, *Y);
  }
}

// The Gram form (n < m): the iteration carried by R = X X^T and the accumulated Q; X is touched
// only at the restart and at the end. The result is in *X. The six n x n buffers lie `stride`
// floats apart from `nn` on.
template <class Ops>
void ns_gram(const Ops& ops, float** X, float** Y, float* nn, int64_t stride, int64_t n,
             int64_t m) {
  const int64_t n2 = n * n;
  float* R = nn;
  float* Z = nn + stride;
  float* Q = nn + 2 * stride;
  float* Qn = nn + 3 * stride;
  float* RZ = nn + 4 * stride;
  float* Rn = nn + 5 * stride;
  ops.gemm(true, n, n, m, 1.0f, *X, *X, 0.0f, R);
  bool have_q = false;
  for (int it = 0; it < kNsSteps; ++it) {
    if (it == kGramRestart) {
      ops.gemm(false, n, m, n, 1.0f, Q, *X, 0.0f, *Y);  // X = Q X
      std::swap(*X, *Y);
      ops.gemm(true, n, n, m, 1.0f, *X, *X, 0.0f, R);
      have_q = false;
    }
    ops.copy(R, n2, Z);
    ops.gemm(false, n, n, n, kNsC, R, R, kNsB, Z);  // Z = b R + c R R
    if (!have_q) {
      ops.copy(Z, n2, Q);  // Q = a I + Z
      ops.add_diagonal(Q, n, kNsA);
      have_q = true;
    } else {
      ops.copy(Q, n2, Qn);
      ops.gemm(false, n, n, n, 1.0f, Z, Q, kNsA, Qn);  // Q = a Q + Z Q
      std::swap(Q, Qn);
    }
    if (it < kNsSteps - 1 && it + 1 != kGramRestart) {
      ops.copy(R, n2, RZ);
      ops.gemm(false, n, n, n, 1.0f, Z, R, kNsA, RZ);  // RZ = a R + Z R
      ops.copy(RZ, n2, Rn);
      ops.gemm(false, n, n, n, 1.0f, Z, RZ, kNsA, Rn);  // R = a RZ + Z RZ
      std::swap(R, Rn);
    }
  }
  ops.gemm(false, n, m, n, 1.0f, Q, *X, 0.0f, *Y);  // X = Q X
  std::swap(*X, *Y);
}

// Replaces the rows x cols matrix `u` by its orthogonalisation. `ws` holds matrix_workspace().
void orthogonalize(float* u, int64_t rows, int64_t cols, bool gram, float* ws) {
  const bool tall = rows > cols;
  const int64_t n = tall ? cols : rows, m = tall ? rows : cols;
  float* X = ws;
  float* Y = ws + n * m;
  float* nn = ws + 2 * n * m;
  if (tall) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) X[i * m + j] = u[j * cols + i];
  } else {
    copy(u, n * m, X);
  }
  double sq = 0.0;  // the Frobenius norm accumulated in double: no cancellation to worry about
  for (int64_t i = 0; i < n * m; ++i) sq += static_cast<double>(X[i]) * X[i];
  const float denom = static_cast<float>(std::sqrt(sq)) + kNsEps;
  for (int64_t i = 0; i < n * m; ++i) X[i] /= denom;
  if (gram && n < m) {
    ns_gram(HostOps{}, &X, &Y, nn, n * n, n, m);
  } else {
    ns_standard(HostOps{}, &X, &Y, nn, nn + n * n, n, m);
  }
  if (tall) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) u[j * cols + i] = X[i * m + j];
  } else {
    copy(X, n * m, u);
  }
}

// One Muon parameter: momentum, Nesterov blend, NS per matrix, scaled decoupled update.
// `ws` holds j.numel floats for the update plus matrix_workspace() of one matrix.
void muon_parameter(const MatrixJob& j, const MuonStep& k, float* __restrict p,
                    const float* __restrict g, float* __restrict m, float* ws) {
  bool finite = true;
  for (int64_t i = 0; i < j.numel; ++i) {
    if (!std::isfinite(g[i])) {
      finite = false;
      break;
    }
  }
  if (!finite) {  // momentum kept; the gradient itself is the update
    for (int64_t i = 0; i < j.numel; ++i) p[i] = p[i] * k.decay - k.lr * g[i];
    return;
  }
  float* __restrict u = ws;
#pragma omp simd
  for (int64_t i = 0; i < j.numel; ++i) {
    const float mi = k.beta * m[i] + k.one_minus_beta * g[i];
    m[i] = mi;
    u[i] = k.one_minus_beta * g[i] + k.beta * mi;
  }
  const int64_t per = j.rows * j.cols;
  for (int64_t b = 0; b < j.batch; ++b)
    orthogonalize(u + b * per, j.rows, j.cols, k.gram, ws + j.numel);
#pragma omp simd
  for (int64_t i = 0; i < j.numel; ++i) p[i] = p[i] * k.decay - k.lr_scale * u[i];
}

// ---- the GPU path ------------------------------------------------------------------------------

using dspp::plugin::pass_through;

// The Newton-Schulz operations on device memory, on the legacy default stream: DeviceKernels::gemm
// with f32 inputs and output and flags 0 (no TF32: full fp32 products, as OpenBLAS's; cuBLASLt
// sums in another order, so a product agrees with the CPU's to fp32 rounding, not bit for bit),
// a device-to-device copy, and add_diagonal (the CPU's loop, one fp32 addition an element).
struct DeviceOps {
  dspp::Device* dev;
  dspp::DeviceKernels* kern;
  dspp_device where;

  dspp_tensor_view matrix(const float* data, int64_t rows, int64_t cols) const {
    dspp_tensor_view v{};
    v.data = const_cast<float*>(data);
    v.dtype = DSPP_F32;
    v.ndim = 2;
    v.shape[0] = rows;
    v.shape[1] = cols;
    v.device = where;
    return v;
  }
  dspp_tensor_view scalar_f64(double* data) const {
    dspp_tensor_view v{};
    v.data = data;
    v.dtype = DSPP_F64;
    v.ndim = 1;
    v.shape[0] = 1;
    v.device = where;
    return v;
  }
  // HostOps::gemm's contract: C (r x c) = alpha A (r x k) op(B) + beta C.
  void gemm(bool trans_b, int64_t r, int64_t c, int64_t k, float alpha, const float* A,
            const float* B, float beta, float* C) const {
    const dspp_tensor_view a = matrix(A, r, k);
    const dspp_tensor_view b = trans_b ? matrix(B, c, k) : matrix(B, k, c);
    const dspp_tensor_view out = matrix(C, r, c);
    pass_through(kern->gemm(&a, 0, &b, trans_b ? 1 : 0, &out, alpha, beta, DSPP_GEMM_EPILOGUE_NONE,
                            nullptr, nullptr, 0u, nullptr));
  }
  void copy(const float* from, int64_t n, float* to) const {
    pass_through(dev->copy(to, from, static_cast<size_t>(n) * sizeof(float), nullptr));
  }
  void add_diagonal(float* x, int64_t n, float value) const {
    const dspp_tensor_view v = matrix(x, n, n);
    pass_through(kern->add_diagonal(&v, value, nullptr));
  }
};

// Where one matrix's buffers lie in the device scratch, in floats from its start: the update u
// of the whole parameter, X and Y (n x m), then the n x n buffers `nn_stride` apart; every piece
// starts on a 256-byte boundary (what cuBLASLt's fastest kernels want).
struct DeviceLayout {
  int64_t x, y, nn, nn_stride, total;
};
int64_t align64(int64_t floats) {
  return (floats + 63) / 64 * 64;
}
DeviceLayout device_layout(const MatrixJob& j) {
  const int64_t n = std::min(j.rows, j.cols), m = std::max(j.rows, j.cols);
  DeviceLayout l{};
  l.x = align64(j.numel);
  l.y = l.x + align64(n * m);
  l.nn = l.y + align64(n * m);
  l.nn_stride = align64(n * n);
  l.total = l.nn + 6 * l.nn_stride;
  return l;
}

// orthogonalize() on the device: the same steps (tall matrices transposed to their wide
// orientation, X = u / (||u||_F + eps), the same Newton-Schulz sequence, back into u). The norm
// is sum_squares (f64, its own summation order) and divide_by_norm (the CPU's rounding of the
// root and its fp32 division); `fro` is one f64 of device memory.
void orthogonalize_device(const DeviceOps& ops, float* u, int64_t rows, int64_t cols, bool gram,
                          float* ws, const DeviceLayout& l, double* fro) {
  const bool tall = rows > cols;
  const int64_t n = tall ? cols : rows, m = tall ? rows : cols;
  float* X = ws + l.x;
  float* Y = ws + l.y;
  float* nn = ws + l.nn;
  const dspp_tensor_view xv = ops.matrix(X, n, m);
  const dspp_tensor_view uv = ops.matrix(u, rows, cols);
  const dspp_tensor_view fv = ops.scalar_f64(fro);
  if (tall) {
    pass_through(ops.kern->transpose(&uv, &xv, nullptr));
    pass_through(ops.kern->sum_squares(&xv, &fv, 0, nullptr));
    pass_through(ops.kern->divide_by_norm(&xv, &fv, kNsEps, &xv, nullptr));
  } else {  // the CPU copies u into X and divides there: the same values
    pass_through(ops.kern->sum_squares(&uv, &fv, 0, nullptr));
    pass_through(ops.kern->divide_by_norm(&uv, &fv, kNsEps, &xv, nullptr));
  }
  if (gram && n < m) {
    ns_gram(ops, &X, &Y, nn, l.nn_stride, n, m);
  } else {
    ns_standard(ops, &X, &Y, nn, nn + l.nn_stride, n, m);
  }
  if (tall) {
    const dspp_tensor_view result = ops.matrix(X, n, m);
    pass_through(ops.kern->transpose(&result, &uv, nullptr));
  } else {
    ops.copy(X, n * m, u);
  }
}

const char* const kGroupKeys[] = {"lr",    "weight_decay", "momentum", "ns_method",
                                  "betas", "eps",          "name"};

// ns_method from `r` (optimizer.params or a group's overrides): "standard" or "gram".
bool read_gram(const ConfigReader& r, const OptionReader& o, bool dflt) {
  if (!o.has("ns_method")) return dflt;
  std::string v;
  try {
    v = r.get_string("ns_method", "");
  } catch (const dspp::optim::StatusError&) {
    o.bad("ns_method", "\"standard\" or \"gram\"");
  }
  for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (v == "gram") return true;
  if (v == "standard") return false;
  o.bad("ns_method", "\"standard\" or \"gram\"");
}

double read_momentum(const OptionReader& o, double dflt) {
  return o.number("momentum", dflt, 0.0, std::nextafter(1.0, 0.0), "a number in [0, 1)");
}

class Muon final : public FlatOptimizer {
 public:
  Muon(const dspp_host_api* host, ConfigReader cfg) : FlatOptimizer(host, "muon") {
    OptionReader o("muon", cfg, "optimizer.params.");
    dspp::optim::refuse_max_grad_norm(o);
    if (o.flag("per_head_muon", false))
      fail(
          "muon: optimizer.params.per_head_muon is not supported: per-head Newton-Schulz needs "
          "head counts that no dspp flagger records yet (GPT-2's fused c_attn and its c_proj "
          "are left on the full-matrix path by DeepSpeed anyway); remove it or set it to false");
    // The shared lr and weight_decay go to both halves; muon_lr / adam_lr override the lr.
    if (o.has("lr")) {
      base_.muon.lr = o.non_negative("lr", base_.muon.lr);
      base_.adam.lr = base_.muon.lr;
    }
    base_.muon.lr = o.non_negative("muon_lr", base_.muon.lr);
    base_.adam.lr = o.non_negative("adam_lr", base_.adam.lr);
    base_.muon.weight_decay = o.non_negative("weight_decay", 0.0);
    base_.adam.weight_decay = base_.muon.weight_decay;
    base_.muon.momentum = read_momentum(o, base_.muon.momentum);
    base_.muon.gram = read_gram(cfg, o, base_.muon.gram);
    base_.adam.betas = o.betas("betas", base_.adam.betas);
    base_.adam.eps = o.non_negative("eps", base_.adam.eps);
    decoupled_ = o.flag("adam_w_mode", true);
    o.flag("torch_adam", false);  // torch.optim.AdamW for the Adam half: the same math
    if (!o.flag("fp32_optimizer_states", true))
      log(DSPP_LOG_WARNING,
          "fp32_optimizer_states=false (bf16 moments under CPU offload) is not supported; "
          "the moments stay fp32");
  }

  // Muon orthogonalises whole matrices: a ZeRO stage must hand each flagged parameter whole to
  // one rank. (Segments Muon does not take may be slices: AdamW is elementwise.)
  int32_t needs_whole_params() const noexcept override { return 1; }

 protected:
  void configure(const dspp::OptimizerSetup& setup) override {
    groups_.assign(setup.num_groups, GroupHyper{});
    for (int32_t g = 0; g < setup.num_groups; ++g) {
      const dspp::ParamGroupSetup& sg = setup.groups[g];
      GroupOptions go(plugin_name(), sg, g, {std::begin(kGroupKeys), std::end(kGroupKeys)});
      warn_unknown(go, g);
      const OptionReader& r = go.reader;
      GroupHyper& h = groups_[g];
      h.muon.lr = group_value(sg.lr, r, "lr", base_.muon.lr);
      h.adam.lr = group_value(sg.lr, r, "lr", base_.adam.lr);
      h.muon.weight_decay =
          group_value(sg.weight_decay, r, "weight_decay", base_.muon.weight_decay);
      h.adam.weight_decay =
          group_value(sg.weight_decay, r, "weight_decay", base_.adam.weight_decay);
      h.muon.momentum = read_momentum(r, base_.muon.momentum);
      h.muon.gram = read_gram(ConfigReader(go.json.view()), r, base_.muon.gram);
      h.adam.betas = r.betas("betas", base_.adam.betas);
      h.adam.eps = r.non_negative("eps", base_.adam.eps);
    }

    is_muon_.assign(setup.num_segments, false);
    large_.clear();
    small_.clear();
    small_work_ = 0;
    ws_large_ = ws_small_ = 0;
    int64_t muon_numel = 0, adam_numel = 0, adam_count = 0;
    for (int32_t s = 0; s < setup.num_segments; ++s) {
      const dspp::ParamSegment& seg = setup.segments[s];
      if (!(seg.flags & DSPP_PARAM_USE_MUON)) {
        adam_numel += seg.numel;
        ++adam_count;
        continue;
      }
      is_muon_[s] = true;
      groups_[seg.group].has_muon = true;
      if (seg.ndim < 2)
        fail("muon: " + segment_name(s) + " is flagged use_muon but has " +
             std::to_string(seg.ndim) + " dimension(s); Muon orthogonalises matrices (ndim >= 2)");
      if (!segment_is_whole(s))
        fail("muon: " + segment_name(s) +
             " is a slice of its parameter, but Muon orthogonalises whole matrices "
             "(needs_whole_params() is true)");
      MatrixJob j{};
      j.group = seg.group;
      j.no_decay = (seg.flags & DSPP_PARAM_NO_DECAY) != 0;
      j.offset = seg.offset_in_flat;
      j.numel = seg.numel;
      const int32_t nd = seg.ndim;
      if (nd == 4) {  // a conv filter: d0 x (d1 d2 d3)
        j.batch = 1;
        j.rows = seg.shape[0];
        j.cols = seg.shape[1] * seg.shape[2] * seg.shape[3];
      } else {  // a batch of the trailing matrices
        j.batch = 1;
        for (int32_t d = 0; d < nd - 2; ++d) j.batch *= seg.shape[d];
        j.rows = seg.shape[nd - 2];
        j.cols = seg.shape[nd - 1];
      }
      const int64_t r2 = seg.shape[nd - 2], c2 = seg.shape[nd - 1];
      j.scale = r2 > c2 ? std::sqrt(static_cast<double>(r2) / static_cast<double>(c2)) : 1.0;
      if (j.numel == 0) continue;  // nothing to orthogonalise
      const int64_t n = std::min(j.rows, j.cols), m = std::max(j.rows, j.cols);
      j.work = j.batch * n * n * m;
      const int64_t ws = j.numel + matrix_workspace(n, m);
      if (n * n * m > kSmallGemm) {
        large_.push_back(j);
        ws_large_ = std::max(ws_large_, ws);
      } else {
        small_.push_back(j);
        small_work_ += j.work;
        ws_small_ = std::max(ws_small_, ws);
      }
      muon_numel += j.numel;
    }
    std::vector<double> lrs(setup.num_groups);
    for (int32_t g = 0; g < setup.num_groups; ++g)
      lrs[g] = groups_[g].has_muon ? groups_[g].muon.lr : groups_[g].adam.lr;
    set_setup_lrs(std::move(lrs));
    // exp_avg is the momentum buffer on Muon segments (DeepSpeed's state "momentum_buffer") and
    // Adam's first moment elsewhere: one flat buffer instead of two.
    m_ = add_state("exp_avg", 0.0f);
    v_ = add_state("exp_avg_sq", 0.0f);
    warned_betas1_ = false;
    ws_device_ = nullptr;
    sums_device_ = nullptr;
    if (on_device()) {
      // One block for the largest matrix's buffers, one for the f64 sums (a gradient's per
      // parameter, then the Frobenius norm's), allocated here once.
      int64_t floats = 0;
      for (const std::vector<MatrixJob>* list : {&large_, &small_})
        for (const MatrixJob& j : *list) floats = std::max(floats, device_layout(j).total);
      const size_t jobs = large_.size() + small_.size();
      if (jobs > 0) {
        ws_device_ = static_cast<float*>(add_device_scratch(
            static_cast<size_t>(floats) * sizeof(float), "the Newton-Schulz buffers"));
        sums_device_ = static_cast<double*>(
            add_device_scratch((jobs + 1) * sizeof(double), "the squared norms"));
      }
    }
    log(DSPP_LOG_INFO, std::to_string(large_.size() + small_.size()) + " parameters (" +
                           std::to_string(muon_numel) + " elements) with Muon, " +
                           std::to_string(adam_count) + " (" + std::to_string(adam_numel) +
                           " elements) with AdamW");
  }

  void run_step(float* params, const float* grads, int64_t step,
                const std::vector<GroupStep>& gs) override {
    const StepPlan plan = plan_step(step, gs);

    // AdamW on the segments Muon does not take.
    const std::vector<AdamConsts>& k = plan.adam;
    float* m = m_;
    float* v = v_;
    const bool l2 = !decoupled_;
    for_each_chunk([&](const dspp::optim::Chunk& c, int64_t) {
      if (is_muon_[c.segment]) return;
      const int64_t b = c.begin, n = c.end - c.begin;
      if (l2) {
        adam_kernel<true, false>(params + b, grads + b, m + b, v + b, nullptr, n, k[c.slot]);
      } else {
        adam_kernel<false, false>(params + b, grads + b, m + b, v + b, nullptr, n, k[c.slot]);
      }
    });

    // Muon: the large matrices in turn (OpenBLAS threads each GEMM), then the small ones spread
    // over threads.
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const bool par = small_.size() > 1 && small_work_ >= kParallelWork && threads > 1;
    const size_t need = static_cast<size_t>(
        std::max(ws_large_, ws_small_ * static_cast<int64_t>(par ? threads : 1)));
    if (workspace_.size() < need) workspace_.resize(need);  // outside the parallel region
    float* ws = workspace_.data();
    for (const MatrixJob& j : large_)
      muon_parameter(j, muon_consts(j, plan), params + j.offset, grads + j.offset, m + j.offset,
                     ws);
    const int64_t ns = static_cast<int64_t>(small_.size());
    const int64_t per_thread = ws_small_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (par)
    for (int64_t i = 0; i < ns; ++i) {
      int t = 0;
#ifdef _OPENMP
      t = omp_get_thread_num();
#endif
      const MatrixJob& j = small_[i];
      muon_parameter(j, muon_consts(j, plan), params + j.offset, grads + j.offset, m + j.offset,
                     ws + t * per_thread);
    }
  }

  bool runs_on_device() const override {
    return true;
  }
  dspp::optim::DeviceKernelsNeed device_kernels_need() const override {
    return {3, "muon_momentum, decayed_update, transpose, add_diagonal, divide_by_norm"};
  }

  // The step on the GPU: the CPU path's constants and operations, on the legacy default stream.
  // AdamW: one adam_step per run of adjacent non-Muon segments sharing their constants. Muon:
  // first one sum_squares per parameter over its gradient (non-finite exactly when an element
  // is: the squares of finite floats cannot overflow an f64 sum), all copied to the host at once
  // (the step's one device-to-host copy, which waits for the work enqueued so far); then per
  // parameter either the non-finite rule (p = p decay - lr g, momentum kept) or muon_momentum,
  // the Newton-Schulz iteration of each matrix (orthogonalize_device) and the decayed update.
  void run_step_device(float* params, const float* grads, int64_t step,
                       const std::vector<GroupStep>& gs) override {
    const StepPlan plan = plan_step(step, gs);
    dspp::DeviceKernels* kern = device_kernels();
    for (const dspp::optim::DeviceRun& r :
         device_runs_where([&](int32_t s) { return !is_muon_[s]; })) {
      const dspp::DeviceAdamConsts dk = dspp::optim::device_adam_consts(plan.adam[r.slot]);
      const int64_t n = r.end - r.begin;
      const dspp_tensor_view p = device_view(params + r.begin, n);
      const dspp_tensor_view g = device_view(grads + r.begin, n);
      const dspp_tensor_view m = device_view(m_ + r.begin, n);
      const dspp_tensor_view v = device_view(v_ + r.begin, n);
      pass_through(kern->adam_step(&p, &g, &m, &v, &dk, nullptr));
    }

    std::vector<const MatrixJob*> jobs;
    for (const std::vector<MatrixJob>* list : {&large_, &small_})
      for (const MatrixJob& j : *list) jobs.push_back(&j);
    if (jobs.empty()) return;
    const DeviceOps ops{device(), kern, where()};
    for (size_t i = 0; i < jobs.size(); ++i) {
      const dspp_tensor_view g = device_view(grads + jobs[i]->offset, jobs[i]->numel);
      const dspp_tensor_view out = ops.scalar_f64(sums_device_ + i);
      pass_through(kern->sum_squares(&g, &out, 0, nullptr));
    }
    std::vector<double> sums(jobs.size());
    pass_through(device()->copy(sums.data(), sums_device_, sums.size() * sizeof(double), nullptr));
    double* fro = sums_device_ + jobs.size();
    for (size_t i = 0; i < jobs.size(); ++i) {
      const MatrixJob& j = *jobs[i];
      const MuonStep k = muon_consts(j, plan);
      const dspp_tensor_view p = device_view(params + j.offset, j.numel);
      const dspp_tensor_view g = device_view(grads + j.offset, j.numel);
      if (!std::isfinite(sums[i])) {  // momentum kept; the gradient itself is the update
        pass_through(kern->decayed_update(&p, &g, k.decay, k.lr, nullptr));
        continue;
      }
      const dspp_tensor_view m = device_view(m_ + j.offset, j.numel);
      const dspp_tensor_view u = device_view(ws_device_, j.numel);
      pass_through(kern->muon_momentum(&g, &m, &u, k.beta, k.one_minus_beta, nullptr));
      const DeviceLayout l = device_layout(j);
      const int64_t per = j.rows * j.cols;
      for (int64_t b = 0; b < j.batch; ++b)
        orthogonalize_device(ops, ws_device_ + b * per, j.rows, j.cols, k.gram, ws_device_, l, fro);
      pass_through(kern->decayed_update(&p, &u, k.decay, k.lr_scale, nullptr));
    }
  }

 private:
  // What one step needs besides the buffers, computed once for both paths: each group's Muon lr
  // and the AdamW constants of every slot (Chunk::slot).
  struct StepPlan {
    std::vector<double> lr_muon;
    std::vector<AdamConsts> adam;
  };

  StepPlan plan_step(int64_t step, const std::vector<GroupStep>& gs) {
    const int32_t ng = num_groups();
    StepPlan plan;
    plan.lr_muon.assign(ng, 0.0);
    std::vector<double> lr_adam(ng);
    bool got_betas1 = false;
    for (int32_t g = 0; g < ng; ++g) {
      const GroupHyper& h = groups_[g];
      got_betas1 = got_betas1 || !std::isnan(gs[g].beta1);
      if (!h.has_muon) {
        lr_adam[g] = gs[g].lr;
        continue;
      }
      plan.lr_muon[g] = gs[g].lr;
      lr_adam[g] = h.muon.lr > 0.0 ? h.adam.lr * (gs[g].lr / h.muon.lr) : h.adam.lr;
    }
    if (got_betas1 && !warned_betas1_) {
      log(DSPP_LOG_WARNING,
          "the scheduler's beta1/momentum is ignored: DeepSpeed does not cycle momentum for Muon");
      warned_betas1_ = true;
    }
    plan.adam.resize(num_slots());
    for (int32_t s = 0; s < num_slots(); ++s) {
      const int32_t g = slot_group(s);
      const AdamHalf& a = groups_[g].adam;
      const double wd = slot_no_decay(s) ? 0.0 : a.weight_decay;
      plan.adam[s] =
          adam_consts(lr_adam[g], a.betas[0], a.betas[1], a.eps, wd, step, true, decoupled_);
    }
    return plan;
  }

  // The Muon constants of one parameter at this step.
  MuonStep muon_consts(const MatrixJob& j, const StepPlan& plan) const {
    const MuonHalf& h = groups_[j.group].muon;
    const double lr = plan.lr_muon[j.group];
    const double wd = j.no_decay ? 0.0 : h.weight_decay;
    MuonStep s{};
    s.beta = static_cast<float>(h.momentum);
    s.one_minus_beta = static_cast<float>(1.0 - h.momentum);
    s.lr = static_cast<float>(lr);
    s.decay = static_cast<float>(1.0 - lr * wd);
    s.lr_scale = static_cast<float>(lr * j.scale);
    s.gram = h.gram;
    return s;
  }

  GroupHyper base_;
  bool decoupled_ = true;
  std::vector<GroupHyper> groups_;
  std::vector<bool> is_muon_;
  std::vector<MatrixJob> large_, small_;
  int64_t small_work_ = 0;
  int64_t ws_large_ = 0, ws_small_ = 0;
  std::vector<float> workspace_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  bool warned_betas1_ = false;
  // The GPU path's scratch (add_device_scratch): the largest matrix's DeviceLayout, and one f64
  // per Muon parameter plus one.
  float* ws_device_ = nullptr;
  double* sums_device_ = nullptr;
};

using dspp::optim::kNonNegativeAuto;
using dspp::optim::option;

const dspp_option_desc kMuonOptions[] = {
    option("lr", DSPP_VALUE_FLOAT, "null",
           "Learning rate of both halves, unless muon_lr / adam_lr set theirs (absent: 0.02 for "
           "Muon, 3e-4 for AdamW).",
           kNonNegativeAuto),
    option("muon_lr", DSPP_VALUE_FLOAT, "null",
           "Learning rate of the Muon parameters (absent: lr, else 0.02).", kNonNegativeAuto),
    option("adam_lr", DSPP_VALUE_FLOAT, "null",
           "Learning rate of the AdamW parameters (absent: lr, else 3e-4).", kNonNegativeAuto),
    option("momentum", DSPP_VALUE_FLOAT, "0.95", "Muon's momentum (Nesterov), in [0, 1).",
           kNonNegativeAuto),
    dspp_option_desc{"ns_method", DSPP_VALUE_STRING, "\"gram\"",
                     "Newton-Schulz form: \"gram\" (iterates on the Gram matrix of a non-square "
                     "update) or \"standard\".",
                     0, 0.0, 0.0, "standard|gram"},
    option("weight_decay", DSPP_VALUE_FLOAT, "0.0",
           "Decoupled weight decay of both halves (L2 for the AdamW half with adam_w_mode "
           "false).",
           kNonNegativeAuto),
    option("betas", DSPP_VALUE_ARRAY, "[0.9, 0.95]",
           "AdamW half: coefficients of the running averages of the gradient and its square.",
           DSPP_OPTION_ALLOW_AUTO),
    option("eps", DSPP_VALUE_FLOAT, "1e-10", "AdamW half: added to the denominator.",
           kNonNegativeAuto),
    option("adam_w_mode", DSPP_VALUE_BOOL, "true",
           "AdamW half: decoupled weight decay; false: L2 added to the gradient."),
    option("torch_adam", DSPP_VALUE_BOOL, "false",
           "AdamW half through torch.optim.AdamW in DeepSpeed: the same math, no effect here."),
    option("fp32_optimizer_states", DSPP_VALUE_BOOL, "true",
           "Moments in fp32 (false: bf16 moments under CPU offload, not supported: a warning)."),
    option("foreach", DSPP_VALUE_ANY, "null", "torch.optim's implementation choice; no effect."),
    option("per_head_muon", DSPP_VALUE_BOOL, "false",
           "Orthogonalise attention projections per head; true is not supported yet (an error)."),
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Optimizer, Muon>(
        DSPP_KIND_OPTIMIZER, "muon", "1.0.0",
        "Muon (momentum, Newton-Schulz orthogonalisation) for parameters flagged use_muon, "
        "AdamW for the others (DeepSpeed's MuonWithAuxAdam).",
        kMuonOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_optimizer_muon", kPlugins)
