// The device/cuda layer kernels at GPT-2 124M shapes (B 8, T 1024, C 768, 12 heads, vocab 50304),
// bf16 inputs: time per call from CUDA events over repeated calls, and the rate it implies (GEMM
// and attention in TFLOP/s of useful work, the memory-bound kernels in GB/s of the bytes they must
// move). Prints a table; asserts nothing. Without a GPU it says so and exits 0.
//   build with -DDSPP_BENCH=ON, then: bin/bench_gpu_kernels
#include <dspp/error.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

void check(dspp_status s, const char* what) {
  if (s != DSPP_OK) {
    throw dspp::Error(dspp::Errc::kRuntime,
                      std::string(what) + " failed (status " + std::to_string(s) + ")");
  }
}

struct Gpu {
  dspp::PluginRegistry registry;
  std::shared_ptr<dspp::Device> dev;
  dspp::DeviceKernels* k = nullptr;
  void* stream = nullptr;
};

// Device memory as a view, filled with small values (0x3C00 per 16 bits: 1.0 in f16, ~0.008 in
// bf16) so no kernel sees NaN or infinity.
struct Buf {
  Gpu* g;
  dspp_tensor_view v{};
  Buf(Gpu& gpu, int32_t dtype, std::vector<int64_t> shape) : g(&gpu) {
    v.dtype = dtype;
    v.ndim = static_cast<int32_t>(shape.size());
    int64_t n = 1;
    for (size_t i = 0; i < shape.size(); ++i) n *= (v.shape[i] = shape[i]);
    v.device = dspp_device{DSPP_DEVICE_CUDA, 0};
    v.stream = gpu.stream;
    const size_t bytes = static_cast<size_t>(n) * (dtype == DSPP_F32 || dtype == DSPP_I32 ? 4 : 2);
    check(gpu.dev->alloc(bytes, gpu.stream, &v.data), "alloc");
    check(gpu.dev->memset(v.data, dtype == DSPP_I32 ? 0 : 0x3C, bytes, gpu.stream), "memset");
  }
  ~Buf() { (void)g->dev->free(v.data, g->stream); }
  const dspp_tensor_view* p() const { return &v; }
};

// Milliseconds per call: a few warm-up calls, then `reps` timed between two events.
double time_ms(Gpu& g, const std::function<void()>& call, int reps = 20) {
  for (int i = 0; i < 3; ++i) call();
  void *a = nullptr, *b = nullptr;
  check(g.dev->create_event(1, &a), "create_event");
  check(g.dev->create_event(1, &b), "create_event");
  check(g.dev->record_event(a, g.stream), "record_event");
  for (int i = 0; i < reps; ++i) call();
  check(g.dev->record_event(b, g.stream), "record_event");
  check(g.dev->synchronize_event(b), "synchronize_event");
  float ms = 0;
  check(g.dev->elapsed_ms(a, b, &ms), "elapsed_ms");
  (void)g.dev->destroy_event(a);
  (void)g.dev->destroy_event(b);
  return ms / reps;
}

// `tera`: the work of one call in units of 1e12 (flops or bytes).
void row(const char* what, double ms, double tera, const char* unit) {
  std::printf("| %-46s | %8.3f | %7.2f %s |\n", what, ms, tera / (ms * 1e-3), unit);
}

}  // namespace

int main() {
  Gpu g;
  try {
    g.registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
    g.dev = g.registry.create<dspp::Device>("device", "cuda", nullptr);
    if (g.dev->count() < 1) {
      std::printf("bench_gpu_kernels: no GPU here\n");
      return 0;
    }
    check(g.dev->set_current(0), "set_current");
    g.k = g.dev->kernels();
    if (!g.k) throw dspp::Error(dspp::Errc::kRuntime, "the cuda device has no kernels");
    check(g.dev->create_stream(&g.stream), "create_stream");
  } catch (const std::exception& e) {
    std::printf("bench_gpu_kernels: no GPU here (%s)\n", e.what());
    return 0;
  }
  const int64_t B = 8, T = 1024, C = 768, NH = 12, V = 50304, BT = B * T;
  std::printf("| kernel (GPT-2 124M shapes, bf16 in, fp32 accumulate) | ms/call | rate |\n");
  std::printf("|---|---|---|\n");

  // GEMMs of one block and the lm_head: y = x W^T (+ bias); 2 M N K flops.
  struct Mm {
    const char* name;
    int64_t m, n, k;
  };
  for (const Mm& s : {Mm{"gemm qkv   x[8192,768] W[2304,768]^T", BT, 3 * C, C},
                      Mm{"gemm fc    x[8192,768] W[3072,768]^T", BT, 4 * C, C},
                      Mm{"gemm proj  x[8192,3072] W[768,3072]^T", BT, C, 4 * C},
                      Mm{"gemm lm_head x[8192,768] W[50304,768]^T", BT, V, C}}) {
    Buf x(g, DSPP_BF16, {s.m, s.k}), w(g, DSPP_BF16, {s.n, s.k}), y(g, DSPP_BF16, {s.m, s.n});
    const double ms = time_ms(g, [&] {
      check(g.k->gemm(x.p(), 0, w.p(), 1, y.p(), 1.f, 0.f, DSPP_GEMM_EPILOGUE_NONE, nullptr,
                      nullptr, 0, g.stream),
            "gemm");
    });
    row(s.name, ms, 2.0 * s.m * s.n * s.k / 1e12, "TFLOP/s");
  }

  // Causal attention: forward 2 matmuls over half the T x T scores (4 B NH T^2 hs / 2 flops),
  // backward 5 such matmuls (2.5 x forward).
  {
    Buf qkv(g, DSPP_BF16, {B, T, 3 * C}), y(g, DSPP_BF16, {B, T, C}), lse(g, DSPP_F32, {B, NH, T});
    Buf dy(g, DSPP_BF16, {B, T, C}), dqkv(g, DSPP_BF16, {B, T, 3 * C});
    const double fwd_flops = 2.0 * B * NH * static_cast<double>(T) * T * (C / NH);
    double ms = time_ms(g, [&] {
      check(g.k->attention_forward(qkv.p(), static_cast<int32_t>(NH), y.p(), lse.p(), g.stream),
            "attention_forward");
    });
    row("attention forward  B8 T1024 12x64 causal", ms, fwd_flops / 1e12, "TFLOP/s");
    ms = time_ms(g, [&] {
      check(g.k->attention_backward(qkv.p(), y.p(), lse.p(), dy.p(), static_cast<int32_t>(NH),
                                    dqkv.p(), g.stream),
            "attention_backward");
    });
    row("attention backward B8 T1024 12x64 causal", ms, 2.5 * fwd_flops / 1e12, "TFLOP/s");
  }

  // Memory-bound kernels: GB/s of the bytes each must read and write.
  {
    Buf x(g, DSPP_BF16, {BT, C}), y(g, DSPP_BF16, {BT, C}), w(g, DSPP_BF16, {C}),
        b(g, DSPP_BF16, {C}), mean(g, DSPP_F32, {BT}), rstd(g, DSPP_F32, {BT});
    const double ms = time_ms(g, [&] {
      check(g.k->layernorm_forward(x.p(), w.p(), b.p(), 1e-5f, y.p(), mean.p(), rstd.p(), g.stream),
            "layernorm_forward");
    });
    row("layernorm forward [8192,768]", ms, (2.0 * BT * C * 2 + 8.0 * BT) / 1e12, "TB/s");
    const double ms2 =
        time_ms(g, [&] { check(g.k->gelu_forward(x.p(), y.p(), g.stream), "gelu_forward"); });
    row("gelu forward [8192,768]", ms2, 2.0 * BT * C * 2 / 1e12, "TB/s");
  }
  {
    Buf logits(g, DSPP_BF16, {BT, V}), targets(g, DSPP_I32, {BT}), losses(g, DSPP_F32, {BT}),
        mean(g, DSPP_F32, {1});
    const double ms = time_ms(g, [&] {
      check(g.k->cross_entropy(logits.p(), targets.p(), -100, 1.f, losses.p(), mean.p(), logits.p(),
                               g.stream),
            "cross_entropy");
    });
    row("cross-entropy + dlogits in place [8192,50304]", ms, 2.0 * BT * V * 2 / 1e12, "TB/s");
  }
  (void)g.dev->synchronize(g.stream);
  (void)g.dev->destroy_stream(g.stream);
  return 0;
}
