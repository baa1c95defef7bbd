// The distributed sampler (torch.utils.data.DistributedSampler's index arithmetic) and the
// shuffle it uses: our own splitmix64 + Fisher–Yates, so the order is identical on every rank,
// compiler and standard library (std::shuffle and the std distributions are not).
#include <dspp/data.h>
#include <dspp/error.h>

#include <string>
#include <utility>

#include "data/prng.h"

namespace dspp {

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, int64_t epoch) {
  if (n < 0) throw Error(Errc::kInvalidArgument, "shuffled_indices: negative size");
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  // Seed from both values through the mixer, so (seed, epoch + 1) and (seed + 1, epoch) differ
  // (torch seeds with seed + epoch, where they collide).
  SplitMix64 rng(data_detail::mix64(seed) ^
                 data_detail::mix64(static_cast<uint64_t>(epoch) + 0x632be59bd9b4e019ULL));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

DistributedSampler::DistributedSampler(int64_t dataset_size, int dp_world, int dp_rank,
                                       bool shuffle, uint64_t seed, bool drop_last)
    : dataset_size_(dataset_size),
      world_(dp_world),
      rank_(dp_rank),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last) {
  if (dp_world < 1) {
    throw Error(Errc::kInvalidArgument,
                "DistributedSampler: data-parallel world size must be >= 1, got " +
                    std::to_string(dp_world));
  }
  if (dp_rank < 0 || dp_rank >= dp_world) {
    throw Error(Errc::kInvalidArgument, "DistributedSampler: invalid rank " +
                                            std::to_string(dp_rank) + ", rank should be in [0, " +
                                            std::to_string(dp_world - 1) + "]");
  }
  if (dataset_size <= 0) {
    throw Error(Errc::kInvalidArgument, "DistributedSampler: the dataset is empty");
  }
  // torch: ceil((N - world) / world) with drop_last when N % world != 0, which is floor(N / world);
  // ceil(N / world) otherwise.
  if (drop_last) {
    num_samples_ = dataset_size / dp_world;
  } else {
    num_samples_ = (dataset_size + dp_world - 1) / dp_world;
  }
}

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> order;
  if (shuffle_) {
    order = shuffled_indices(dataset_size_, seed_, epoch_);
  } else {
    order.resize(static_cast<size_t>(dataset_size_));
    for (int64_t i = 0; i < dataset_size_; ++i) order[static_cast<size_t>(i)] = i;
  }
  // Position p of the padded (or truncated) order is order[p % N]: torch pads by repeating the
  // order from its start, as many times as needed.
  std::vector<int64_t> mine(static_cast<size_t>(num_samples_));
  for (int64_t k = 0; k < num_samples_; ++k) {
    const int64_t p = rank_ + k * world_;
    mine[static_cast<size_t>(k)] = order[static_cast<size_t>(p % dataset_size_)];
  }
  return mine;
}

}  // namespace dspp
