// Token shards as nanoGPT and llm.c write them, memory-mapped.
// - llm.c (dev/data/data_common.py write_datafile): 256 little-endian int32 header words
//   [magic, version, token count, 0...], then the tokens: magic 20240520 version 1 = GPT-2,
//   uint16 tokens; magic 20240801 version 7 = Llama-3, uint32 tokens. llm.c's loader requires the
//   file size to be exactly header + count tokens; so do we.
// - nanoGPT (data/*/prepare.py): np.uint16 tokens with no header.
#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dspp/data.h>
#include <dspp/error.h>
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

namespace dspp {

static_assert(std::endian::native == std::endian::little,
              "token files are little-endian; a big-endian host needs byte swaps here");

namespace {

constexpr int32_t kLlmcGpt2Magic = 20240520;
constexpr int32_t kLlmcGpt2Version = 1;
constexpr int32_t kLlmcLlama3Magic = 20240801;
constexpr int32_t kLlmcLlama3Version = 7;
constexpr int64_t kLlmcHeaderWords = 256;
constexpr int64_t kLlmcHeaderBytes = kLlmcHeaderWords * 4;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(Errc::kIo, "token file '" + path + "': " + what);
}

// An llm.c-shaped header (zeros after the count, and a count that matches the size) with a magic
// we do not know: worth an error rather than reading the header as tokens.
bool looks_like_llmc_header(const int32_t* words, int64_t file_bytes) {
  if (file_bytes < kLlmcHeaderBytes) return false;
  for (int64_t i = 3; i < kLlmcHeaderWords; ++i) {
    if (words[i] != 0) return false;
  }
  const int64_t count = words[2];
  return count >= 0 &&
         (kLlmcHeaderBytes + 2 * count == file_bytes || kLlmcHeaderBytes + 4 * count == file_bytes);
}

std::string bytes_str(int64_t n) {
  return std::to_string(n) + " bytes";
}

}  // namespace

// One read-only mapping of a whole file; unmapped with the dataset.
struct TokenFileDataset::Mapping {
  const unsigned char* base = nullptr;
  size_t bytes = 0;
  const unsigned char* tokens = nullptr;  // first token

  ~Mapping() {
    if (base != nullptr) munmap(const_cast<unsigned char*>(base), bytes);
  }
};

std::vector<std::string> expand_data_paths(const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    const std::string part = spec.substr(start, comma - start);
    start = comma + 1;
    if (part.empty()) continue;
    std::vector<std::string> matches;
    std::error_code ec;
    if (std::filesystem::is_directory(part, ec)) {
      for (const auto& entry : std::filesystem::directory_iterator(part)) {
        if (entry.is_regular_file() && entry.path().extension() == ".bin") {
          matches.push_back(entry.path().string());
        }
      }
      if (matches.empty()) {
        throw Error(Errc::kIo, "data path '" + part + "': the directory holds no .bin file");
      }
    } else if (part.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      const int rc = glob(part.c_str(), 0, nullptr, &g);
      if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
      }
      globfree(&g);
      if (matches.empty()) throw Error(Errc::kIo, "data path '" + part + "' matches no file");
    } else {
      matches.push_back(part);  // a plain file: opening it reports a missing one
    }
    std::sort(matches.begin(), matches.end());
    out.insert(out.end(), matches.begin(), matches.end());
  }
  if (out.empty()) throw Error(Errc::kIo, "data path '" + spec + "' names no file");
  return out;
}

TokenFileDataset::TokenFileDataset(const std::vector<std::string>& paths, TokenFileOptions options)
    : options_(options) {
  if (options_.context < 1) {
    throw Error(Errc::kInvalidArgument,
                "TokenFileDataset: context must be >= 1, got " + std::to_string(options_.context));
  }
  if (options_.stride == 0) options_.stride = options_.context;
  if (options_.stride < 1) {
    throw Error(Errc::kInvalidArgument,
                "TokenFileDataset: stride must be >= 1, got " + std::to_string(options_.stride));
  }
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    std::vector<std::string> expanded = expand_data_paths(p);
    files.insert(files.end(), expanded.begin(), expanded.end());
  }
  if (files.empty()) throw Error(Errc::kInvalidArgument, "TokenFileDataset: no file given");

  const int64_t window = options_.context + 1;
  for (const std::string& path : files) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      const int err = errno;
      close(fd);
      fail(path, std::string("cannot stat: ") + std::strerror(err));
    }
    const int64_t file_bytes = st.st_size;
    if (file_bytes == 0) {
      close(fd);
      fail(path, "the file is empty");
    }
    auto mapping = std::make_unique<Mapping>();
    void* addr = mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    close(fd);  // the mapping keeps the file alive
    if (addr == MAP_FAILED) fail(path, std::string("cannot mmap: ") + std::strerror(map_err));
    mapping->base = static_cast<const unsigned char*>(addr);
    mapping->bytes = static_cast<size_t>(file_bytes);

    TokenShard shard;
    shard.path = path;
    int32_t magic = 0;
    if (file_bytes >= 4) std::memcpy(&magic, mapping->base, 4);
    const bool known_magic = magic == kLlmcGpt2Magic || magic == kLlmcLlama3Magic;
    if (options_.format == TokenFileFormat::kLlmc ||
        (options_.format == TokenFileFormat::kAuto && known_magic)) {
      if (!known_magic) {
        fail(path, "bad magic " + std::to_string(magic) + " (expected " +
                       std::to_string(kLlmcGpt2Magic) + " for llm.c GPT-2 uint16 tokens or " +
                       std::to_string(kLlmcLlama3Magic) + " for llm.c Llama-3 uint32 tokens)");
      }
      if (file_bytes < kLlmcHeaderBytes) {
        fail(path, "truncated llm.c header: " + bytes_str(file_bytes) + ", the header alone is " +
                       bytes_str(kLlmcHeaderBytes));
      }
      const int32_t* header = reinterpret_cast<const int32_t*>(mapping->base);
      const int32_t expected_version =
          magic == kLlmcGpt2Magic ? kLlmcGpt2Version : kLlmcLlama3Version;
      if (header[1] != expected_version) {
        fail(path, "unsupported llm.c version " + std::to_string(header[1]) + " for magic " +
                       std::to_string(magic) + " (expected " + std::to_string(expected_version) +
                       ")");
      }
      if (header[2] < 0) fail(path, "negative token count " + std::to_string(header[2]));
      shard.format = TokenFileFormat::kLlmc;
      shard.token_bytes = magic == kLlmcGpt2Magic ? 2 : 4;
      shard.num_tokens = header[2];
      const int64_t expected_bytes = kLlmcHeaderBytes + shard.num_tokens * shard.token_bytes;
      if (file_bytes < expected_bytes) {
        fail(path, "truncated: the header declares " + std::to_string(shard.num_tokens) +
                       " tokens (" + bytes_str(expected_bytes) +
                       " with the header) but the file "
                       "has " +
                       bytes_str(file_bytes));
      }
      if (file_bytes > expected_bytes) {
        fail(path, "the header declares " + std::to_string(shard.num_tokens) + " tokens (" +
                       bytes_str(expected_bytes) + " with the header) but the file has " +
                       bytes_str(file_bytes) + " (trailing data, or a wrong count)");
      }
      mapping->tokens = mapping->base + kLlmcHeaderBytes;
    } else {
      if (options_.format == TokenFileFormat::kAuto &&
          looks_like_llmc_header(reinterpret_cast<const int32_t*>(mapping->base), file_bytes)) {
        fail(path, "bad magic " + std::to_string(magic) +
                       ": the file has an llm.c-shaped header but not an llm.c magic (" +
                       std::to_string(kLlmcGpt2Magic) + " or " + std::to_string(kLlmcLlama3Magic) +
                       "); read it with format raw if it really is headerless uint16 tokens");
      }
      if (file_bytes % 2 != 0) {
        fail(path, "raw uint16 token file of odd size " + bytes_str(file_bytes) +
                       " (truncated, or not a token file)");
      }
      shard.format = TokenFileFormat::kRaw;
      shard.token_bytes = 2;
      shard.num_tokens = file_bytes / 2;
      mapping->tokens = mapping->base;
    }
    // Windows of T+1 tokens starting every `stride` tokens, inside this shard.
    if (shard.num_tokens >= window) {
      shard.num_windows = (shard.num_tokens - window) / options_.stride + 1;
    }
    // The access pattern is random by window; each window is one short sequential read.
    madvise(const_cast<unsigned char*>(mapping->base), mapping->bytes, MADV_RANDOM);
    first_window_.push_back(total_windows_);
    total_windows_ += shard.num_windows;
    shards_.push_back(shard);
    mappings_.push_back(std::move(mapping));
  }
  if (total_windows_ == 0) {
    throw Error(
        Errc::kInvalidArgument,
        "TokenFileDataset: no shard holds a window of context + 1 = " + std::to_string(window) +
            " tokens (" + std::to_string(num_tokens()) + " tokens in " +
            std::to_string(shards_.size()) + " file(s), first '" + shards_.front().path + "')");
  }
}

TokenFileDataset::~TokenFileDataset() = default;

int64_t TokenFileDataset::num_tokens() const {
  int64_t n = 0;
  for (const TokenShard& s : shards_) n += s.num_tokens;
  return n;
}

Sample TokenFileDataset::get(int64_t index) const {
  if (index < 0 || index >= total_windows_) {
    throw Error(Errc::kInvalidArgument, "TokenFileDataset: index " + std::to_string(index) +
                                            " out of range [0, " + std::to_string(total_windows_) +
                                            ")");
  }
  // The last shard whose first window is <= index (empty shards share their successor's start).
  const auto it = std::upper_bound(first_window_.begin(), first_window_.end(), index);
  const size_t s = static_cast<size_t>(it - first_window_.begin()) - 1;
  const TokenShard& shard = shards_[s];
  const Mapping& map = *mappings_[s];
  const int64_t T = options_.context;
  const int64_t start = (index - first_window_[s]) * options_.stride;

  Tensor inputs = Tensor::empty({T}, DSPP_I32);
  Tensor targets = Tensor::empty({T}, DSPP_I32);
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t k = 0; k <= T; ++k) {
    int64_t token = 0;
    if (shard.token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, map.tokens + 2 * (start + k), 2);
      token = v;
    } else {
      uint32_t v;
      std::memcpy(&v, map.tokens + 4 * (start + k), 4);
      token = v;
    }
    const int64_t limit = options_.vocab_size > 0 ? options_.vocab_size : INT32_MAX + int64_t{1};
    if (token >= limit) {
      fail(shard.path, "token " + std::to_string(token) + " at token offset " +
                           std::to_string(start + k) + " is outside the vocabulary of " +
                           std::to_string(limit) + " tokens");
    }
    if (k < T) in[k] = static_cast<int32_t>(token);
    if (k > 0) tg[k - 1] = static_cast<int32_t>(token);
  }
  return Sample{std::move(inputs), std::move(targets)};
}

}  // namespace dspp
