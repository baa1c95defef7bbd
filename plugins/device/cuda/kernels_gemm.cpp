// device/cuda: GEMM through cuBLASLt.
//
// Row-major to cuBLASLt's column-major: a row-major [r, c] matrix is the column-major [c, r]
// matrix, its transpose. So c = op(a) op(b) (row-major) is c^T = op(b)^T op(a)^T (column-major):
// cuBLASLt's "A" is our b and its "B" is our a, with the same transposition flags, m and n
// swapped, and the leading dimensions the row lengths of the stored matrices.
//
// Epilogues: the bias one is fused for every dtype (an exact add before the store). cuBLASLt's
// GELU epilogue is the tanh approximation, but its tanh is not documented to match tanhf, so it
// is fused only when c is bf16/f16, where the output rounding (2^-9) dominates; f32 outputs get
// our own GELU kernel (the CPU layer's formula) after the GEMM; so does a GELU whose aux matrix
// (pre_gelu) has a leading dimension that is not a multiple of 8, which cuBLASLt requires. A
// combination the heuristic finds no algorithm for falls back the same way (GELU+bias -> bias ->
// none, the rest by our kernel), so every combination works.
//
// The workspace (32 MiB, what NVIDIA suggests for Hopper) comes from the device's caching
// allocator on the call's stream, so a training loop allocates it once per stream.
#include "kernels_gemm.h"

#include <dlfcn.h>

#include <algorithm>
#include <string>

#include "../../common/cuda_check.h"

#define DSPP_STR2_(x) #x
#define DSPP_STR2(x) DSPP_STR2_(x)

namespace dspp::cuda {
namespace {

constexpr const char* kWho = "device/cuda";
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// The few cuBLASLt entry points we use, resolved from libcublasLt with dlsym.
struct LtApi {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtGetVersion) get_version = nullptr;
  decltype(&cublasLtGetStatusName) status_name = nullptr;
  decltype(&cublasLtGetStatusString) status_string = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  std::string loaded_from;
  std::string error;  // why it could not be loaded ("" when it was)
};

template <class F>
bool resolve(void* lib, const char* name, F& out, std::string& error) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  if (!out) error = std::string("symbol ") + name + " not found";
  return out != nullptr;
}

LtApi load_lt() {
  LtApi api;
  // The soname of the major we compiled against first (the ABI we know), then the copy next to
  // the toolkit we were built with (not always on the loader's path), then any.
  const std::string major = DSPP_STR2(CUBLAS_VER_MAJOR);
  std::string candidates[] = {
      "libcublasLt.so." + major,
#ifdef DSPP_CUBLASLT_DIR
      std::string(DSPP_CUBLASLT_DIR) + "/libcublasLt.so." + major,
#endif
      "libcublasLt.so",
  };
  void* lib = nullptr;
  std::string tried;
  for (const std::string& name : candidates) {
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      api.loaded_from = name;
      break;
    }
    const char* why = dlerror();
    tried += (tried.empty() ? "" : "; ") + name + ": " + (why ? why : "not found");
  }
  if (!lib) {
    api.error = "cannot open cuBLASLt (" + tried + ")";
    return api;
  }
  std::string err;
  const bool ok = resolve(lib, "cublasLtCreate", api.create, err) &&
                  resolve(lib, "cublasLtDestroy", api.destroy, err) &&
                  resolve(lib, "cublasLtGetVersion", api.get_version, err) &&
                  resolve(lib, "cublasLtGetStatusName", api.status_name, err) &&
                  resolve(lib, "cublasLtGetStatusString", api.status_string, err) &&
                  resolve(lib, "cublasLtMatmulDescCreate", api.desc_create, err) &&
                  resolve(lib, "cublasLtMatmulDescDestroy", api.desc_destroy, err) &&
                  resolve(lib, "cublasLtMatmulDescSetAttribute", api.desc_set, err) &&
                  resolve(lib, "cublasLtMatrixLayoutCreate", api.layout_create, err) &&
                  resolve(lib, "cublasLtMatrixLayoutDestroy", api.layout_destroy, err) &&
                  resolve(lib, "cublasLtMatmulPreferenceCreate", api.pref_create, err) &&
                  resolve(lib, "cublasLtMatmulPreferenceDestroy", api.pref_destroy, err) &&
                  resolve(lib, "cublasLtMatmulPreferenceSetAttribute", api.pref_set, err) &&
                  resolve(lib, "cublasLtMatmulAlgoGetHeuristic", api.heuristic, err) &&
                  resolve(lib, "cublasLtMatmul", api.matmul, err);
  if (!ok) {
    api.error = api.loaded_from + ": " + err;
    dlclose(lib);
  }
  // Otherwise the library stays loaded for the life of the process.
  return api;
}

// Loaded once per process.
const LtApi& lt() {
  static const LtApi api = load_lt();
  if (!api.error.empty()) {
    throw dspp::plugin::StatusError(DSPP_ERR_NOT_SUPPORTED,
                                    std::string(kWho) + " gemm: " + api.error +
                                        "; cuBLASLt " DSPP_STR2(CUBLAS_VER_MAJOR) " is needed");
  }
  return api;
}

[[noreturn]] void lt_failure(cublasStatus_t st, const char* call, int line) {
  const LtApi& api = lt();
  throw dspp::plugin::StatusError(
      st == CUBLAS_STATUS_ALLOC_FAILED ? DSPP_ERR_OUT_OF_MEMORY : DSPP_ERR_RUNTIME,
      std::string(kWho) + ": " + call + " failed at " + DSPP_CUDA_FILE + ":" +
          std::to_string(line) + ": " + api.status_name(st) + " (" + api.status_string(st) + ")");
}

// Every cuBLASLt call checked, with the call, file and line in the message.
#define LT_CHECK(call)                                                                \
  do {                                                                                \
    const cublasStatus_t lt_status_ = (call);                                         \
    if (lt_status_ != CUBLAS_STATUS_SUCCESS) lt_failure(lt_status_, #call, __LINE__); \
  } while (0)

cudaDataType_t cuda_type(int32_t dtype) {
  switch (dtype) {
    case DSPP_F32:
      return CUDA_R_32F;
    case DSPP_BF16:
      return CUDA_R_16BF;
    case DSPP_F16:
      return CUDA_R_16F;
    default:
      throw dspp::plugin::StatusError(DSPP_ERR_INTERNAL,
                                      std::string(kWho) + " gemm: dtype " + std::to_string(dtype));
  }
}

// The largest power of two (at most 256) the address is a multiple of: the heuristic otherwise
// assumes 256-byte aligned operands and may pick kernels that fault on offset views.
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// RAII holders for the descriptors.
struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~Desc() {
    if (d) lt().desc_destroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() {
    if (l) lt().layout_destroy(l);
  }
};
struct Pref {
  cublasLtMatmulPreference_t p = nullptr;
  ~Pref() {
    if (p) lt().pref_destroy(p);
  }
};

bool has_bias(int32_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
         e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool has_gelu(int32_t e) {
  return e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_AUX ||
         e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool has_aux(int32_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

}  // namespace

LtGemm::~LtGemm() {
  // Errors ignored: at process exit the driver may already be shutting down.
  if (handle_) lt().destroy(handle_);
}

cublasLtHandle_t LtGemm::handle() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!handle_) {
    const LtApi& api = lt();
    LT_CHECK(api.create(&handle_));
    dspp::plugin::log(host_, DSPP_LOG_DEBUG, kWho,
                      "cuBLASLt " + std::to_string(api.get_version()) + " from " + api.loaded_from);
  }
  return handle_;
}

void LtGemm::run(const GemmArgs& g, Scratch& scratch) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    // Nothing to multiply (cuBLASLt refuses k = 0): c = beta c, then the epilogue. As in BLAS,
    // beta 0 does not read c (it may hold NaN).
    if (g.beta == 0.0f) {
      launch_fill(g.c_dtype, g.c, 0.0, g.m * g.n, scratch.stream());
    } else {
      launch_scale(g.c_dtype, g.c, g.beta, g.c, g.m * g.n, scratch.stream());
    }
    if (g.bias_epilogue || g.gelu_epilogue) {
      launch_bias_gelu(g.c_dtype, g.c, g.bias_epilogue ? g.bias : nullptr,
                       g.gelu_epilogue ? g.pre_gelu : nullptr, g.gelu_epilogue, g.m, g.n,
                       scratch.stream());
    }
    return;
  }
  // cuBLASLt wants the aux matrix's leading dimension a multiple of 8; otherwise GELU is ours.
  const bool fuse_gelu =
      g.gelu_epilogue && g.c_dtype != DSPP_F32 && (g.pre_gelu == nullptr || g.n % 8 == 0);
  int32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  if (g.bias_epilogue && fuse_gelu) {
    epilogue = g.pre_gelu ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
  } else if (g.bias_epilogue) {
    epilogue = CUBLASLT_EPILOGUE_BIAS;
  } else if (fuse_gelu) {
    epilogue = g.pre_gelu ? CUBLASLT_EPILOGUE_GELU_AUX : CUBLASLT_EPILOGUE_GELU;
  }
  // Fall back from GELU+bias to bias alone to none.
  bool done = try_matmul(g, epilogue, scratch);
  if (!done && has_gelu(epilogue) && g.bias_epilogue) {
    epilogue = CUBLASLT_EPILOGUE_BIAS;
    done = try_matmul(g, epilogue, scratch);
  }
  if (!done && epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    done = try_matmul(g, epilogue, scratch);
  }
  if (!done) {
    throw dspp::plugin::StatusError(
        DSPP_ERR_NOT_SUPPORTED,
        std::string(kWho) + " gemm: cuBLASLt has no algorithm for m=" + std::to_string(g.m) +
            " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k) + " (a dtype " +
            std::to_string(g.ab_dtype) + ", c dtype " + std::to_string(g.c_dtype) + ")");
  }
  // What the epilogue did not do.
  const bool rest_bias = g.bias_epilogue && !has_bias(epilogue);
  const bool rest_gelu = g.gelu_epilogue && !has_gelu(epilogue);
  if (rest_bias || rest_gelu) {
    launch_bias_gelu(g.c_dtype, g.c, rest_bias ? g.bias : nullptr, rest_gelu ? g.pre_gelu : nullptr,
                     rest_gelu, g.m, g.n, scratch.stream());
  }
}

bool LtGemm::try_matmul(const GemmArgs& g, int32_t lt_epilogue, Scratch& scratch) {
  const LtApi& api = lt();
  const cublasLtHandle_t h = handle();
  const cudaDataType_t ab_type = cuda_type(g.ab_dtype);
  const cudaDataType_t c_type = cuda_type(g.c_dtype);
  // f32 stays f32 unless TF32 is allowed: the CPU layer's numbers.
  const cublasComputeType_t compute =
      g.ab_dtype == DSPP_F32 && g.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;

  Desc desc;
  LT_CHECK(api.desc_create(&desc.d, compute, CUDA_R_32F));
  // cuBLASLt's A is our b, its B our a (see the top of the file).
  const cublasOperation_t op_lt_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_lt_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_CHECK(api.desc_set(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a, sizeof op_lt_a));
  LT_CHECK(api.desc_set(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b, sizeof op_lt_b));
  const cublasLtEpilogue_t epi = static_cast<cublasLtEpilogue_t>(lt_epilogue);
  LT_CHECK(api.desc_set(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  uint32_t extra_align = 256;
  if (has_bias(lt_epilogue)) {
    LT_CHECK(api.desc_set(desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias));
    extra_align = std::min(extra_align, alignment_of(g.bias));
  }
  if (has_aux(lt_epilogue)) {
    // The aux matrix is c-shaped: column-major [n, m] with leading dimension n.
    const int64_t aux_ld = g.n;
    LT_CHECK(api.desc_set(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.pre_gelu,
                          sizeof g.pre_gelu));
    LT_CHECK(api.desc_set(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
    extra_align = std::min(extra_align, alignment_of(g.pre_gelu));
  }

  // Column-major layouts: stored row-major [r, c] is column-major [c, r] with ld c.
  Layout lt_a, lt_b, lt_c;
  const uint64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;  // stored a
  const uint64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;  // stored b
  LT_CHECK(api.layout_create(&lt_a.l, ab_type, b_cols, b_rows, g.ldb));
  LT_CHECK(api.layout_create(&lt_b.l, ab_type, a_cols, a_rows, g.lda));
  LT_CHECK(api.layout_create(&lt_c.l, c_type, g.n, g.m, g.ldc));

  const uint32_t align_a = alignment_of(g.b), align_b = alignment_of(g.a),
                 align_c = alignment_of(g.c);
  const Key key = {g.m,        g.n,       g.k,       g.lda,       g.ldb,         g.ldc,
                   g.ab_dtype, g.c_dtype, g.trans_a, g.trans_b,   lt_epilogue,   g.allow_tf32,
                   align_a,    align_b,   align_c,   extra_align, g.beta != 0.0f};
  Choice choice;
  bool known = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = choices_.find(key);
    if (it != choices_.end()) {
      choice = it->second;
      known = true;
    }
  }
  if (!known) {
    Pref pref;
    LT_CHECK(api.pref_create(&pref.p));
    const uint64_t ws = kWorkspaceBytes;
    LT_CHECK(api.pref_set(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    LT_CHECK(
        api.pref_set(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof align_a));
    LT_CHECK(
        api.pref_set(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof align_b));
    LT_CHECK(
        api.pref_set(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c));
    LT_CHECK(
        api.pref_set(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof align_c));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    // "No algorithm" comes back as CUBLAS_STATUS_NOT_SUPPORTED or as zero results.
    const cublasStatus_t st =
        api.heuristic(h, desc.d, lt_a.l, lt_b.l, lt_c.l, lt_c.l, pref.p, 1, &result, &found);
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) {
      lt_failure(st, "cublasLtMatmulAlgoGetHeuristic", __LINE__);
    }
    choice.found =
        st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (choice.found) choice.algo = result.algo;
    std::lock_guard<std::mutex> lock(mutex_);
    choices_[key] = choice;
  }
  if (!choice.found) return false;

  void* workspace = scratch.get(kWorkspaceBytes);
  LT_CHECK(api.matmul(h, desc.d, &g.alpha, g.b, lt_a.l, g.a, lt_b.l, &g.beta, g.c, lt_c.l, g.c,
                      lt_c.l, &choice.algo, workspace, kWorkspaceBytes, scratch.stream()));
  return true;
}

}  // namespace dspp::cuda
