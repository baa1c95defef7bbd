// Sharded checkpoints: CheckpointWriter (one shard per process), the manifest, CheckpointReader
// (any element range from whichever shards hold it) and the `latest` file.
#include <dspp/checkpoint.h>
#include <dspp/error.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "checkpoint/durable.h"

namespace dspp {

namespace cd = checkpoint_detail;

namespace {

constexpr const char* kManifestFile = "manifest.json";
constexpr const char* kLatestFile = "latest";
constexpr const char* kFormat = "dspp-checkpoint";

// A tag or shard file name becomes one path component: nothing that climbs out or nests.
bool plain_name(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s) {
    if (c == '/' || static_cast<unsigned char>(c) < 0x20) return false;
  }
  return true;
}

std::string range_text(int64_t begin, int64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

// ---- JSON of pieces and shard summaries --------------------------------------------------------
template <class W>
void write_piece(W& w, const CheckpointPiece& p) {
  w.StartObject();
  w.Key("name");
  w.String(p.name.c_str(), static_cast<rapidjson::SizeType>(p.name.size()));
  w.Key("key");
  w.String(p.key.c_str(), static_cast<rapidjson::SizeType>(p.key.size()));
  w.Key("dtype");
  w.String(safetensors_dtype_name(p.dtype));
  w.Key("shape");
  w.StartArray();
  for (int64_t d : p.shape) w.Int64(d);
  w.EndArray();
  w.Key("start");
  w.Int64(p.start);
  w.Key("count");
  w.Int64(p.count);
  w.EndObject();
}

template <class W>
void write_summary(W& w, const ShardSummary& s) {
  w.StartObject();
  w.Key("file");
  w.String(s.file.c_str(), static_cast<rapidjson::SizeType>(s.file.size()));
  w.Key("rank");
  w.Int(s.rank);
  w.Key("bytes");
  w.Uint64(s.bytes);
  w.Key("crc32c");
  w.Uint(s.crc32c);
  w.Key("pieces");
  w.StartArray();
  for (const CheckpointPiece& p : s.pieces) write_piece(w, p);
  w.EndArray();
  w.EndObject();
}

// Reads JSON written above; `where` prefixes every error ("manifest '<path>'").
class JsonIn {
 public:
  JsonIn(std::string where, Errc code) : where_(std::move(where)), code_(code) {}

  [[noreturn]] void fail(const std::string& msg) const { throw Error(code_, where_ + ": " + msg); }

  const rapidjson::Value& member(const rapidjson::Value& obj, const char* key,
                                 const std::string& ctx) const {
    if (!obj.IsObject()) fail(ctx + " is not an object");
    const auto it = obj.FindMember(key);
    if (it == obj.MemberEnd()) fail(ctx + " has no \"" + key + "\"");
    return it->value;
  }
  std::string str(const rapidjson::Value& obj, const char* key, const std::string& ctx) const {
    const rapidjson::Value& v = member(obj, key, ctx);
    if (!v.IsString()) fail(ctx + ": \"" + key + "\" is not a string");
    return std::string(v.GetString(), v.GetStringLength());
  }
  int64_t i64(const rapidjson::Value& obj, const char* key, const std::string& ctx) const {
    const rapidjson::Value& v = member(obj, key, ctx);
    if (!v.IsInt64()) fail(ctx + ": \"" + key + "\" is not an integer");
    return v.GetInt64();
  }
  uint64_t u64(const rapidjson::Value& obj, const char* key, const std::string& ctx) const {
    const rapidjson::Value& v = member(obj, key, ctx);
    if (!v.IsUint64()) fail(ctx + ": \"" + key + "\" is not a non-negative integer");
    return v.GetUint64();
  }
  int small_int(const rapidjson::Value& obj, const char* key, const std::string& ctx) const {
    const rapidjson::Value& v = member(obj, key, ctx);
    if (!v.IsInt()) fail(ctx + ": \"" + key + "\" is not an integer");
    return v.GetInt();
  }
  const rapidjson::Value& array(const rapidjson::Value& obj, const char* key,
                                const std::string& ctx) const {
    const rapidjson::Value& v = member(obj, key, ctx);
    if (!v.IsArray()) fail(ctx + ": \"" + key + "\" is not an array");
    return v;
  }

  CheckpointPiece piece(const rapidjson::Value& v, const std::string& ctx) const {
    CheckpointPiece p;
    p.name = str(v, "name", ctx);
    const std::string what = ctx + " (tensor '" + p.name + "')";
    p.key = str(v, "key", what);
    const std::string dtype = str(v, "dtype", what);
    const std::optional<dspp_dtype> dt = dtype_from_safetensors_name(dtype);
    if (!dt) fail(what + ": unknown dtype '" + dtype + "'");
    p.dtype = *dt;
    for (const rapidjson::Value& d : array(v, "shape", what).GetArray()) {
      if (!d.IsInt64() || d.GetInt64() < 0) fail(what + ": bad dimension in \"shape\"");
      p.shape.push_back(d.GetInt64());
    }
    p.start = i64(v, "start", what);
    p.count = i64(v, "count", what);
    int64_t numel = 0;
    try {
      numel = cd::checked_numel(p.shape, what);
    } catch (const Error& e) {
      fail(e.what());
    }
    if (p.start < 0 || p.count < 0 || p.count > numel || p.start > numel - p.count) {
      fail(what + ": elements " + range_text(p.start, p.start + p.count) + " lie outside its " +
           std::to_string(numel) + " elements");
    }
    return p;
  }

  ShardSummary summary(const rapidjson::Value& v, const std::string& ctx) const {
    ShardSummary s;
    s.file = str(v, "file", ctx);
    if (!plain_name(s.file)) fail(ctx + ": file '" + s.file + "' is not a plain file name");
    const std::string what = ctx + " ('" + s.file + "')";
    s.rank = small_int(v, "rank", what);
    s.bytes = u64(v, "bytes", what);
    const uint64_t crc = u64(v, "crc32c", what);
    if (crc > 0xffffffffu) fail(what + ": \"crc32c\" is not a 32-bit value");
    s.crc32c = static_cast<uint32_t>(crc);
    for (const rapidjson::Value& p : array(v, "pieces", what).GetArray()) {
      s.pieces.push_back(piece(p, what));
    }
    return s;
  }

 private:
  std::string where_;
  Errc code_;
};

// One shape and dtype per logical tensor across all shards, and one file per shard.
void check_consistent(const std::vector<ShardSummary>& shards, const std::string& where) {
  std::map<std::string, const CheckpointPiece*> first;
  std::set<std::string> files;
  for (const ShardSummary& s : shards) {
    if (!files.insert(s.file).second) {
      throw Error(Errc::kInvalidArgument, where + ": shard file '" + s.file + "' listed twice");
    }
    for (const CheckpointPiece& p : s.pieces) {
      const auto [it, inserted] = first.emplace(p.name, &p);
      if (inserted) continue;
      const CheckpointPiece& q = *it->second;
      if (q.shape != p.shape || q.dtype != p.dtype) {
        throw Error(Errc::kInvalidArgument,
                    where + ": tensor '" + p.name + "' is " + dtype_name(p.dtype) +
                        cd::shape_text(p.shape) + " in shard '" + s.file + "' but " +
                        dtype_name(q.dtype) + cd::shape_text(q.shape) + " elsewhere");
      }
    }
  }
}

std::string read_text_file(const std::filesystem::path& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Errc::kIo, "cannot open " + what + " '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error(Errc::kIo, "cannot read " + what + " '" + path.string() + "'");
  return s.str();
}

}  // namespace

std::string shard_summary_to_json(const ShardSummary& summary) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  write_summary(w, summary);
  return std::string(buf.GetString(), buf.GetSize());
}

ShardSummary shard_summary_from_json(const std::string& json) {
  const JsonIn in("shard summary", Errc::kInvalidArgument);
  rapidjson::Document doc;
  doc.Parse(json.c_str(), json.size());
  if (doc.HasParseError()) in.fail("not valid JSON");
  return in.summary(doc, "the summary");
}

// ---- CheckpointWriter ---------------------------------------------------------------------------
void CheckpointWriter::add(const std::string& name, const Tensor& full) {
  if (!full.defined()) {
    throw Error(Errc::kInvalidArgument, "checkpoint tensor '" + name + "': undefined tensor");
  }
  add_piece(name, full, full.shape(), 0);
}

void CheckpointWriter::add_piece(const std::string& name, const Tensor& data,
                                 const std::vector<int64_t>& full_shape, int64_t start) {
  const std::string what = "checkpoint tensor '" + name + "'";
  if (!data.defined()) throw Error(Errc::kInvalidArgument, what + ": undefined tensor");
  if (data.device().type != DSPP_DEVICE_CPU) {
    throw Error(Errc::kInvalidArgument, what + ": the piece is on " + device_name(data.device()) +
                                            "; copy it to host memory first");
  }
  add_raw(name, data.numel() > 0 ? data.data() : nullptr, data.dtype(), data.numel(), full_shape,
          start, data);
}

void CheckpointWriter::add_piece(const std::string& name, const dspp_tensor_view& data,
                                 const std::vector<int64_t>& full_shape, int64_t start) {
  const std::string what = "checkpoint tensor '" + name + "'";
  if (data.device.type != DSPP_DEVICE_CPU) {
    throw Error(Errc::kInvalidArgument, what + ": the piece is on " + device_name(data.device) +
                                            "; copy it to host memory first");
  }
  if (data.ndim < 0 || data.ndim > DSPP_MAX_DIMS) {
    throw Error(Errc::kInvalidArgument,
                what + ": view with " + std::to_string(data.ndim) + " dims");
  }
  if (data.dtype < DSPP_F32 || data.dtype > DSPP_F64) {
    throw Error(Errc::kInvalidArgument, what + ": unknown dtype " + std::to_string(data.dtype));
  }
  const std::vector<int64_t> shape(data.shape, data.shape + data.ndim);
  const int64_t count = cd::checked_numel(shape, what);
  if (count > 0 && data.data == nullptr) {
    throw Error(Errc::kInvalidArgument, what + ": view without data");
  }
  add_raw(name, data.data, static_cast<dspp_dtype>(data.dtype), count, full_shape, start, Tensor());
}

void CheckpointWriter::add_raw(const std::string& name, const void* data, dspp_dtype dtype,
                               int64_t count, const std::vector<int64_t>& full_shape, int64_t start,
                               Tensor keep) {
  const std::string what = "checkpoint tensor '" + name + "'";
  if (name.empty()) throw Error(Errc::kInvalidArgument, "checkpoint tensor with an empty name");
  const int64_t numel = cd::checked_numel(full_shape, what);
  if (start < 0 || count > numel || start > numel - count) {
    throw Error(Errc::kInvalidArgument, what + ": piece " + range_text(start, start + count) +
                                            " lies outside its " + std::to_string(numel) +
                                            " elements (shape " + cd::shape_text(full_shape) + ")");
  }
  for (const CheckpointPiece& p : pieces_) {
    if (p.name != name) continue;
    if (p.shape != full_shape || p.dtype != dtype) {
      throw Error(Errc::kInvalidArgument, what + ": piece is " + dtype_name(dtype) +
                                              cd::shape_text(full_shape) + ", an earlier piece " +
                                              dtype_name(p.dtype) + cd::shape_text(p.shape));
    }
    // Overlap within one shard is a caller bug (the same elements added twice).
    if (start < p.start + p.count && p.start < start + count) {
      throw Error(Errc::kInvalidArgument, what + ": piece " + range_text(start, start + count) +
                                              " overlaps piece " +
                                              range_text(p.start, p.start + p.count));
    }
  }
  CheckpointPiece p;
  p.name = name;
  p.shape = full_shape;
  p.dtype = dtype;
  p.start = start;
  p.count = count;
  // A whole tensor keeps its name and shape in the file (readable by any safetensors tool); a
  // part is stored flat under name@start.
  p.key = (start == 0 && count == numel) ? name : name + "@" + std::to_string(start);
  pieces_.push_back(std::move(p));
  data_.push_back(data);
  keep_.push_back(std::move(keep));
}

std::string CheckpointWriter::shard_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05d.safetensors", rank);
  return buf;
}

ShardSummary CheckpointWriter::write_shard(const std::filesystem::path& dir, int rank) const {
  if (rank < 0) throw Error(Errc::kInvalidArgument, "write_shard: negative rank");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw Error(Errc::kIo,
                "cannot create checkpoint folder '" + dir.string() + "': " + ec.message());
  }
  ShardSummary summary;
  summary.file = shard_file_name(rank);
  summary.rank = rank;
  summary.pieces = pieces_;

  std::vector<SafetensorsEntry> entries;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const CheckpointPiece& p = pieces_[i];
    SafetensorsEntry e;
    e.name = p.key;
    e.dtype = p.dtype;
    e.shape = p.key == p.name ? p.shape : std::vector<int64_t>{p.count};
    e.data = data_[i];
    entries.push_back(std::move(e));
  }
  // The shard describes its own pieces too, so a lone shard file still says what it holds.
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartArray();
  for (const CheckpointPiece& p : pieces_) write_piece(w, p);
  w.EndArray();
  const std::map<std::string, std::string> metadata = {
      {"format", "dspp-shard"},
      {"format_version", std::to_string(kCheckpointFormatVersion)},
      {"rank", std::to_string(rank)},
      {"pieces", std::string(buf.GetString(), buf.GetSize())}};

  const FileSummary file = cd::write_safetensors_file(dir / summary.file, entries, metadata, rank);
  summary.bytes = file.bytes;
  summary.crc32c = file.crc32c;
  cd::crash_point("shard_written", rank);
  return summary;
}

// ---- manifest -----------------------------------------------------------------------------------
void write_manifest(const std::filesystem::path& dir, const std::vector<ShardSummary>& shards,
                    const CheckpointMeta& meta) {
  const std::filesystem::path path = dir / kManifestFile;
  const std::string where = "checkpoint manifest '" + path.string() + "'";
  check_consistent(shards, where);
  rapidjson::Document counters;
  counters.Parse(meta.counters_json.c_str(), meta.counters_json.size());
  if (counters.HasParseError() || !counters.IsObject()) {
    throw Error(Errc::kInvalidArgument, where + ": the counters are not a JSON object: " +
                                            meta.counters_json.substr(0, 200));
  }

  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
  w.SetIndent(' ', 2);
  w.SetFormatOptions(rapidjson::kFormatSingleLineArray);  // shapes stay on one line
  w.StartObject();
  w.Key("format");
  w.String(kFormat);
  w.Key("format_version");
  w.Int(kCheckpointFormatVersion);
  w.Key("dspp_version");
  w.String(DSPP_VERSION);
  w.Key("tag");
  w.String(meta.tag.c_str(), static_cast<rapidjson::SizeType>(meta.tag.size()));
  w.Key("world");
  w.StartObject();
  w.Key("world_size");
  w.Int(meta.world.world_size);
  w.Key("dp");
  w.Int(meta.world.dp);
  w.Key("tp");
  w.Int(meta.world.tp);
  w.Key("pp");
  w.Int(meta.world.pp);
  w.EndObject();
  w.Key("zero_stage");
  w.Int(meta.zero_stage);
  w.Key("config");
  w.String(meta.config_json.c_str(), static_cast<rapidjson::SizeType>(meta.config_json.size()));
  w.Key("counters");
  counters.Accept(w);
  w.Key("shards");
  w.StartArray();
  for (const ShardSummary& s : shards) write_summary(w, s);
  w.EndArray();
  w.EndObject();
  const std::string text = std::string(buf.GetString(), buf.GetSize()) + "\n";

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    throw Error(Errc::kIo,
                "cannot create checkpoint folder '" + dir.string() + "': " + ec.message());
  }
  cd::DurableFile file(path, 0);
  file.write(text.data(), text.size());
  file.commit();
  // The tag folder's own entry in the save folder must be durable before `latest` names it.
  const std::filesystem::path abs = std::filesystem::absolute(dir);
  if (abs.has_parent_path()) cd::fsync_dir(abs.parent_path());
  cd::crash_point("manifest_written", 0);
}

// ---- CheckpointReader
// -----------------------------------------------------------------------------
struct CheckpointReader::Impl {
  struct PieceRef {
    size_t shard;
    const CheckpointPiece* piece;
  };
  struct TensorEntry {
    std::vector<int64_t> shape;
    dspp_dtype dtype = DSPP_F32;
    int64_t numel = 0;
    std::vector<PieceRef> pieces;  // by start
  };

  std::filesystem::path dir;
  Manifest manifest;
  std::map<std::string, TensorEntry> tensors;
  std::vector<std::unique_ptr<SafetensorsFile>> files;  // opened on first use

  const TensorEntry& tensor(const std::string& name) const {
    const auto it = tensors.find(name);
    if (it == tensors.end()) {
      throw Error(Errc::kInvalidArgument,
                  "checkpoint '" + dir.string() + "' has no tensor '" + name + "'");
    }
    return it->second;
  }

  void load_manifest() {
    const std::filesystem::path path = dir / kManifestFile;
    if (!std::filesystem::exists(path)) {
      throw Error(Errc::kIo, "checkpoint folder '" + dir.string() +
                                 "' has no manifest.json (not a checkpoint, or its save never "
                                 "finished)");
    }
    const std::string text = read_text_file(path, "checkpoint manifest");
    const JsonIn in("checkpoint manifest '" + path.string() + "'", Errc::kIo);
    rapidjson::Document doc;
    doc.Parse(text.c_str(), text.size());
    if (doc.HasParseError()) {
      in.fail(std::string("not valid JSON (at byte ") + std::to_string(doc.GetErrorOffset()) +
              ": " + rapidjson::GetParseError_En(doc.GetParseError()) + ")");
    }
    if (in.str(doc, "format", "the manifest") != kFormat) in.fail("not a dspp checkpoint manifest");
    manifest.format_version = in.small_int(doc, "format_version", "the manifest");
    if (manifest.format_version > kCheckpointFormatVersion) {
      in.fail("format version " + std::to_string(manifest.format_version) +
              " is newer than this dspp reads (" + std::to_string(kCheckpointFormatVersion) +
              "): written by dspp " + in.str(doc, "dspp_version", "the manifest"));
    }
    manifest.dspp_version = in.str(doc, "dspp_version", "the manifest");
    manifest.meta.tag = in.str(doc, "tag", "the manifest");
    const rapidjson::Value& world = in.member(doc, "world", "the manifest");
    manifest.meta.world.world_size = in.small_int(world, "world_size", "\"world\"");
    manifest.meta.world.dp = in.small_int(world, "dp", "\"world\"");
    manifest.meta.world.tp = in.small_int(world, "tp", "\"world\"");
    manifest.meta.world.pp = in.small_int(world, "pp", "\"world\"");
    manifest.meta.zero_stage = in.small_int(doc, "zero_stage", "the manifest");
    manifest.meta.config_json = in.str(doc, "config", "the manifest");
    const rapidjson::Value& counters = in.member(doc, "counters", "the manifest");
    if (!counters.IsObject()) in.fail("\"counters\" is not an object");
    rapidjson::StringBuffer cbuf;
    rapidjson::Writer<rapidjson::StringBuffer> cw(cbuf);
    counters.Accept(cw);
    manifest.meta.counters_json.assign(cbuf.GetString(), cbuf.GetSize());
    const rapidjson::Value& shards = in.array(doc, "shards", "the manifest");
    for (rapidjson::SizeType i = 0; i < shards.Size(); ++i) {
      manifest.shards.push_back(in.summary(shards[i], "shard " + std::to_string(i)));
    }
    try {
      check_consistent(manifest.shards, "checkpoint manifest '" + path.string() + "'");
    } catch (const Error& e) {
      throw Error(Errc::kIo, e.what());
    }

    for (size_t s = 0; s < manifest.shards.size(); ++s) {
      for (const CheckpointPiece& p : manifest.shards[s].pieces) {
        TensorEntry& t = tensors[p.name];
        if (t.pieces.empty()) {
          t.shape = p.shape;
          t.dtype = p.dtype;
          t.numel = cd::checked_numel(p.shape, p.name);
        }
        t.pieces.push_back(PieceRef{s, &p});
      }
    }
    for (auto& [name, t] : tensors) {
      std::sort(t.pieces.begin(), t.pieces.end(), [](const PieceRef& a, const PieceRef& b) {
        if (a.piece->start != b.piece->start) return a.piece->start < b.piece->start;
        return a.piece->count > b.piece->count;
      });
    }
    files.resize(manifest.shards.size());
  }

  // Maps shard s on first use: its size and checksum against the manifest, then every piece the
  // manifest places in it against the file's own header.
  const SafetensorsFile& shard(size_t s) {
    if (files[s]) return *files[s];
    const ShardSummary& summary = manifest.shards[s];
    const std::filesystem::path path = dir / summary.file;
    const std::string where = "checkpoint shard '" + path.string() + "'";
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) throw Error(Errc::kIo, where + ": " + ec.message());
    if (size != summary.bytes) {
      throw Error(Errc::kIo, where + ": " + std::to_string(size) + " bytes, the manifest records " +
                                 std::to_string(summary.bytes) + " (truncated or replaced)");
    }
    auto file = std::make_unique<SafetensorsFile>(path, summary.crc32c);
    for (const CheckpointPiece& p : summary.pieces) {
      const std::string what = where + ": tensor '" + p.name + "'";
      if (!file->has(p.key))
        throw Error(Errc::kIo, what + ": no entry '" + p.key + "' in the file");
      const SafetensorsFile::Info& info = file->info(p.key);
      const int64_t n = cd::checked_numel(info.shape, what);
      if (info.dtype != p.dtype || n != p.count) {
        throw Error(Errc::kIo, what + ": the file holds " + dtype_name(info.dtype) +
                                   cd::shape_text(info.shape) + ", the manifest says " +
                                   std::to_string(p.count) + " " + dtype_name(p.dtype) +
                                   " elements");
      }
    }
    files[s] = std::move(file);
    return *files[s];
  }

  // Walks the pieces covering [begin, end) in order; calls copy(piece, from, to) for each covered
  // run and gap(from, to) for each uncovered one.
  template <class Copy, class Gap>
  static void walk(const TensorEntry& t, int64_t begin, int64_t end, Copy&& copy, Gap&& gap) {
    int64_t pos = begin;
    for (const PieceRef& r : t.pieces) {
      if (pos >= end) break;
      const int64_t pbegin = r.piece->start;
      const int64_t pend = pbegin + r.piece->count;
      if (pend <= pos) continue;
      if (pbegin > pos) {
        const int64_t stop = std::min(pbegin, end);
        gap(pos, stop);
        pos = stop;
        if (pos >= end) break;
      }
      const int64_t stop = std::min(pend, end);
      copy(r, pos, stop);
      pos = stop;
    }
    if (pos < end) gap(pos, end);
  }
};

CheckpointReader::CheckpointReader(const std::filesystem::path& tag_dir)
    : impl_(std::make_unique<Impl>()) {
  impl_->dir = tag_dir;
  impl_->load_manifest();
}

CheckpointReader::~CheckpointReader() = default;

const std::filesystem::path& CheckpointReader::dir() const {
  return impl_->dir;
}
const Manifest& CheckpointReader::manifest() const {
  return impl_->manifest;
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : impl_->tensors) out.push_back(name);
  return out;
}

bool CheckpointReader::has(const std::string& name) const {
  return impl_->tensors.count(name) > 0;
}
const std::vector<int64_t>& CheckpointReader::shape(const std::string& name) const {
  return impl_->tensor(name).shape;
}
dspp_dtype CheckpointReader::dtype(const std::string& name) const {
  return impl_->tensor(name).dtype;
}
int64_t CheckpointReader::numel(const std::string& name) const {
  return impl_->tensor(name).numel;
}

void CheckpointReader::read_range(const std::string& name, int64_t start, int64_t count, void* dst,
                                  dspp_dtype dst_dtype) const {
  const Impl::TensorEntry& t = impl_->tensor(name);
  const std::string what = "checkpoint '" + impl_->dir.string() + "': tensor '" + name + "'";
  if (start < 0 || count < 0 || count > t.numel || start > t.numel - count) {
    throw Error(Errc::kInvalidArgument, what + ": range " + range_text(start, start + count) +
                                            " is outside its " + std::to_string(t.numel) +
                                            " elements");
  }
  if (!cd::can_convert(t.dtype, dst_dtype)) {
    throw Error(Errc::kInvalidArgument, what + " is " + dtype_name(t.dtype) +
                                            " and cannot be read as " + dtype_name(dst_dtype));
  }
  // Coverage first, so a missing range fails before any shard is mapped.
  Impl::walk(
      t, start, start + count, [](const Impl::PieceRef&, int64_t, int64_t) {},
      [&](int64_t a, int64_t b) {
        throw Error(Errc::kIo, what + ": elements " + range_text(a, b) +
                                   " are in no shard (reading " + range_text(start, start + count) +
                                   " of " + std::to_string(t.numel) + ")");
      });
  const size_t src_size = dtype_size(t.dtype);
  const size_t dst_size = dtype_size(dst_dtype);
  Impl::walk(
      t, start, start + count,
      [&](const Impl::PieceRef& r, int64_t a, int64_t b) {
        const SafetensorsFile& file = impl_->shard(r.shard);
        const auto* src = static_cast<const char*>(file.data(r.piece->key)) +
                          static_cast<size_t>(a - r.piece->start) * src_size;
        auto* out = static_cast<char*>(dst) + static_cast<size_t>(a - start) * dst_size;
        cd::convert(src, t.dtype, out, dst_dtype, static_cast<size_t>(b - a));
      },
      [](int64_t, int64_t) {});
}

void CheckpointReader::read_range(const std::string& name, int64_t start, int64_t count,
                                  const Tensor& dst) const {
  const std::string what = "checkpoint tensor '" + name + "'";
  if (!dst.defined() || dst.device().type != DSPP_DEVICE_CPU) {
    throw Error(Errc::kInvalidArgument, what + ": the destination must be a host tensor");
  }
  if (dst.numel() != count) {
    throw Error(Errc::kInvalidArgument,
                what + ": reading " + std::to_string(count) + " elements into " + dst.describe());
  }
  read_range(name, start, count, count > 0 ? dst.data() : nullptr, dst.dtype());
}

Tensor CheckpointReader::read(const std::string& name, dspp_dtype dtype) const {
  const Impl::TensorEntry& t = impl_->tensor(name);
  Tensor out = Tensor::empty(t.shape, dtype);
  read_range(name, 0, t.numel, out);
  return out;
}

std::vector<std::pair<int64_t, int64_t>> CheckpointReader::missing_ranges(
    const std::string& name) const {
  const Impl::TensorEntry& t = impl_->tensor(name);
  std::vector<std::pair<int64_t, int64_t>> out;
  Impl::walk(
      t, 0, t.numel, [](const Impl::PieceRef&, int64_t, int64_t) {},
      [&](int64_t a, int64_t b) { out.emplace_back(a, b); });
  return out;
}

void CheckpointReader::verify_shard(size_t index) const {
  if (index >= impl_->files.size()) {
    throw Error(Errc::kInvalidArgument,
                "checkpoint '" + impl_->dir.string() + "' has no shard " + std::to_string(index));
  }
  impl_->shard(index);
}

// ---- latest
// ---------------------------------------------------------------------------------------
void write_latest(const std::filesystem::path& save_dir, const std::string& tag) {
  if (!plain_name(tag)) {
    throw Error(Errc::kInvalidArgument, "checkpoint tag '" + tag + "' is not a plain folder name");
  }
  cd::crash_point("before_latest", 0);
  std::error_code ec;
  std::filesystem::create_directories(save_dir, ec);
  if (ec) {
    throw Error(Errc::kIo,
                "cannot create checkpoint folder '" + save_dir.string() + "': " + ec.message());
  }
  cd::DurableFile file(save_dir / kLatestFile, 0);
  file.write(tag.data(), tag.size());
  file.commit();
}

std::optional<std::string> read_latest(const std::filesystem::path& save_dir) {
  const std::filesystem::path path = save_dir / kLatestFile;
  if (!std::filesystem::exists(path)) return std::nullopt;
  std::string tag = read_text_file(path, "checkpoint tag file");
  // DeepSpeed writes no newline; a hand-edited file may have one.
  while (!tag.empty() && (tag.back() == '\n' || tag.back() == '\r' || tag.back() == ' ')) {
    tag.pop_back();
  }
  if (!plain_name(tag)) {
    throw Error(Errc::kIo, "checkpoint tag file '" + path.string() + "' holds '" + tag +
                               "', not a plain folder name");
  }
  return tag;
}

std::filesystem::path checkpoint_tag_dir(const std::filesystem::path& save_dir,
                                         const std::string& tag) {
  if (!tag.empty()) {
    if (!plain_name(tag)) {
      throw Error(Errc::kInvalidArgument,
                  "checkpoint tag '" + tag + "' is not a plain folder name");
    }
    return save_dir / tag;
  }
  const std::optional<std::string> latest = read_latest(save_dir);
  if (!latest) {
    throw Error(Errc::kIo, "'" + (save_dir / kLatestFile).string() +
                               "' does not exist: no checkpoint was saved there (or name a tag)");
  }
  return save_dir / *latest;
}

}  // namespace dspp
