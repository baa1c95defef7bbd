// The safetensors layout: 8-byte little-endian header length N, N bytes of JSON (padded with
// spaces to a multiple of 8), then the raw tensor bytes. The JSON maps each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section) and may
// hold "__metadata__": {string: string}.
#include <dspp/checkpoint.h>
#include <dspp/error.h>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

#include "checkpoint/durable.h"
#include "monitor/crc32c.h"

namespace dspp {

namespace cd = checkpoint_detail;

namespace {

// The reference implementation refuses larger headers; so do we, so both read the same files.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace

const char* safetensors_dtype_name(dspp_dtype dtype) {
  switch (dtype) {
    case DSPP_F32:
      return "F32";
    case DSPP_F16:
      return "F16";
    case DSPP_BF16:
      return "BF16";
    case DSPP_I32:
      return "I32";
    case DSPP_I64:
      return "I64";
    case DSPP_U8:
      return "U8";
    case DSPP_F64:
      return "F64";
  }
  throw Error(Errc::kInvalidArgument, "unknown dtype " + std::to_string(dtype));
}

std::optional<dspp_dtype> dtype_from_safetensors_name(std::string_view name) {
  for (dspp_dtype t : {DSPP_F32, DSPP_F16, DSPP_BF16, DSPP_I32, DSPP_I64, DSPP_U8, DSPP_F64}) {
    if (name == safetensors_dtype_name(t)) return t;
  }
  return std::nullopt;
}

namespace checkpoint_detail {

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      throw Error(Errc::kInvalidArgument,
                  what + ": negative dimension in shape " + shape_text(shape));
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / 8 / d) {
      throw Error(Errc::kInvalidArgument, what + ": shape " + shape_text(shape) + " is too large");
    }
    n *= d;
  }
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

FileSummary write_safetensors_file(const std::filesystem::path& path,
                                   const std::vector<SafetensorsEntry>& tensors,
                                   const std::map<std::string, std::string>& metadata,
                                   int crash_rank) {
  const std::string where = "safetensors file '" + path.string() + "'";
  std::set<std::string> seen;
  std::vector<size_t> order;
  std::vector<uint64_t> nbytes(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsEntry& t = tensors[i];
    const std::string what = where + ": tensor '" + t.name + "'";
    if (t.name.empty() || t.name == "__metadata__") {
      throw Error(Errc::kInvalidArgument, what + ": not a usable tensor name");
    }
    if (!seen.insert(t.name).second) throw Error(Errc::kInvalidArgument, what + ": given twice");
    safetensors_dtype_name(t.dtype);  // throws on an unknown dtype
    nbytes[i] = static_cast<uint64_t>(checked_numel(t.shape, what)) * dtype_size(t.dtype);
    if (t.data == nullptr && !t.fill && nbytes[i] != 0) {
      throw Error(Errc::kInvalidArgument, what + ": no data");
    }
    order.push_back(i);
  }
  // Largest elements first: with the header padded to 8 bytes, every tensor then starts at a
  // multiple of its element size.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const size_t sa = dtype_size(tensors[a].dtype);
    const size_t sb = dtype_size(tensors[b].dtype);
    if (sa != sb) return sa > sb;
    return tensors[a].name < tensors[b].name;
  });

  rapidjson::StringBuffer json;
  rapidjson::Writer<rapidjson::StringBuffer> w(json);
  w.StartObject();
  if (!metadata.empty()) {
    w.Key("__metadata__");
    w.StartObject();
    for (const auto& [k, v] : metadata) {
      w.Key(k.c_str(), static_cast<rapidjson::SizeType>(k.size()));
      w.String(v.c_str(), static_cast<rapidjson::SizeType>(v.size()));
    }
    w.EndObject();
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const SafetensorsEntry& t = tensors[i];
    w.Key(t.name.c_str(), static_cast<rapidjson::SizeType>(t.name.size()));
    w.StartObject();
    w.Key("dtype");
    w.String(safetensors_dtype_name(t.dtype));
    w.Key("shape");
    w.StartArray();
    for (int64_t d : t.shape) w.Int64(d);
    w.EndArray();
    w.Key("data_offsets");
    w.StartArray();
    w.Uint64(offset);
    w.Uint64(offset + nbytes[i]);
    w.EndArray();
    w.EndObject();
    offset += nbytes[i];
  }
  w.EndObject();
  std::string header(json.GetString(), json.GetSize());
  header.append((8 - header.size() % 8) % 8, ' ');

  cd::DurableFile file(path, crash_rank);
  uint8_t len[8];
  const uint64_t n = header.size();
  for (int b = 0; b < 8; ++b) len[b] = static_cast<uint8_t>(n >> (8 * b));
  file.write(len, 8);
  file.write(header.data(), header.size());
  std::vector<char> scratch;
  for (size_t i : order) {
    const SafetensorsEntry& t = tensors[i];
    if (nbytes[i] == 0) continue;
    if (t.data != nullptr) {
      file.write(t.data, nbytes[i]);
      continue;
    }
    scratch.resize(nbytes[i]);
    t.fill(scratch.data());
    file.write(scratch.data(), nbytes[i]);
  }
  FileSummary summary{path, file.bytes(), file.crc32c()};
  file.commit();
  return summary;
}

}  // namespace checkpoint_detail

FileSummary write_safetensors(const std::filesystem::path& path,
                              const std::vector<SafetensorsEntry>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  return cd::write_safetensors_file(path, tensors, metadata, 0);
}

// ---- reading
// ----------------------------------------------------------------------------------------
struct SafetensorsFile::Impl {
  std::filesystem::path path;
  void* map = nullptr;
  uint64_t size = 0;
  const uint8_t* data = nullptr;  // the data section
  std::map<std::string, std::string> metadata;
  std::vector<std::string> names;
  std::map<std::string, Info> infos;

  ~Impl() {
    if (map != nullptr) ::munmap(map, size);
  }

  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(Errc::kIo, "safetensors file '" + path.string() + "': " + msg);
  }

  void map_file() {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot open: " + cd::errno_text());
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const std::string err = cd::errno_text();
      ::close(fd);
      fail("cannot stat: " + err);
    }
    size = static_cast<uint64_t>(st.st_size);
    if (size < 8) {
      ::close(fd);
      fail(std::to_string(size) + " bytes, too short for the 8-byte header length (truncated?)");
    }
    map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const std::string err = cd::errno_text();
    ::close(fd);
    if (map == MAP_FAILED) {
      map = nullptr;
      fail("cannot map: " + err);
    }
  }

  void check_crc(uint32_t expected) const {
    const uint32_t got = dspp::crc32c(map, size);
    if (got != expected) {
      fail("checksum mismatch: crc32c " + hex32(got) + ", the manifest records " + hex32(expected) +
           " (the file is corrupt or was replaced)");
    }
  }

  void parse_header() {
    const auto* bytes = static_cast<const uint8_t*>(map);
    uint64_t n = 0;
    for (int b = 0; b < 8; ++b) n |= static_cast<uint64_t>(bytes[b]) << (8 * b);
    if (n > kMaxHeaderBytes) fail("header length " + std::to_string(n) + " is implausible");
    if (n > size - 8) {
      fail("header length " + std::to_string(n) + " runs past the end of the file (" +
           std::to_string(size) + " bytes): truncated or not a safetensors file");
    }
    const char* text = reinterpret_cast<const char*>(bytes + 8);
    if (n == 0 || text[0] != '{') fail("the header is not a JSON object");
    rapidjson::Document doc;
    doc.Parse(text, static_cast<size_t>(n));
    if (doc.HasParseError()) {
      fail(std::string("the header is not valid JSON (at byte ") +
           std::to_string(8 + doc.GetErrorOffset()) + ": " +
           rapidjson::GetParseError_En(doc.GetParseError()) + ")");
    }
    if (!doc.IsObject()) fail("the header is not a JSON object");
    data = bytes + 8 + n;
    const uint64_t data_size = size - 8 - n;

    std::vector<std::pair<uint64_t, std::string>> by_offset;
    for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
      const std::string name(m->name.GetString(), m->name.GetStringLength());
      if (name == "__metadata__") {
        if (!m->value.IsObject()) fail("__metadata__ is not an object");
        for (auto e = m->value.MemberBegin(); e != m->value.MemberEnd(); ++e) {
          if (!e->value.IsString()) fail("__metadata__ values must be strings");
          metadata[e->name.GetString()] =
              std::string(e->value.GetString(), e->value.GetStringLength());
        }
        continue;
      }
      const std::string what = "tensor '" + name + "'";
      if (infos.count(name)) fail(what + " is listed twice");
      const rapidjson::Value& v = m->value;
      if (!v.IsObject() || !v.HasMember("dtype") || !v.HasMember("shape") ||
          !v.HasMember("data_offsets")) {
        fail(what + ": needs \"dtype\", \"shape\" and \"data_offsets\"");
      }
      Info info;
      if (!v["dtype"].IsString()) fail(what + ": \"dtype\" is not a string");
      const std::optional<dspp_dtype> dt = dtype_from_safetensors_name(v["dtype"].GetString());
      if (!dt) fail(what + ": dtype '" + v["dtype"].GetString() + "' is not one dspp reads");
      info.dtype = *dt;
      if (!v["shape"].IsArray()) fail(what + ": \"shape\" is not an array");
      for (const rapidjson::Value& d : v["shape"].GetArray()) {
        if (!d.IsInt64() || d.GetInt64() < 0) fail(what + ": bad dimension in \"shape\"");
        info.shape.push_back(d.GetInt64());
      }
      const rapidjson::Value& off = v["data_offsets"];
      if (!off.IsArray() || off.Size() != 2 || !off[0].IsUint64() || !off[1].IsUint64()) {
        fail(what + ": \"data_offsets\" is not [begin, end]");
      }
      info.begin = off[0].GetUint64();
      info.end = off[1].GetUint64();
      int64_t numel = 0;
      try {
        numel = cd::checked_numel(info.shape, what);
      } catch (const Error& e) {
        fail(e.what());
      }
      const uint64_t expected = static_cast<uint64_t>(numel) * dtype_size(info.dtype);
      if (info.end < info.begin || info.end - info.begin != expected) {
        fail(what + ": data_offsets [" + std::to_string(info.begin) + ", " +
             std::to_string(info.end) + "] do not hold " + std::to_string(expected) +
             " bytes for " + dtype_name(info.dtype) + cd::shape_text(info.shape));
      }
      if (info.end > data_size) {
        fail(what + " ends at data byte " + std::to_string(info.end) +
             " but the data section has " + std::to_string(data_size) +
             " bytes: the file is truncated");
      }
      by_offset.emplace_back(info.begin, name);
      infos.emplace(name, std::move(info));
    }
    // Tensors must tile the data section with no gap or overlap, as the reference reader demands.
    std::sort(by_offset.begin(), by_offset.end());
    uint64_t pos = 0;
    for (const auto& [begin, name] : by_offset) {
      if (begin != pos) {
        fail("tensor '" + name + "' starts at data byte " + std::to_string(begin) +
             " where the previous tensor ends at " + std::to_string(pos) + " (gap or overlap)");
      }
      pos = infos[name].end;
      names.push_back(name);
    }
    if (pos != data_size) {
      fail("the tensors end at data byte " + std::to_string(pos) + " but the data section has " +
           std::to_string(data_size) + " bytes");
    }
  }
};

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path,
                                 std::optional<uint32_t> expected_crc32c)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->map_file();
  if (expected_crc32c) impl_->check_crc(*expected_crc32c);
  impl_->parse_header();
}

SafetensorsFile::~SafetensorsFile() = default;

const std::filesystem::path& SafetensorsFile::path() const {
  return impl_->path;
}
uint64_t SafetensorsFile::file_size() const {
  return impl_->size;
}
const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return impl_->metadata;
}
const std::vector<std::string>& SafetensorsFile::names() const {
  return impl_->names;
}
bool SafetensorsFile::has(const std::string& name) const {
  return impl_->infos.count(name) > 0;
}

const SafetensorsFile::Info& SafetensorsFile::info(const std::string& name) const {
  const auto it = impl_->infos.find(name);
  if (it == impl_->infos.end()) impl_->fail("no tensor '" + name + "'");
  return it->second;
}

const void* SafetensorsFile::data(const std::string& name) const {
  return impl_->data + info(name).begin;
}

}  // namespace dspp
