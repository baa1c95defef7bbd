// device/cuda: Embedding, a row gather forward and a deterministic scatter-add backward.
//
// Backward without float atomics: atomicAdd would add a token's rows in whatever order the
// threads arrive, so a table row hit by several tokens would differ in its last bits from run to
// run. Instead the (id, position) pairs are sorted by id with CUB's radix sort, which is stable,
// so each id's positions stay in token order; then one block per distinct id adds its rows into
// the table row in that order, starting from the row's current value: the same f32 additions in
// the same order as the CPU layer (core/nn/embedding.cpp), hence bitwise the CPU's result for f32.
// A block per vocabulary row scanning all tokens would need no sort but cost vocab x tokens reads.
// The price: an id that repeats k times is summed by one block in k sequential steps (fine for
// text, where even the most frequent token is a few percent of a batch).
#include <cub/device/device_radix_sort.cuh>

#include "kernels_common.cuh"

namespace dspp::cuda {
namespace {

template <class T>
__global__ void embedding_forward_kernel(const int32_t* ids, const T* weight, T* out, int64_t num,
                                         int64_t dim) {
  const int64_t r = blockIdx.x;
  const int64_t id = ids[r];
  const bool valid = id >= 0 && id < num;
  T* o = out + r * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    o[c] = valid ? weight[id * dim + c] : from_float<T>(0.0f);
  }
}

// Sort keys: the id, or `num` (sorted last, then skipped) for an id outside [0, num).
__global__ void embedding_keys_kernel(const int32_t* ids, int64_t n, int64_t num, uint32_t* keys,
                                      int32_t* positions) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[i];
    keys[i] = static_cast<uint32_t>(id >= 0 && id < num ? id : num);
    positions[i] = static_cast<int32_t>(i);
  }
}

// Block i handles the id at sorted index i if it is that id's first occurrence.
template <class T, class G>
__global__ void embedding_backward_kernel(const uint32_t* keys, const int32_t* positions,
                                          const T* dout, G* dweight, int64_t n, int64_t num,
                                          int64_t dim) {
  const int64_t i = blockIdx.x;
  const uint32_t key = keys[i];
  if (key >= num) return;
  if (i > 0 && keys[i - 1] == key) return;
  G* row = dweight + int64_t(key) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float acc = to_float(row[c]);
    for (int64_t j = i; j < n && keys[j] == key; ++j) {
      acc += to_float(dout[int64_t(positions[j]) * dim + c]);
    }
    row[c] = from_float<G>(acc);
  }
}

int threads_for_dim(int64_t dim) {
  return static_cast<int>(std::min<int64_t>(256, (dim + 31) / 32 * 32));
}

}  // namespace

void launch_embedding_forward(int32_t dtype, const int32_t* ids, const void* weight, void* out,
                              int64_t n, int64_t num, int64_t dim, cudaStream_t stream) {
  if (n == 0 || dim == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_forward_kernel<T><<<static_cast<unsigned>(n), threads_for_dim(dim), 0, stream>>>(
        ids, static_cast<const T*>(weight), static_cast<T*>(out), num, dim);
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

void launch_embedding_backward(int32_t dtype, const int32_t* ids, const void* dout,
                               int32_t grad_dtype, void* dweight, int64_t n, int64_t num,
                               int64_t dim, Scratch& scratch) {
  if (n == 0 || dim == 0) return;
  const cudaStream_t stream = scratch.stream();
  uint32_t* keys_in = static_cast<uint32_t*>(scratch.get(sizeof(uint32_t) * n));
  uint32_t* keys_out = static_cast<uint32_t*>(scratch.get(sizeof(uint32_t) * n));
  int32_t* pos_in = static_cast<int32_t*>(scratch.get(sizeof(int32_t) * n));
  int32_t* pos_out = static_cast<int32_t*>(scratch.get(sizeof(int32_t) * n));
  embedding_keys_kernel<<<grid_for(n, 256), 256, 0, stream>>>(ids, n, num, keys_in, pos_in);
  DSPP_KERNEL_CHECK(cudaGetLastError());

  // Keys are at most num: sort only the bits that can be set.
  int end_bit = 1;
  while (end_bit < 32 && (uint64_t(1) << end_bit) <= uint64_t(num)) ++end_bit;
  const int items = static_cast<int>(n);
  size_t temp_bytes = 0;
  DSPP_KERNEL_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, pos_in,
                                                    pos_out, items, 0, end_bit, stream));
  void* temp = scratch.get(std::max<size_t>(temp_bytes, 1));
  DSPP_KERNEL_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in,
                                                    pos_out, items, 0, end_bit, stream));

  dispatch_float(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_float(grad_dtype, [&](auto gtag) {
      using G = typename decltype(gtag)::type;
      embedding_backward_kernel<T, G>
          <<<static_cast<unsigned>(n), threads_for_dim(dim), 0, stream>>>(
              keys_out, pos_out, static_cast<const T*>(dout), static_cast<G*>(dweight), n, num,
              dim);
    });
  });
  DSPP_KERNEL_CHECK(cudaGetLastError());
}

}  // namespace dspp::cuda
