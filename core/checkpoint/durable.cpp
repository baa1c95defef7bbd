// Crash-safe files, the crash hook and dtype conversion for the checkpoint layer.
#include "checkpoint/durable.h"

#include <dspp/checkpoint.h>
#include <dspp/error.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "monitor/crc32c.h"

// Shards are raw little-endian bytes copied straight from memory.
static_assert(std::endian::native == std::endian::little,
              "dspp checkpoints need a little-endian host");

namespace dspp {

namespace checkpoint_detail {

std::string errno_text() {
  return std::error_code(errno, std::generic_category()).message();
}

// ---- durable files
// ---------------------------------------------------------------------------------
DurableFile::DurableFile(const std::filesystem::path& path, int crash_rank)
    : path_(path),
      tmp_(path.string() + ".tmp." + std::to_string(::getpid())),
      crash_rank_(crash_rank) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(Errc::kIo, "cannot create '" + tmp_.string() + "': " + errno_text());
}

DurableFile::~DurableFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void DurableFile::write(const void* data, size_t bytes) {
  crc_ = dspp::crc32c(data, bytes, crc_);
  const auto* p = static_cast<const char*>(data);
  size_t left = bytes;
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(Errc::kIo, "cannot write '" + tmp_.string() + "': " + errno_text());
    p += n;
    left -= static_cast<size_t>(n);
  }
  bytes_ += bytes;
}

void DurableFile::commit() {
  if (::fsync(fd_) != 0) {
    throw Error(Errc::kIo, "cannot fsync '" + tmp_.string() + "': " + errno_text());
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    throw Error(Errc::kIo, "cannot close '" + tmp_.string() + "': " + errno_text());
  }
  crash_point("before_rename", crash_rank_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    throw Error(Errc::kIo, "cannot rename '" + tmp_.string() + "' to '" + path_.string() +
                               "': " + errno_text());
  }
  tmp_.clear();  // nothing left to remove
  fsync_dir(path_.has_parent_path() ? path_.parent_path() : std::filesystem::path("."));
}

void fsync_dir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(Errc::kIo, "cannot open folder '" + dir.string() + "': " + errno_text());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    errno = err;
    throw Error(Errc::kIo, "cannot fsync folder '" + dir.string() + "': " + errno_text());
  }
}

void crash_point(const char* point, int rank) {
  const char* env = std::getenv("DSPP_CHECKPOINT_CRASH_AT");
  if (env == nullptr || *env == '\0') return;
  const std::string spec(env);
  const size_t colon = spec.find(':');
  if (spec.substr(0, colon) != point) return;
  if (colon != std::string::npos && spec.substr(colon + 1) != std::to_string(rank)) return;
  // SIGKILL, like the OOM killer or a lost node: no destructors, no atexit, no buffered output.
  ::raise(SIGKILL);
  ::_exit(99);  // not reached
}

// ---- dtype conversion --------------------------------------------------------------------------
namespace {

bool is_float(dspp_dtype t) {
  return t == DSPP_F32 || t == DSPP_F16 || t == DSPP_BF16 || t == DSPP_F64;
}

// bf16 is the top half of an f32: round to nearest even on the dropped half, keep NaNs quiet.
uint16_t bf16_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float float_from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f16 through the compiler's _Float16 (GCC on x86-64 and aarch64), which rounds to nearest even.
double load_float(const void* p, dspp_dtype t, size_t i) {
  switch (t) {
    case DSPP_F32:
      return static_cast<const float*>(p)[i];
    case DSPP_F64:
      return static_cast<const double*>(p)[i];
    case DSPP_BF16:
      return float_from_bf16(static_cast<const uint16_t*>(p)[i]);
    case DSPP_F16: {
      _Float16 h;
      std::memcpy(&h, static_cast<const char*>(p) + 2 * i, 2);
      return static_cast<double>(h);
    }
    default:
      return 0;
  }
}

void store_float(void* p, dspp_dtype t, size_t i, double v) {
  switch (t) {
    case DSPP_F32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      return;
    case DSPP_F64:
      static_cast<double*>(p)[i] = v;
      return;
    case DSPP_BF16:
      static_cast<uint16_t*>(p)[i] = bf16_from_float(static_cast<float>(v));
      return;
    case DSPP_F16: {
      const _Float16 h = static_cast<_Float16>(v);
      std::memcpy(static_cast<char*>(p) + 2 * i, &h, 2);
      return;
    }
    default:
      return;
  }
}

}  // namespace

bool can_convert(dspp_dtype from, dspp_dtype to) {
  return from == to || (is_float(from) && is_float(to));
}

void convert(const void* src, dspp_dtype from, void* dst, dspp_dtype to, size_t count) {
  if (from == to) {
    std::memcpy(dst, src, count * dtype_size(from));
    return;
  }
  if (!can_convert(from, to)) {
    throw Error(Errc::kInvalidArgument, std::string("cannot convert ") + dtype_name(from) +
                                            " elements to " + dtype_name(to));
  }
  // The two conversions a load of a mixed-precision checkpoint does most get a direct loop.
  if (from == DSPP_BF16 && to == DSPP_F32) {
    const auto* s = static_cast<const uint16_t*>(src);
    auto* d = static_cast<float*>(dst);
    for (size_t i = 0; i < count; ++i) d[i] = float_from_bf16(s[i]);
    return;
  }
  if (from == DSPP_F32 && to == DSPP_BF16) {
    const auto* s = static_cast<const float*>(src);
    auto* d = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < count; ++i) d[i] = bf16_from_float(s[i]);
    return;
  }
  for (size_t i = 0; i < count; ++i) store_float(dst, to, i, load_float(src, from, i));
}

}  // namespace checkpoint_detail
}  // namespace dspp
