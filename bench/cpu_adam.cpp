// bench_cpu_adam: dspp's AdamW optimizer plugin (plugins/optimizer/adam) against this machine's
// memory bandwidth, measured in the same run.
//
//   build/bin/bench_cpu_adam [reps]        (threads: OMP_NUM_THREADS; default all cores)
//
// At N = 16M and 64M fp32 elements (arrays of 64 and 256 MB, far beyond the caches), OpenMP over
// all threads:
//   copy    c = a            8 bytes/element counted (read 4 + write 4)
//   triad   a = b + s c     12 bytes/element counted (read 8 + write 4)
//   update  a = a + s b     12 bytes/element counted (read 8 + write 4)
// counted as STREAM counts them. A store to a line the kernel did not read costs a hidden read
// first (write-allocate): copy and triad move 12 and 16 bytes per element on the bus. update, like
// Adam, only writes lines it has read, so its count is what moves.
//
// Adam, 28 bytes per parameter counted (params read+write 8, grads read 4, exp_avg read+write 8,
// exp_avg_sq read+write 8):
//   adamw plugin         the `adamw` plugin loaded through dspp::PluginRegistry, one segment of N
//   adam_kernel inline   its element kernel (common/adam_kernel.h) compiled into this binary, one
//                        static OpenMP split of the buffer (no chunks)
//   1 division, sse2     a variant, not used by dspp, measured as a proposal: x 1/sqrt(bc2)
//                        instead of / sqrt(bc2), leaving one sqrt and one division per element
//   1 division, avx2     the same variant compiled for AVX2 (8 lanes; the plugin has SSE2's 4)
//   same streams, add    the same four streams with only adds and multiplies: what this access
//                        pattern reaches when memory is the only limit (the %streams column)
// and the Adam rows again at N = 256K, whose 4 MB of arrays stay in L3: the compute ceiling.
//
// The machine may be shared. Every repetition runs each kernel once, round robin, so all kernels
// meet the same quiet and busy moments; a run counts as clean when no OpenMP thread had an
// involuntary context switch during it. Reported: the best clean run of `reps` (default 20),
// or the best of all runs when none was clean (clean 0). Prints tables; asserts nothing.
#include <dspp/config.h>
#include <dspp/error.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/plugins.h>

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../plugins/optimizer/common/adam_kernel.h"

namespace {

constexpr int64_t kMi = int64_t{1} << 20;
constexpr double kGB = 1e9;  // GB/s = 1e9 bytes per second, as STREAM reports

// A 64-byte aligned fp32 array, first touched in parallel with the kernels' static schedule, so
// each thread's pages are its own (matters on NUMA machines, harmless elsewhere).
struct Array {
  float* data = nullptr;
  explicit Array(int64_t n, float value) {
    const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
    data = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!data) {
      std::fprintf(stderr, "bench_cpu_adam: out of memory for %zu bytes\n", bytes);
      std::exit(1);
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) data[i] = value;
  }
  ~Array() {
    std::free(data);
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
};

// Involuntary context switches of the OpenMP threads so far, summed.
int64_t preemptions() {
  int64_t total = 0;
#pragma omp parallel reduction(+ : total)
  {
    rusage u{};
    getrusage(RUSAGE_THREAD, &u);
    total += u.ru_nivcsw;
  }
  return total;
}

struct Kernel {
  std::string name;
  double bytes;  // counted per run
  std::function<void()> run;
  double best_clean = 1e30;
  double best_any = 1e30;
  int clean = 0;
  double seconds() const { return clean > 0 ? best_clean : best_any; }
  double gbs() const { return bytes / seconds() / kGB; }
};

// One warm-up run of each kernel, then `reps` rounds running each kernel once.
void run_round_robin(std::vector<Kernel>& kernels, int reps) {
  for (Kernel& k : kernels) k.run();
  for (int r = 0; r < reps; ++r) {
    for (Kernel& k : kernels) {
      const int64_t before = preemptions();
      const auto start = std::chrono::steady_clock::now();
      k.run();
      const double t =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const bool preempted = preemptions() != before;
      k.best_any = std::min(k.best_any, t);
      if (!preempted) {
        ++k.clean;
        k.best_clean = std::min(k.best_clean, t);
      }
    }
  }
}

std::string first_line_of(const char* path, const char* prefix) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (prefix == nullptr) return line;
    if (line.rfind(prefix, 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "?";
}

dspp_tensor_view flat_view(float* data, int64_t n) {
  dspp_tensor_view t{};
  t.data = data;
  t.dtype = DSPP_F32;
  t.ndim = 1;
  t.shape[0] = n;
  t.device = dspp_device{DSPP_DEVICE_CPU, 0};
  return t;
}

// A variant of adam_kernel<false, false>, not used by dspp: it multiplies by 1/sqrt(bc2) instead
// of dividing by sqrt(bc2) (as DeepSpeed's CPU Adam does), so one division and one square root
// per element remain; results differ from adam_kernel's by rounding only.
[[gnu::always_inline]] inline void adam_one_division_body(
    float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
    int64_t n, const dspp::optim::AdamConsts& k, float inv_sqrt_bc2) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float pi = p[i];
    const float mi = k.beta1 * m[i] + k.one_minus_beta1 * gi;
    const float vi = k.beta2 * v[i] + k.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) * inv_sqrt_bc2 + k.eps;
    p[i] = pi * k.decay - k.step_size * (mi / denom);
  }
}
void adam_one_division(float* p, const float* g, float* m, float* v, int64_t n,
                       const dspp::optim::AdamConsts& k, float inv_sqrt_bc2) {
  adam_one_division_body(p, g, m, v, n, k, inv_sqrt_bc2);
}
// The same compiled for AVX2; called only where the CPU has it.
[[gnu::target("avx2")]] void adam_one_division_avx2(float* p, const float* g, float* m, float* v,
                                                    int64_t n, const dspp::optim::AdamConsts& k,
                                                    float inv_sqrt_bc2) {
  adam_one_division_body(p, g, m, v, n, k, inv_sqrt_bc2);
}

// Runs kernel(begin, end) over [0, n) split evenly over the OpenMP threads.
template <class Body>
void split_static(int64_t n, const Body& body) {
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    body(n * id / nt, n * (id + 1) / nt);
  }
}

// Everything measured at one N; the arrays live as long as the kernels that use them.
struct Bench {
  int64_t n;
  Array a, b, c;              // the bandwidth baselines
  Array params, grads, m, v;  // the plugin's params and grads; m, v for the inlined kernels
  dspp::Config config;        // the plugin reads its options through a view into it
  std::shared_ptr<dspp::Optimizer> opt;
  dspp::ParamSegment seg{};
  dspp::ParamGroupSetup group{};
  dspp::StepArgs args{};
  int64_t plugin_step = 0;
  int64_t inline_step = 0;

  static dspp::Config adamw_config() {
    dspp::LoadOptions opts;
    opts.on_warning = [](const dspp::ConfigMessage&) {};
    return dspp::Config::from_string(
        R"({"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params":
            {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}}})",
        opts);
  }

  Bench(const dspp::PluginRegistry& registry, int64_t count)
      : n(count),
        a(count, 1.0f),
        b(count, 2.0f),
        c(count, 0.5f),
        params(count, 0.25f),
        grads(count, 1e-3f),
        m(count, 0.0f),
        v(count, 0.0f),
        config(adamw_config()) {
    opt = registry.create<dspp::Optimizer>("optimizer", "adamw", config.view("optimizer.params"));
    seg.name = "flat";
    seg.ndim = 1;
    seg.shape[0] = n;
    seg.numel = n;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    group = dspp::ParamGroupSetup{nan, nan, nullptr};  // the configured lr and weight_decay
    const dspp::OptimizerSetup setup{&seg, 1, &group, 1, n, dspp_device{DSPP_DEVICE_CPU, 0}};
    dspp::check_plugin(opt->init(&setup), "adamw init");
    args.params = flat_view(params.data, n);
    args.grads = flat_view(grads.data, n);
  }

  std::vector<Kernel> baselines() {
    const int64_t count = n;
    float* pa = a.data;
    float* pb = b.data;
    float* pc = c.data;
    const double nd = static_cast<double>(n);
    // `parallel for simd`: vectorised at -O2 too, where GCC's cheap cost model would not version
    // the loops for possible aliasing. a grows by 1.0 per update run: far from overflow.
    return {{"copy    c = a", 8 * nd,
             [=] {
#pragma omp parallel for simd schedule(static)
               for (int64_t i = 0; i < count; ++i) pc[i] = pa[i];
             }},
            {"triad   a = b + s c", 12 * nd,
             [=] {
#pragma omp parallel for simd schedule(static)
               for (int64_t i = 0; i < count; ++i) pa[i] = pb[i] + 0.5f * pc[i];
             }},
            {"update  a = a + s b", 12 * nd, [=] {
#pragma omp parallel for simd schedule(static)
               for (int64_t i = 0; i < count; ++i) pa[i] = pa[i] + 0.5f * pb[i];
             }}};
  }

  std::vector<Kernel> adam() {
    const int64_t count = n;
    const double bytes = 28 * static_cast<double>(n);
    float* p = params.data;
    const float* g = grads.data;
    float* pm = m.data;
    float* pv = v.data;
    std::vector<Kernel> ks;
    ks.push_back({"adamw plugin", bytes, [this] {
                    args.step = ++plugin_step;
                    dspp::check_plugin(opt->step(&args), "adamw step");
                  }});
    ks.push_back({"adam_kernel inline", bytes, [=, this] {
                    const dspp::optim::AdamConsts k = dspp::optim::adam_consts(
                        1e-3, 0.9, 0.999, 1e-8, 0.01, ++inline_step, true, true);
                    split_static(count, [&](int64_t lo, int64_t hi) {
                      dspp::optim::adam_kernel<false, false>(p + lo, g + lo, pm + lo, pv + lo,
                                                             nullptr, hi - lo, k);
                    });
                  }});
    ks.push_back({"1 division, sse2", bytes, [=, this] {
                    const dspp::optim::AdamConsts k = dspp::optim::adam_consts(
                        1e-3, 0.9, 0.999, 1e-8, 0.01, ++inline_step, true, true);
                    const float inv = k.inv_sqrt_bc2;
                    split_static(count, [&](int64_t lo, int64_t hi) {
                      adam_one_division(p + lo, g + lo, pm + lo, pv + lo, hi - lo, k, inv);
                    });
                  }});
    if (__builtin_cpu_supports("avx2")) {
      ks.push_back({"1 division, avx2", bytes, [=, this] {
                      const dspp::optim::AdamConsts k = dspp::optim::adam_consts(
                          1e-3, 0.9, 0.999, 1e-8, 0.01, ++inline_step, true, true);
                      const float inv = k.inv_sqrt_bc2;
                      split_static(count, [&](int64_t lo, int64_t hi) {
                        adam_one_division_avx2(p + lo, g + lo, pm + lo, pv + lo, hi - lo, k, inv);
                      });
                    }});
    }
    ks.push_back({"same streams, add", bytes, [=] {
#pragma omp parallel for simd schedule(static)
                    for (int64_t i = 0; i < count; ++i) {
                      const float gi = g[i];
                      const float mi = 0.9f * pm[i] + 0.1f * gi;
                      const float vi = 0.999f * pv[i] + 0.001f * gi * gi;
                      pm[i] = mi;
                      pv[i] = vi;
                      p[i] = 0.99999f * p[i] - 1e-3f * mi * vi;
                    }
                  }});
    return ks;
  }
};

void print_header(bool with_ratios) {
  std::printf("  %-20s %-5s %9s %8s %9s", "kernel", "N", "ms", "GB/s", "clean");
  if (with_ratios) std::printf(" %8s %8s %8s %9s", "%copy", "%triad", "%update", "%streams");
  std::printf("\n");
}

// `base`: copy, triad, update at the same N, or nullptr; `streams`: "same streams, add" there.
void print_row(const Kernel& k, const std::string& size, int reps, const Kernel* base,
               const Kernel* streams) {
  const std::string clean = std::to_string(k.clean) + "/" + std::to_string(reps);
  std::printf("  %-20s %-5s %9.3f %8.1f %9s", k.name.c_str(), size.c_str(), k.seconds() * 1e3,
              k.gbs(), clean.c_str());
  if (base) {
    std::printf(" %7.0f%% %7.0f%% %7.0f%% %8.0f%%", 100 * k.gbs() / base[0].gbs(),
                100 * k.gbs() / base[1].gbs(), 100 * k.gbs() / base[2].gbs(),
                100 * k.gbs() / streams->gbs());
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  if (reps < 1) {
    std::fprintf(stderr, "usage: bench_cpu_adam [reps >= 1]\n");
    return 2;
  }
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
  std::printf("bench_cpu_adam: %s, %d OpenMP threads, %s\n",
              first_line_of("/proc/cpuinfo", "model name").c_str(), omp_get_max_threads(), date);
  std::printf("load average at start: %s\n", first_line_of("/proc/loadavg", nullptr).c_str());
  std::printf(
      "Best clean run of %d (no thread preempted; clean 0: best of all), kernels round robin.\n"
      "Counted bytes per element: copy 8, triad 12, update 12, Adam 28; GB/s = 1e9 bytes/s.\n\n",
      reps);

  dspp::PluginRegistry registry;
  registry.load_library(DSPP_OPTIMIZER_ADAM_PATH);

  print_header(true);
  for (int64_t n : {16 * kMi, 64 * kMi}) {
    const std::string size = std::to_string(n / kMi) + "M";
    Bench bench(registry, n);
    std::vector<Kernel> ks = bench.baselines();
    const size_t num_base = ks.size();
    for (Kernel& k : bench.adam()) ks.push_back(std::move(k));
    run_round_robin(ks, reps);
    const Kernel* streams = &ks.back();
    for (size_t i = 0; i < ks.size(); ++i)
      print_row(ks[i], size, reps, i < num_base ? nullptr : ks.data(), streams);
  }

  // The compute ceiling: 4 MB of arrays in L3, so the arithmetic (the plugin's kernel: one sqrt
  // and two divisions per element) is the limit, not the memory.
  const int64_t small = 256 * 1024;
  const int small_reps = reps * 20;
  std::printf("\nIn cache, N = 256K (4 MB per kernel: params, grads, exp_avg, exp_avg_sq; L3):\n");
  print_header(false);
  {
    Bench bench(registry, small);
    std::vector<Kernel> ks = bench.adam();
    run_round_robin(ks, small_reps);
    for (const Kernel& k : ks) print_row(k, "256K", small_reps, nullptr, nullptr);
  }
  std::printf("\nload average at end: %s\n", first_line_of("/proc/loadavg", nullptr).c_str());
  return 0;
}
