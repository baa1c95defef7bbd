// device/cuda: softmax cross-entropy fused with its backward, the CPU layer's numerics
// (core/nn/loss.cpp): the row maximum in f32, exp in f32 summed in f64, lse = max + log(sum) in
// f64, row loss = lse - logit[target] in f64; dlogits = f exp(logit - (float)lse), minus f at the
// target, with f = scale / n for the n rows whose target is not ignore_index.
//
// Three kernels: the count n (one block), then one block per row (max, sum, loss, dlogits; the
// row is read three times, the later reads mostly from L2), then the mean over rows (one block,
// f64, fixed order). All reductions have a fixed order: the results are deterministic.
#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kOneBlockThreads = 1024;

__global__ void count_targets_kernel(const int32_t* targets, int64_t rows, int64_t ignore_index,
                                     long long* count) {
  __shared__ long long red[32];
  long long n = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) n += targets[r] != ignore_index;
  n = block_sum(n, red);
  if (threadIdx.x == 0) *count = n;
}

template <class T>
__global__ void cross_entropy_kernel(const T* logits, const int32_t* targets, int64_t v,
                                     int64_t ignore_index, float scale, const long long* count,
                                     float* losses, double* row_loss, T* dlogits) {
  __shared__ float red_max[32];
  __shared__ double red_sum[32];
  const int64_t row = blockIdx.x;
  const T* lr = logits + row * v;
  const int64_t t = targets[row];
  const bool ignored = t == ignore_index;
  const bool valid = !ignored && t >= 0 && t < v;
  // Read before the first barrier: dlogits may be logits, and the target's element is
  // overwritten after the reductions' barriers.
  const float target_logit = threadIdx.x == 0 && valid ? to_float(lr[t]) : 0.0f;

  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) mx = fmaxf(mx, to_float(lr[i]));
  mx = block_max(mx, red_max);
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) {
    sum += static_cast<double>(expf(to_float(lr[i]) - mx));
  }
  sum = block_sum(sum, red_sum);
  const double lse = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) {
    const double l = ignored ? 0.0 : valid ? lse - static_cast<double>(target_logit) : nan("");
    if (losses) losses[row] = static_cast<float>(l);
    if (row_loss) row_loss[row] = l;
  }
  if (!dlogits) return;
  const long long n = *count;
  const float f = n > 0 ? scale / static_cast<float>(n) : 0.0f;
  const float lse_f = static_cast<float>(lse);
  T* dr = dlogits + row * v;
  for (int64_t i = threadIdx.x; i < v; i += blockDim.x) {
    float d = 0.0f;
    if (valid) {
      d = f * expf(to_float(lr[i]) - lse_f);
      if (i == t) d -= f;
    }
    dr[i] = from_float<T>(d);
  }
}

__global__ void mean_loss_kernel(const double* row_loss, int64_t rows, const long long* count,
                                 float* mean_loss) {
  __shared__ double red[32];
  double s = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += row_loss[r];
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    const long long n = *count;
    *mean_loss = n > 0 ? static_cast<float>(s / static_cast<double>(n)) : 0.0f;
  }
}

}  // namespace

void launch_cross_entropy(int32_t dtype, const void* logits, const int32_t* targets, int64_t rows,
                          int64_t v, int64_t ignore_index, float scale, float* losses,
                          float* mean_loss, void* dlogits, Scratch& scratch) {
  const cudaStream_t stream = scratch.stream();
  if (rows == 0) {
    if (mean_loss) DSPP_KERNEL_CHECK(cudaMemsetAsync(mean_loss, 0, sizeof(float), stream));
    return;
  }
  long long* count = nullptr;
  if (dlogits || mean_loss) {
    count = static_cast<long long*>(scratch.get(sizeof(long long)));
    count_targets_kernel<<<1, kOneBlockThreads, 0, stream>>>(targets, rows, ignore_index, count);
    DSPP_KERNEL_CHECK(cudaGetLastError());
  }
  double* row_loss = nullptr;
  if (mean_loss) row_loss = static_cast<double*>(scratch.get(sizeof(double) * rows));
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cross_entropy_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
        static_cast<const T*>(logits), targets, v, ignore_index, scale, count, losses, row_loss,
        static_cast<T*>(dlogits));
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
  if (mean_loss) {
    mean_loss_kernel<<<1, kOneBlockThreads, 0, stream>>>(row_loss, rows, count, mean_loss);
    DSPP_KERNEL_CHECK(cudaGetLastError());
  }
}

}  // namespace dspp::cuda
