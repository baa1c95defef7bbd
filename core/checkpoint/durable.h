// Internals of the checkpoint layer: crash-safe file writing, the crash test hook, and element
// conversion between dtypes.
#pragma once

#include <dspp/abi.h>
#include <dspp/checkpoint.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace dspp::checkpoint_detail {

// Writes `<path>.tmp.<pid>`; commit() fsyncs it, renames it to `path` and fsyncs the folder, so
// readers see the old file or the complete new one, also after a power loss. Destroyed without
// commit() (an exception), the temporary file is removed.
class DurableFile {
 public:
  // `crash_rank` is the rank the crash hook compares with (DSPP_CHECKPOINT_CRASH_AT=point:rank).
  DurableFile(const std::filesystem::path& path, int crash_rank);
  ~DurableFile();
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, size_t bytes);  // also updates the checksum
  uint64_t bytes() const { return bytes_; }
  uint32_t crc32c() const { return crc_; }
  void commit();

 private:
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int crash_rank_;
  int fd_ = -1;
  uint64_t bytes_ = 0;
  uint32_t crc_ = 0;
};

// fsync on a folder, so a rename or a new entry in it survives a power loss.
void fsync_dir(const std::filesystem::path& dir);

// Kills the process (SIGKILL) when DSPP_CHECKPOINT_CRASH_AT names `point` (and `rank`, if it
// names one). For crash tests only; costs a getenv when unset.
void crash_point(const char* point, int rank);

std::string errno_text();

// Elements between dtypes: the same dtype copies; floating dtypes (f32, f16, bf16, f64) convert
// with round-to-nearest-even. False when the pair does not convert (integers to anything else).
bool can_convert(dspp_dtype from, dspp_dtype to);
void convert(const void* src, dspp_dtype from, void* dst, dspp_dtype to, size_t count);

// write_safetensors() with the rank the crash hook sees at "before_rename".
FileSummary write_safetensors_file(const std::filesystem::path& path,
                                   const std::vector<SafetensorsEntry>& tensors,
                                   const std::map<std::string, std::string>& metadata,
                                   int crash_rank);

// Elements of a shape; Error(kInvalidArgument) "<what>: ..." on a negative or overflowing one.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);
std::string shape_text(const std::vector<int64_t>& shape);  // "[4, 3]"

}  // namespace dspp::checkpoint_detail
