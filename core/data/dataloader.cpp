// The DataLoader: DeepSpeedDataLoader (deepspeed/runtime/dataloader.py) over a DistributedSampler,
// wrapped in RepeatingLoader, plus default_collate and TensorDataset.
//
// DeepSpeed builds torch.utils.data.DataLoader(dataset, batch_size=micro_batch,
// sampler=DistributedSampler(dataset, world, rank), drop_last=dataloader_drop_last,
// collate_fn=...), so a rank sees ceil(N / world) samples (padded) in ceil or floor(. / micro)
// batches. What we do differently, and why:
// - RepeatingLoader restarts the iterator without set_epoch, so every DeepSpeed epoch repeats
//   the first one's order; next() here advances the sampler's epoch (torch's documented usage).
// - drop_last also drops the sampler's tail (torch's DistributedSampler(drop_last=True)) so that
//   "drop" never serves padded duplicates; len() differs from DeepSpeed's only when N is not a
//   multiple of the world size.
// - Batches are made on the calling thread; there are no worker processes to configure.
#include <dspp/data.h>
#include <dspp/error.h>
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

namespace dspp {

namespace {

// Stacks one field (inputs or targets) of every sample into [B, ...shape].
Tensor stack_field(const std::vector<Sample>& samples, bool inputs) {
  const char* field = inputs ? "inputs" : "targets";
  const Tensor& first = inputs ? samples.front().inputs : samples.front().targets;
  if (!first.defined()) {
    for (const Sample& s : samples) {
      if ((inputs ? s.inputs : s.targets).defined()) {
        throw Error(Errc::kInvalidArgument, std::string("default_collate: sample ") + field +
                                                " are defined in some samples and not in others");
      }
    }
    return Tensor();
  }
  std::vector<int64_t> shape = first.shape();
  shape.insert(shape.begin(), static_cast<int64_t>(samples.size()));
  Tensor out = Tensor::empty(shape, first.dtype());
  const size_t row_bytes = first.nbytes();
  char* dst = static_cast<char*>(out.data());
  for (size_t i = 0; i < samples.size(); ++i) {
    const Tensor& t = inputs ? samples[i].inputs : samples[i].targets;
    if (!t.defined() || t.shape() != first.shape() || t.dtype() != first.dtype()) {
      throw Error(Errc::kInvalidArgument,
                  std::string("default_collate: sample ") + std::to_string(i) + " " + field +
                      " is " + (t.defined() ? t.describe() : std::string("undefined")) +
                      ", sample 0's is " + first.describe() + ": samples must have one shape");
    }
    if (t.device().type != DSPP_DEVICE_CPU) {
      throw Error(Errc::kInvalidArgument, std::string("default_collate: sample ") + field +
                                              " must be in host memory, got " + t.describe());
    }
    std::memcpy(dst + i * row_bytes, t.data(), row_bytes);
  }
  return out;
}

}  // namespace

Batch default_collate(const std::vector<Sample>& samples) {
  if (samples.empty()) throw Error(Errc::kInvalidArgument, "default_collate: no samples");
  Batch batch;
  batch.inputs = stack_field(samples, true);
  batch.targets = stack_field(samples, false);
  return batch;
}

// ---- TensorDataset
// -------------------------------------------------------------------------------

TensorDataset::TensorDataset(Tensor inputs, Tensor targets)
    : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  if (!inputs_.defined() || inputs_.dim() < 1) {
    throw Error(Errc::kInvalidArgument, "TensorDataset: inputs must have a sample dimension");
  }
  if (targets_.defined() && (targets_.dim() < 1 || targets_.size(0) != inputs_.size(0))) {
    throw Error(Errc::kInvalidArgument, "TensorDataset: inputs " + inputs_.describe() +
                                            " and targets " + targets_.describe() +
                                            " must have the same first dimension");
  }
}

int64_t TensorDataset::size() const {
  return inputs_.size(0);
}

namespace {

Tensor row_of(const Tensor& t, int64_t index) {
  if (!t.defined()) return Tensor();
  std::vector<int64_t> row_shape(t.shape().begin() + 1, t.shape().end());
  return t.slice(index * numel_of(row_shape), row_shape);
}

}  // namespace

Sample TensorDataset::get(int64_t index) const {
  if (index < 0 || index >= size()) {
    throw Error(Errc::kInvalidArgument, "TensorDataset: index " + std::to_string(index) +
                                            " out of range [0, " + std::to_string(size()) + ")");
  }
  return Sample{row_of(inputs_, index), row_of(targets_, index)};
}

// ---- DataLoader
// ----------------------------------------------------------------------------------

namespace {

int64_t batches_per_epoch(int64_t num_samples, int64_t micro_batch, bool drop_last) {
  if (drop_last) return num_samples / micro_batch;
  return (num_samples + micro_batch - 1) / micro_batch;
}

const std::shared_ptr<const Dataset>& checked(const std::shared_ptr<const Dataset>& dataset) {
  if (!dataset) throw Error(Errc::kInvalidArgument, "DataLoader: no dataset");
  return dataset;
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, int64_t micro_batch, int dp_rank,
                       int dp_world, bool shuffle, uint64_t seed, bool drop_last,
                       CollateFn collate_fn)
    : dataset_(checked(dataset)),
      micro_batch_(micro_batch),
      drop_last_(drop_last),
      collate_fn_(collate_fn ? std::move(collate_fn) : CollateFn(default_collate)),
      sampler_(dataset_->size(), dp_world, dp_rank, shuffle, seed, drop_last),
      len_(0) {
  if (micro_batch < 1) {
    throw Error(Errc::kInvalidArgument,
                "DataLoader: micro batch size (train_micro_batch_size_per_gpu) must be >= 1, got " +
                    std::to_string(micro_batch));
  }
  len_ = batches_per_epoch(sampler_.num_samples(), micro_batch_, drop_last_);
  refresh_epoch_indices();
}

void DataLoader::refresh_epoch_indices() {
  epoch_indices_ = sampler_.indices();
}

Batch DataLoader::next() {
  if (len_ == 0) {
    throw Error(Errc::kInvalidArgument,
                "DataLoader: an epoch holds no batch on rank " + std::to_string(sampler_.rank()) +
                    ": " + std::to_string(sampler_.num_samples()) + " samples per rank (dataset " +
                    std::to_string(sampler_.dataset_size()) + ", data-parallel world " +
                    std::to_string(sampler_.world()) + ") and micro batch " +
                    std::to_string(micro_batch_) + " with drop_last");
  }
  if (position_ >= len_) {
    // RepeatingLoader: start the next epoch, with its own order.
    sampler_.set_epoch(sampler_.epoch() + 1);
    position_ = 0;
    refresh_epoch_indices();
  }
  const size_t begin = static_cast<size_t>(position_ * micro_batch_);
  const size_t end = std::min(begin + static_cast<size_t>(micro_batch_), epoch_indices_.size());
  std::vector<Sample> samples;
  samples.reserve(end - begin);
  for (size_t k = begin; k < end; ++k) samples.push_back(dataset_->get(epoch_indices_[k]));
  Batch batch = collate_fn_(samples);
  ++position_;  // only after success: a throwing get() or collate leaves the state as it was
  return batch;
}

void DataLoader::set_epoch(int64_t epoch) {
  sampler_.set_epoch(epoch);
  position_ = 0;
  refresh_epoch_indices();
}

DataLoaderState DataLoader::state() const {
  return DataLoaderState{sampler_.epoch(), position_, sampler_.seed()};
}

void DataLoader::load_state(const DataLoaderState& state) {
  if (state.position < 0 || state.position > len_) {
    throw Error(Errc::kInvalidArgument,
                "DataLoader::load_state: position " + std::to_string(state.position) +
                    " is outside [0, " + std::to_string(len_) +
                    "] batches per epoch (was the state saved with another dataset, micro batch "
                    "or data-parallel world size?)");
  }
  sampler_.set_seed(state.seed);
  sampler_.set_epoch(state.epoch);
  position_ = state.position;
  refresh_epoch_indices();
}

}  // namespace dspp
