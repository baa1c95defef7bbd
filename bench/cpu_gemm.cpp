// bench_cpu_gemm: dspp::Linear's forward, backward_input and backward_weight against a bare
// cblas_sgemm doing the same GEMM, on GPT-2-small shapes (B*T = 1024 rows, C = 768).
//
//   build-h6/bin/bench_cpu_gemm [rows]      (threads: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS)
//
// GFLOP/s = 2 M N K / median time of 9 timed runs after 2 warm-up runs. The Linear numbers
// include what the layer adds to the GEMM: allocating its output, the bias (forward) and the bias
// gradient (backward_weight).
#include <dspp/nn.h>
#include <dspp/tensor.h>

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

extern "C" char* openblas_get_config(void);
extern "C" int openblas_get_num_threads(void);

namespace {

double median_seconds(const std::function<void()>& f) {
  for (int i = 0; i < 2; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < 9; ++i) {
    auto start = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Shape {
  const char* layer;
  int64_t in;
  int64_t out;
};

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1024;
  std::printf("OpenBLAS %s, %d threads; rows (B*T) = %lld\n", openblas_get_config(),
              openblas_get_num_threads(), static_cast<long long>(n));
  std::printf("%-10s %-16s %-22s %10s %12s %7s\n", "layer", "op", "gemm [M,K]x[K,N]", "sgemm GF/s",
              "Linear GF/s", "ratio");
  const Shape shapes[] = {{"c_attn", 768, 2304}, {"c_fc", 768, 3072}, {"mlp.c_proj", 3072, 768}};
  dspp::Rng rng(1);
  for (const Shape& s : shapes) {
    dspp::Linear lin(s.in, s.out, true, rng);
    dspp::Tensor x = dspp::Tensor::empty({n, s.in});
    dspp::Tensor dy = dspp::Tensor::empty({n, s.out});
    rng.fill_normal(x, 1.0f);
    rng.fill_normal(dy, 1.0f);
    dspp::Tensor y = dspp::Tensor::empty({n, s.out});
    dspp::Tensor dx = dspp::Tensor::empty({n, s.in});
    const float* w = lin.weight().value.data<float>();
    float* dw = lin.weight().grad.data<float>();
    const int N = static_cast<int>(n), I = static_cast<int>(s.in), O = static_cast<int>(s.out);
    const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(s.in * s.out);

    struct Op {
      const char* name;
      int m, k, nn;
      std::function<void()> raw;
      std::function<void()> layer;
    };
    lin.forward(x);  // backward needs a forward
    Op ops[] = {
        {"forward", N, I, O,
         [&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.0f, x.data<float>(), I,
                       w, I, 0.0f, y.data<float>(), O);
         },
         [&] { (void)lin.forward(x); }},
        {"backward_input", N, O, I,
         [&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.0f, dy.data<float>(),
                       O, w, I, 0.0f, dx.data<float>(), I);
         },
         [&] { (void)lin.backward_input(dy); }},
        {"backward_weight", O, N, I,
         [&] {
           cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.0f, dy.data<float>(), O,
                       x.data<float>(), I, 1.0f, dw, I);
         },
         [&] { lin.backward_weight(dy); }},
    };
    for (const Op& op : ops) {
      const double raw = flops / median_seconds(op.raw) / 1e9;
      const double layer = flops / median_seconds(op.layer) / 1e9;
      char gemm[32];
      std::snprintf(gemm, sizeof gemm, "[%d,%d]x[%d,%d]", op.m, op.k, op.k, op.nn);
      std::printf("%-10s %-16s %-22s %10.1f %12.1f %6.0f%%\n", s.layer, op.name, gemm, raw, layer,
                  100.0 * layer / raw);
    }
  }
  return 0;
}
