// Checkpoint storage: safetensors shard files, a manifest that says which piece of which logical
// tensor each shard holds, and the `latest` tag file. This layer only stores and loads bytes; it
// does no communication: every process writes its own shard, rank 0 gathers the shard summaries
// (ShardSummary, serialisable as JSON) by whatever means the caller has and writes the manifest.
//
// Layout of a save folder (see docs/checkpoints.md):
//   <save_dir>/latest                       the current tag, moved last
//   <save_dir>/<tag>/manifest.json          layout, config, counters, shards with their checksums
//   <save_dir>/<tag>/rank_00000.safetensors one shard per writing rank
//
// Every file is written to `<name>.tmp.<pid>`, fsync'd, renamed into place and its folder fsync'd,
// so a crash leaves either the old file or the new one. Errors are dspp::Error naming the file and
// the tensor at fault.
//
// Crash test hook: DSPP_CHECKPOINT_CRASH_AT=<point>[:<rank>] kills the process with SIGKILL at that
// point (shard points use the shard's rank; manifest and latest points count as rank 0):
//   before_rename     a file is written and fsync'd under its temporary name, not yet renamed
//   shard_written     write_shard() has put the shard in place
//   manifest_written  write_manifest() has put manifest.json in place
//   before_latest     write_latest() is about to write `latest`
#ifndef DSPP_CHECKPOINT_H
#define DSPP_CHECKPOINT_H

#include <dspp/abi.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dspp {

// ---- safetensors files
// --------------------------------------------------------------------------- "F32", "F16", "BF16",
// "I32", "I64", "U8", "F64".
const char* safetensors_dtype_name(dspp_dtype dtype);
// The dtype of a safetensors name; nullopt for names dspp has no dtype for ("BOOL", "I8", ...).
std::optional<dspp_dtype> dtype_from_safetensors_name(std::string_view name);

struct SafetensorsEntry {
  std::string name;
  dspp_dtype dtype = DSPP_F32;
  std::vector<int64_t> shape;
  // The tensor's bytes (host memory, numel * dtype_size bytes), or, when null, `fill` is called
  // once with a buffer of that size to produce them (data assembled on the fly, like an export).
  const void* data = nullptr;
  std::function<void(void* dst)> fill;
};

struct FileSummary {
  std::filesystem::path path;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;  // of the whole file
};

// Writes a safetensors file durably (temporary name, fsync, rename, folder fsync). Tensors are
// laid out by element size, largest first, then by name, so each is aligned to its element size.
FileSummary write_safetensors(const std::filesystem::path& path,
                              const std::vector<SafetensorsEntry>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// A safetensors file mapped read-only and validated: header length, JSON, dtypes, shapes, offsets
// that tile the data section exactly. Lives as long as the data pointers it hands out are used.
class SafetensorsFile {
 public:
  struct Info {
    dspp_dtype dtype = DSPP_F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte offsets in the data section (after the header)
    uint64_t end = 0;
  };
  // With `expected_crc32c`, the whole file's checksum is compared before the header is parsed.
  explicit SafetensorsFile(const std::filesystem::path& path,
                           std::optional<uint32_t> expected_crc32c = std::nullopt);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const;
  uint64_t file_size() const;
  const std::map<std::string, std::string>& metadata() const;
  const std::vector<std::string>& names() const;  // in data order
  bool has(const std::string& name) const;
  const Info& info(const std::string& name) const;  // throws naming the file and the tensor
  const void* data(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- sharded checkpoints
// ---------------------------------------------------------------------------
constexpr int kCheckpointFormatVersion = 1;

// One stored piece of a logical tensor: elements [start, start + count) of the flattened full
// tensor. Pieces of one tensor may sit in any shards, in any number; together they cover it.
struct CheckpointPiece {
  std::string name;            // "module/transformer.h.0.attn.c_attn.weight", "optimizer/..."
  std::vector<int64_t> shape;  // the full tensor's shape
  dspp_dtype dtype = DSPP_F32;
  int64_t start = 0;
  int64_t count = 0;
  std::string key;  // its name inside the shard file: `name`, or `name@start` for a part
};

struct ShardSummary {
  std::string file;  // inside the tag folder
  int rank = 0;
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
  std::vector<CheckpointPiece> pieces;
};
// For gathering summaries on rank 0 through the caller's store or collectives.
std::string shard_summary_to_json(const ShardSummary& summary);
ShardSummary shard_summary_from_json(const std::string& json);  // Error(kInvalidArgument)

struct WorldLayout {
  int world_size = 1;
  int dp = 1;
  int tp = 1;
  int pp = 1;
};

struct CheckpointMeta {
  std::string tag;
  WorldLayout world;
  int zero_stage = 0;
  std::string config_json;           // the run's config, kept verbatim as a string
  std::string counters_json = "{}";  // engine counters: any JSON object
};

struct Manifest {
  int format_version = kCheckpointFormatVersion;
  std::string dspp_version;
  CheckpointMeta meta;
  std::vector<ShardSummary> shards;
};

// Collects this process's pieces, then writes them as one shard. Data must be contiguous host
// memory; the writer keeps a Tensor's storage alive, a raw view's memory must stay valid until
// write_shard() returns.
class CheckpointWriter {
 public:
  // The whole tensor.
  void add(const std::string& name, const Tensor& full);
  // `data` holds elements [start, start + data.numel()) of a tensor of `full_shape`.
  void add_piece(const std::string& name, const Tensor& data,
                 const std::vector<int64_t>& full_shape, int64_t start);
  void add_piece(const std::string& name, const dspp_tensor_view& data,
                 const std::vector<int64_t>& full_shape, int64_t start);

  const std::vector<CheckpointPiece>& pieces() const { return pieces_; }
  static std::string shard_file_name(int rank);  // "rank_00003.safetensors"
  // Writes <dir>/shard_file_name(rank) (creating dir) and returns what the manifest records.
  ShardSummary write_shard(const std::filesystem::path& dir, int rank) const;

 private:
  void add_raw(const std::string& name, const void* data, dspp_dtype dtype, int64_t count,
               const std::vector<int64_t>& full_shape, int64_t start, Tensor keep);

  std::vector<CheckpointPiece> pieces_;
  std::vector<const void*> data_;
  std::vector<Tensor> keep_;  // storage owners for pieces added as Tensors
};

// Rank 0, after every shard is written: checks the summaries agree (one shape and dtype per
// tensor) and writes <dir>/manifest.json.
void write_manifest(const std::filesystem::path& dir, const std::vector<ShardSummary>& shards,
                    const CheckpointMeta& meta);

// Reads a tag folder: any element range of any tensor, from whichever shards hold it, so a
// checkpoint written by one world layout loads into any other. Each shard is mapped and its
// checksum verified the first time it is used. Not thread-safe.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::filesystem::path& tag_dir);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::filesystem::path& dir() const;
  const Manifest& manifest() const;
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const;
  const std::vector<int64_t>& shape(const std::string& name) const;
  dspp_dtype dtype(const std::string& name) const;
  int64_t numel(const std::string& name) const;

  // Elements [start, start + count) of the flattened tensor into dst as `dst_dtype` (floating
  // dtypes convert among each other; integer tensors read only as themselves). Throws when a part
  // of the range is in no shard, naming the tensor and the missing elements.
  void read_range(const std::string& name, int64_t start, int64_t count, void* dst,
                  dspp_dtype dst_dtype) const;
  // Into a host tensor of `count` elements, converted to its dtype.
  void read_range(const std::string& name, int64_t start, int64_t count, const Tensor& dst) const;
  // The whole tensor with its shape.
  Tensor read(const std::string& name, dspp_dtype dtype) const;

  // The element ranges [first, second) of `name` no piece covers (empty when complete).
  std::vector<std::pair<int64_t, int64_t>> missing_ranges(const std::string& name) const;
  // Maps shard `index` (of manifest().shards) and checks its size and checksum; throws naming it.
  void verify_shard(size_t index) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- the `latest` file --------------------------------------------------------------------------
// Atomically points <save_dir>/latest at `tag` (DeepSpeed's format: the tag, no newline). Write it
// after the manifest: a crash before leaves the previous tag current.
void write_latest(const std::filesystem::path& save_dir, const std::string& tag);
// The tag in <save_dir>/latest; nullopt when there is no such file.
std::optional<std::string> read_latest(const std::filesystem::path& save_dir);
// <save_dir>/<tag>, or <save_dir>/<latest> when tag is empty (Error when there is no latest).
std::filesystem::path checkpoint_tag_dir(const std::filesystem::path& save_dir,
                                         const std::string& tag = "");

}  // namespace dspp

#endif  // DSPP_CHECKPOINT_H
