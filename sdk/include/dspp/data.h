// Data: the Dataset interface, DeepSpeed's DataLoader semantics (a DistributedSampler that shards
// by data-parallel rank, micro-batches, drop_last, collate_fn, repeating across epochs, exact
// resume), the token-file dataset (llm.c and nanoGPT shards) and the embedded synthetic task that
// ds-train trains on when no data is given.
#ifndef DSPP_DATA_H
#define DSPP_DATA_H

#include <dspp/module.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dspp {

// Batches are dspp::Batch from <dspp/module.h>: inputs [B, ...] and targets [B, ...] (for
// language modelling both are i32 [B, T], targets shifted by one token).

// One example: two tensors of fixed shape. Language modelling: inputs i32 [T], targets i32 [T];
// an MLP: features f32 [F] and a label (i32 [] or f32 [K]).
struct Sample {
  Tensor inputs;
  Tensor targets;
};

// A map-style dataset (torch.utils.data.Dataset): size() samples, any of them by index.
// get() must be safe to call from several threads at once and return the same sample for the
// same index every time (the sampler and checkpoint resume rely on it).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Sample get(int64_t index) const = 0;
};

using CollateFn = std::function<Batch(const std::vector<Sample>&)>;

// Stacks samples into a batch: every sample's inputs (and targets) must have the same shape and
// dtype and live in host memory; the result is [B, ...shape]. Undefined targets in every sample
// give an undefined batch.targets.
Batch default_collate(const std::vector<Sample>& samples);

// A dataset over two in-memory tensors whose first dimension indexes the samples (the embedder's
// and the MLP's case). get(i) returns views of row i: no copy.
class TensorDataset : public Dataset {
 public:
  TensorDataset(Tensor inputs, Tensor targets);
  int64_t size() const override;
  Sample get(int64_t index) const override;

 private:
  Tensor inputs_;
  Tensor targets_;
};

// ---- sampling
// ------------------------------------------------------------------------------------

// The order of one epoch: a permutation of [0, n) by Fisher–Yates driven by splitmix64 seeded from
// (seed, epoch). It is NOT torch's randperm order, but it is the same on every rank and every
// machine, and reproducible from (n, seed, epoch) alone.
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, int64_t epoch);

// torch.utils.data.DistributedSampler, index for index apart from the shuffled order:
// - without drop_last, num_samples = ceil(N / world) and the epoch's order is padded to
//   num_samples * world by repeating it from its start;
// - with drop_last, num_samples = floor(N / world) and the tail is dropped;
// - rank r takes positions r, r + world, r + 2 world, ... of that order.
class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, int dp_world = 1, int dp_rank = 0, bool shuffle = true,
                     uint64_t seed = 0, bool drop_last = false);

  int64_t num_samples() const { return num_samples_; }  // per rank, every epoch
  int64_t total_size() const { return num_samples_ * world_; }
  int64_t dataset_size() const { return dataset_size_; }
  int rank() const { return rank_; }
  int world() const { return world_; }
  bool shuffle() const { return shuffle_; }
  bool drop_last() const { return drop_last_; }
  uint64_t seed() const { return seed_; }
  int64_t epoch() const { return epoch_; }
  void set_epoch(int64_t epoch) { epoch_ = epoch; }
  void set_seed(uint64_t seed) { seed_ = seed; }

  // This rank's indices for the current epoch, num_samples() of them.
  std::vector<int64_t> indices() const;

 private:
  int64_t dataset_size_;
  int world_;
  int rank_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  int64_t num_samples_;
  int64_t epoch_ = 0;
};

// ---- the loader
// ----------------------------------------------------------------------------------

// Where a loader stands: enough to continue with exactly the batch that would have come next.
// Checkpoints store it per data-parallel rank (every rank's is the same when all took the same
// number of batches).
struct DataLoaderState {
  int64_t epoch = 0;     // the sampler epoch of the batches now being served
  int64_t position = 0;  // batches already served in that epoch, 0..len()
  uint64_t seed = 0;     // the shuffle seed
};

// DeepSpeedDataLoader wrapped in RepeatingLoader: batches of `micro_batch`
// (train_micro_batch_size_per_gpu) drawn through a DistributedSampler over the data-parallel
// group, collated by collate_fn (default_collate when empty).
//
// Deliberate differences from DeepSpeed (also in core/data/dataloader.cpp):
// - next() never ends: past the last batch of an epoch it moves to epoch + 1 with a new shuffled
//   order (DeepSpeed's RepeatingLoader restarts the iterator but nobody calls set_epoch, so every
//   epoch repeats the first one's order).
// - drop_last (`dataloader_drop_last`) applies to the sampler as well as to the last partial batch,
//   so with it no rank ever sees a padded duplicate. DeepSpeed passes it only to torch's
//   DataLoader; the two agree whenever the dataset size is a multiple of the data-parallel world
//   size.
// - The shuffle order is ours (see shuffled_indices), not torch's.
// With dp_world W and micro-batch b, the union over ranks of step k's batches is exactly the batch
// a single process with micro-batch W*b gets at step k (same seed): runs at different world sizes
// train on the same data.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, int64_t micro_batch, int dp_rank = 0,
             int dp_world = 1, bool shuffle = true, uint64_t seed = 0, bool drop_last = false,
             CollateFn collate_fn = nullptr);

  // Batches per epoch on this rank: ceil(num_samples / micro_batch), floor with drop_last.
  int64_t len() const { return len_; }
  int64_t micro_batch() const { return micro_batch_; }
  const Dataset& dataset() const { return *dataset_; }
  const DistributedSampler& sampler() const { return sampler_; }

  // The next batch, crossing into the next epoch when this one is exhausted. Throws when an epoch
  // holds no batch at all (a dataset too small for the world size with drop_last).
  Batch next();

  // Starts `epoch` from its first batch (torch's sampler.set_epoch before iterating).
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return sampler_.epoch(); }
  int64_t position() const { return position_; }

  DataLoaderState state() const;
  // Continues from a saved state: the next batch is the one that followed it. Throws for a
  // position past len().
  void load_state(const DataLoaderState& state);

 private:
  void refresh_epoch_indices();

  std::shared_ptr<const Dataset> dataset_;
  int64_t micro_batch_;
  bool drop_last_;
  CollateFn collate_fn_;
  DistributedSampler sampler_;
  int64_t len_;
  int64_t position_ = 0;
  std::vector<int64_t> epoch_indices_;  // this rank's indices of the current epoch
};

// ---- token files
// ---------------------------------------------------------------------------------

enum class TokenFileFormat {
  kAuto,  // llm.c when the file starts with an llm.c magic, raw otherwise
  kLlmc,  // llm.c: 256 x int32 header (magic, version, token count), then the tokens
  kRaw,   // nanoGPT's .bin: uint16 tokens, no header
};

struct TokenShard {
  std::string path;
  TokenFileFormat format = TokenFileFormat::kRaw;  // as detected: kLlmc or kRaw
  int token_bytes = 2;                             // 2 (uint16), 4 (llm.c Llama-3 uint32)
  int64_t num_tokens = 0;
  int64_t num_windows = 0;
};

struct TokenFileOptions {
  int64_t context = 1024;  // T: a sample holds T inputs and the T targets shifted by one
  int64_t stride = 0;      // tokens between window starts; 0 = T (llm.c: windows share one token)
  int64_t vocab_size = 0;  // > 0: get() checks every token is below it and names the file if not
  TokenFileFormat format = TokenFileFormat::kAuto;
};

// Splits a --data argument on commas; each part is a file, a directory (its *.bin files) or a
// glob pattern; every part's matches are sorted by name. Throws naming a part that matches nothing.
std::vector<std::string> expand_data_paths(const std::string& spec);

// Flat token shards, memory-mapped. Sample i is a window of T+1 tokens of one shard (windows never
// cross shards): inputs i32 [T] = tokens [s, s+T), targets i32 [T] = tokens [s+1, s+T+1).
// Formats: llm.c's (magic 20240520 version 1 uint16 tokens, or 20240801 version 7 uint32 tokens)
// and nanoGPT's raw uint16 .bin. In auto mode a raw file can not be mistaken for an llm.c one
// with GPT-2 data: the magic's first uint16, 54600, is past GPT-2's vocabulary.
// Errors (dspp::Error kIo) name the file: bad magic, unsupported version, truncated or oversized
// file, odd size for raw uint16, a token past vocab_size.
class TokenFileDataset : public Dataset {
 public:
  // Each path may be a file, a directory or a glob (see expand_data_paths).
  TokenFileDataset(const std::vector<std::string>& paths, TokenFileOptions options);
  ~TokenFileDataset() override;
  TokenFileDataset(const TokenFileDataset&) = delete;
  TokenFileDataset& operator=(const TokenFileDataset&) = delete;

  int64_t size() const override { return total_windows_; }
  Sample get(int64_t index) const override;

  int64_t context() const { return options_.context; }
  int64_t num_tokens() const;
  const std::vector<TokenShard>& shards() const { return shards_; }

 private:
  struct Mapping;
  TokenFileOptions options_;
  std::vector<TokenShard> shards_;
  std::vector<std::unique_ptr<Mapping>> mappings_;
  std::vector<int64_t> first_window_;  // prefix sums of num_windows, one per shard
  int64_t total_windows_ = 0;
};

// ---- the embedded synthetic task
// -----------------------------------------------------------------

enum class DataSplit { kTrain, kHeldOut };

struct AdditionTaskOptions {
  int digits = 2;               // D: operands have exactly D digits, the sum D+1 (zero-padded)
  int base = 10;                // radix, 2..36; the task's alphabet is base + 3 tokens
  int64_t context = 64;         // T
  int64_t vocab_size = 0;       // 0 = base + 3; larger pads the vocabulary with unused ids
  int64_t num_samples = 65536;  // size(): samples are generated on demand, nothing is stored
  uint64_t seed = 0;
  DataSplit split = DataSplit::kTrain;
};

// Multi-digit addition, the default data of ds-train. A sample's T+1 tokens are ';' followed by
// problems "A+B=C;" back to back, cut at T+1 tokens: A and B uniform random D-digit numbers
// (zero-padded, most significant digit first) and C = A+B in D+1 digits, e.g. ";37+05=042;81+..".
// Token ids: digit d -> d, '+' -> base, '=' -> base+1, ';' -> base+2.
// Only the operand digits are unpredictable; everything else (symbols, every answer digit) is a
// function of the tokens before it, so a perfect model's loss is the operand digits' entropy:
//   irreducible_loss = (number of targets that are operand digits) * ln(base) / T.
// Sample i of a split is generated from (seed, split, i) alone, so get() is random-access and
// deterministic; train and held-out draw from independent streams (disjoint samples; with D=2 the
// 10^4 possible problems recur in both, use D>=3 for problems mostly unseen in training).
class AdditionTask : public Dataset {
 public:
  enum class TargetKind { kOperand, kAnswer, kSymbol };

  explicit AdditionTask(AdditionTaskOptions options = {});

  int64_t size() const override { return options_.num_samples; }
  Sample get(int64_t index) const override;
  // The T+1 tokens sample `index` is cut from.
  std::vector<int32_t> tokens(int64_t index) const;

  const AdditionTaskOptions& options() const { return options_; }
  int64_t vocab_size() const;
  int64_t problem_length() const { return 3 * options_.digits + 4; }
  // What target position t (0..T-1) holds in every sample.
  TargetKind target_kind(int64_t t) const;

  // Mean cross-entropy per target token (nats) of: a uniform model, ln(vocab_size);
  double chance_loss() const;
  // a model that knows the format but ignores the operands (answer digits by their marginals);
  double format_only_loss() const;
  // a perfect model.
  double irreducible_loss() const;

  // "37+05=042;" for printing; ids outside the alphabet print as '?'.
  std::string decode(const int32_t* tokens, int64_t n) const;
  std::string decode(const std::vector<int32_t>& tokens) const;
  std::string decode(const Tensor& tokens) const;  // i32, any shape, host memory
  // The inverse of decode; throws for a character outside the alphabet.
  std::vector<int32_t> encode(const std::string& text) const;

 private:
  AdditionTaskOptions options_;
};

}  // namespace dspp

#endif  // DSPP_DATA_H
