// Checkpoint storage: CRC-32C against published vectors, safetensors files checked with a parser
// written here, resharding reads compared with data regenerated from its formula, corruption and
// truncation named by file, missing ranges named by tensor, a writer killed at each crash point
// (the previous `latest` must still load), and the ds-checkpoint binary.
#include <dspp/checkpoint.h>
#include <dspp/tensor.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "catch.h"
#include "monitor/crc32c.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// A fresh folder per use; CTest runs test cases of this binary in parallel processes.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("dspp_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// The reference values: element i of the test tensors, regenerated wherever a test compares.
float value_at(int64_t i) {
  return std::sin(0.37f * static_cast<float>(i)) + 0.001f * static_cast<float>(i);
}

// Bit-at-a-time CRC-32C, the definition, to check the library's fast paths.
uint32_t crc32c_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int b = 0; b < 8; ++b) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file parsed here, independently of the library: the layout PyTorch's loader reads.
struct ParsedTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};
struct Parsed {
  uint64_t header_len = 0;
  std::map<std::string, ParsedTensor> tensors;
  std::map<std::string, std::string> metadata;
  std::string data;  // the data section
};

Parsed parse_safetensors(const std::string& bytes) {
  Parsed out;
  REQUIRE(bytes.size() >= 8);
  for (int b = 0; b < 8; ++b) {
    out.header_len |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[b])) << (8 * b);
  }
  REQUIRE(out.header_len % 8 == 0);
  REQUIRE(8 + out.header_len <= bytes.size());
  const std::string header = bytes.substr(8, out.header_len);
  REQUIRE(header.front() == '{');
  rapidjson::Document doc;
  doc.Parse(header.c_str(), header.size());
  REQUIRE_FALSE(doc.HasParseError());
  for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
    const std::string name = m->name.GetString();
    if (name == "__metadata__") {
      for (auto e = m->value.MemberBegin(); e != m->value.MemberEnd(); ++e) {
        out.metadata[e->name.GetString()] = e->value.GetString();
      }
      continue;
    }
    ParsedTensor t;
    t.dtype = m->value["dtype"].GetString();
    for (const auto& d : m->value["shape"].GetArray()) t.shape.push_back(d.GetInt64());
    t.begin = m->value["data_offsets"][0].GetUint64();
    t.end = m->value["data_offsets"][1].GetUint64();
    out.tensors[name] = t;
  }
  out.data = bytes.substr(8 + out.header_len);
  // The offsets tile the data section.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [n, t] : out.tensors) ranges.emplace_back(t.begin, t.end);
  std::sort(ranges.begin(), ranges.end());
  uint64_t pos = 0;
  for (const auto& [b, e] : ranges) {
    REQUIRE(b == pos);
    pos = e;
  }
  REQUIRE(pos == out.data.size());
  return out;
}

std::vector<float> floats_of(const std::string& data, const ParsedTensor& t) {
  std::vector<float> v((t.end - t.begin) / 4);
  std::memcpy(v.data(), data.data() + t.begin, t.end - t.begin);
  return v;
}

// The four-shard checkpoint the resharding and failure tests share. "module/w" (f32 [37, 11])
// in uneven pieces, "module/b" (f32 [5]) whole and replicated in two shards, "module/e" (bf16
// [3, 4]) in two pieces, "optimizer/exp_avg/w" (f32 [37, 11]) in two pieces, "module/step" (i64).
const std::vector<int64_t> kW{37, 11};
const std::vector<std::pair<int64_t, int64_t>> kWRanges{{0, 50}, {50, 150}, {200, 1}, {201, 206}};

uint16_t bf16_bits(float f) {  // only for values exact in bf16
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>(u >> 16);
}

dspp::Tensor f32_range(int64_t start, int64_t count, float scale = 1.0f) {
  dspp::Tensor t = dspp::Tensor::empty({count});
  for (int64_t i = 0; i < count; ++i) t.data<float>()[i] = scale * value_at(start + i);
  return t;
}

std::vector<dspp::ShardSummary> write_four_shards(const fs::path& dir) {
  std::vector<dspp::ShardSummary> summaries;
  for (int rank = 0; rank < 4; ++rank) {
    dspp::CheckpointWriter w;
    const auto [start, count] = kWRanges[static_cast<size_t>(rank)];
    w.add_piece("module/w", f32_range(start, count), kW, start);
    if (rank == 0 || rank == 3) {
      dspp::Tensor b = dspp::Tensor::empty({5});
      for (int i = 0; i < 5; ++i) b.data<float>()[i] = static_cast<float>(i) * 0.5f;
      w.add("module/b", b);
    }
    if (rank == 1 || rank == 2) {
      // bf16 values k/8, exact in bf16 and f32; elements [0, 7) on rank 1, [7, 12) on rank 2.
      const int64_t s = rank == 1 ? 0 : 7;
      const int64_t n = rank == 1 ? 7 : 5;
      std::vector<uint16_t> bits(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) bits[static_cast<size_t>(i)] = bf16_bits((s + i) / 8.0f);
      dspp_tensor_view v{};
      v.data = bits.data();
      v.dtype = DSPP_BF16;
      v.ndim = 1;
      v.shape[0] = n;
      v.device = dspp::cpu_device();
      w.add_piece("module/e", v, {3, 4}, s);
      if (rank == 1) {
        w.add_piece("optimizer/exp_avg/w", f32_range(0, 300, 2.0f), kW, 0);
      } else {
        w.add_piece("optimizer/exp_avg/w", f32_range(300, 107, 2.0f).slice(0, {107}), kW, 300);
      }
      summaries.push_back(w.write_shard(dir, rank));  // the view must live until here
      continue;
    }
    if (rank == 0) {
      dspp::Tensor step = dspp::Tensor::empty({}, DSPP_I64);
      *step.data<int64_t>() = 1234567890123;
      w.add("module/step", step);
    }
    summaries.push_back(w.write_shard(dir, rank));
  }
  return summaries;
}

dspp::CheckpointMeta four_meta(const std::string& tag) {
  dspp::CheckpointMeta meta;
  meta.tag = tag;
  meta.world = {4, 4, 1, 1};
  meta.zero_stage = 2;
  meta.config_json = R"({"train_batch_size": 8, "zero_optimization": {"stage": 2}})";
  meta.counters_json = R"({"global_steps": 10, "skipped_steps": 1})";
  return meta;
}

fs::path save_four(const fs::path& save_dir, const std::string& tag) {
  const fs::path dir = save_dir / tag;
  const std::vector<dspp::ShardSummary> s = write_four_shards(dir);
  dspp::write_manifest(dir, s, four_meta(tag));
  dspp::write_latest(save_dir, tag);
  return dir;
}

void check_w(const dspp::CheckpointReader& r, int64_t start, int64_t count) {
  std::vector<float> got(static_cast<size_t>(count), -999.0f);
  r.read_range("module/w", start, count, got.data(), DSPP_F32);
  for (int64_t i = 0; i < count; ++i) {
    INFO("element " << start + i);
    REQUIRE(got[static_cast<size_t>(i)] == value_at(start + i));
  }
}

using Run = ToolRun;

Run ds_checkpoint(const std::string& args) {
  return run_tool(DS_CHECKPOINT_BIN, args);
}

}  // namespace

TEST_CASE("crc32c matches the published check values", "[checkpoint]") {
  const char* digits = "123456789";
  CHECK(dspp::crc32c(digits, 9) == 0xE3069283u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xff, ascending.
  std::vector<uint8_t> b(32, 0);
  CHECK(dspp::crc32c(b.data(), 32) == 0x8A9136AAu);
  std::fill(b.begin(), b.end(), 0xff);
  CHECK(dspp::crc32c(b.data(), 32) == 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) b[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
  CHECK(dspp::crc32c(b.data(), 32) == 0x46DD794Eu);
  // Every length and alignment against the bit-at-a-time definition; chaining equals one call.
  std::vector<uint8_t> big(1000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t off = 0; off < 9; ++off) {
    for (size_t len : {0, 1, 7, 8, 9, 15, 16, 17, 100, 991}) {
      INFO("offset " << off << " length " << len);
      CHECK(dspp::crc32c(big.data() + off, len) == crc32c_bitwise(big.data() + off, len));
    }
  }
  const uint32_t part = dspp::crc32c(big.data(), 333);
  CHECK(dspp::crc32c(big.data() + 333, 667, part) == dspp::crc32c(big.data(), 1000));
}

TEST_CASE("safetensors files round-trip every dtype in the exact layout", "[checkpoint]") {
  TempDir tmp;
  const fs::path path = tmp.path / "all.safetensors";
  // Distinct bytes per tensor, so a misplaced tensor cannot compare equal.
  const std::vector<dspp_dtype> dtypes{DSPP_F32, DSPP_F16, DSPP_BF16, DSPP_I32,
                                       DSPP_I64, DSPP_U8,  DSPP_F64};
  const std::vector<std::string> names{"F32", "F16", "BF16", "I32", "I64", "U8", "F64"};
  std::vector<std::string> bytes;
  std::vector<dspp::SafetensorsEntry> entries;
  for (size_t k = 0; k < dtypes.size(); ++k) {
    const std::vector<int64_t> shape{3, static_cast<int64_t>(k) + 1};
    std::string b(static_cast<size_t>(3 * (k + 1)) * dspp::dtype_size(dtypes[k]), '\0');
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i * 7 + k * 31 + 1);
    bytes.push_back(b);
    dspp::SafetensorsEntry e;
    e.name = "t_" + names[k];
    e.dtype = dtypes[k];
    e.shape = shape;
    entries.push_back(e);
  }
  for (size_t k = 0; k < dtypes.size(); ++k) entries[k].data = bytes[k].data();
  // One tensor produced by a callback, one scalar, one empty.
  const float scalar = 2.5f;
  entries.push_back({"scalar", DSPP_F32, {}, &scalar, {}});
  entries.push_back({"empty", DSPP_F32, {0, 4}, nullptr, {}});
  entries.push_back({"filled", DSPP_I32, {4}, nullptr, [](void* dst) {
                       for (int i = 0; i < 4; ++i) static_cast<int32_t*>(dst)[i] = 10 * i;
                     }});
  const dspp::FileSummary f =
      dspp::write_safetensors(path, entries, {{"format", "pt"}, {"note", "a \"quoted\" value"}});

  const std::string file = read_file(path);
  CHECK(f.bytes == file.size());
  CHECK(f.crc32c == crc32c_bitwise(reinterpret_cast<const uint8_t*>(file.data()), file.size()));
  // No temporary file is left next to it.
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 1);

  const Parsed p = parse_safetensors(file);
  CHECK(p.metadata.at("format") == "pt");
  CHECK(p.metadata.at("note") == "a \"quoted\" value");
  for (size_t k = 0; k < dtypes.size(); ++k) {
    const ParsedTensor& t = p.tensors.at("t_" + names[k]);
    CHECK(t.dtype == names[k]);
    CHECK(t.shape == std::vector<int64_t>{3, static_cast<int64_t>(k) + 1});
    CHECK(p.data.substr(t.begin, t.end - t.begin) == bytes[k]);
    CHECK(t.begin % dspp::dtype_size(dtypes[k]) == 0);  // aligned when mapped
  }
  CHECK(p.tensors.at("scalar").shape.empty());
  CHECK(p.tensors.at("empty").begin == p.tensors.at("empty").end);

  const dspp::SafetensorsFile r(path, f.crc32c);
  CHECK(r.names().size() == entries.size());
  CHECK(r.metadata().at("note") == "a \"quoted\" value");
  for (size_t k = 0; k < dtypes.size(); ++k) {
    const dspp::SafetensorsFile::Info& info = r.info("t_" + names[k]);
    CHECK(info.dtype == dtypes[k]);
    CHECK(std::memcmp(r.data("t_" + names[k]), bytes[k].data(), bytes[k].size()) == 0);
  }
  CHECK(*static_cast<const float*>(r.data("scalar")) == 2.5f);
  CHECK(static_cast<const int32_t*>(r.data("filled"))[3] == 30);
  CHECK(contains(error_of([&] { r.info("nope"); }), "'nope'"));
}

TEST_CASE("safetensors errors name the file", "[checkpoint]") {
  TempDir tmp;
  const fs::path path = tmp.path / "x.safetensors";
  std::vector<float> v(100, 1.0f);
  dspp::write_safetensors(path, {{"w", DSPP_F32, {10, 10}, v.data(), {}}});
  const std::string good = read_file(path);

  SECTION("truncated data") {
    write_file(path, good.substr(0, good.size() - 12));
    const std::string msg = error_of([&] { dspp::SafetensorsFile f(path); });
    CHECK(contains(msg, path.string()));
    CHECK(contains(msg, "truncated"));
  }
  SECTION("truncated header") {
    write_file(path, good.substr(0, 20));
    const std::string msg = error_of([&] { dspp::SafetensorsFile f(path); });
    CHECK(contains(msg, path.string()));
    CHECK(contains(msg, "runs past the end"));
  }
  SECTION("shorter than the length field") {
    write_file(path, good.substr(0, 5));
    CHECK(contains(error_of([&] { dspp::SafetensorsFile f(path); }), path.string()));
  }
  SECTION("a bad header") {
    std::string bad = good;
    bad[9] = '[';
    write_file(path, bad);
    CHECK(contains(error_of([&] { dspp::SafetensorsFile f(path); }), path.string()));
  }
  SECTION("a checksum mismatch") {
    std::string bad = good;
    bad[bad.size() - 3] ^= 0x01;
    write_file(path, bad);
    const std::string msg =
        error_of([&] { dspp::SafetensorsFile f(path, dspp::crc32c(good.data(), good.size())); });
    CHECK(contains(msg, path.string()));
    CHECK(contains(msg, "checksum"));
  }
  SECTION("duplicate names are refused when writing") {
    const std::string msg = error_of([&] {
      dspp::write_safetensors(
          path, {{"w", DSPP_F32, {1}, v.data(), {}}, {"w", DSPP_F32, {1}, v.data(), {}}});
    });
    CHECK(contains(msg, "'w'"));
  }
}

TEST_CASE("a checkpoint round-trips every dtype", "[checkpoint]") {
  TempDir tmp;
  const std::vector<dspp_dtype> dtypes{DSPP_F32, DSPP_F16, DSPP_BF16, DSPP_I32,
                                       DSPP_I64, DSPP_U8,  DSPP_F64};
  dspp::CheckpointWriter w;
  std::vector<dspp::Tensor> originals;
  for (dspp_dtype dt : dtypes) {
    dspp::Tensor t = dspp::Tensor::empty({4, 5}, dt);
    auto* b = static_cast<uint8_t*>(t.data());
    for (size_t i = 0; i < t.nbytes(); ++i) b[i] = static_cast<uint8_t>(i * 13 + dt * 17 + 3);
    // Keep f16/bf16 bit patterns away from NaNs, which a comparison of values would trip on.
    if (dt == DSPP_F16 || dt == DSPP_BF16) {
      for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] &= 0x3fff;
    }
    w.add(std::string("module/") + dspp::dtype_name(dt), t);
    originals.push_back(t);
  }
  const dspp::ShardSummary s = w.write_shard(tmp.path / "t", 0);
  CHECK(s.file == "rank_00000.safetensors");
  CHECK(s.bytes == fs::file_size(tmp.path / "t" / s.file));
  dspp::CheckpointMeta meta;
  meta.tag = "t";
  dspp::write_manifest(tmp.path / "t", {s}, meta);

  const dspp::CheckpointReader r(tmp.path / "t");
  CHECK(r.manifest().dspp_version.size() > 0);
  CHECK(r.names().size() == dtypes.size());
  for (size_t k = 0; k < dtypes.size(); ++k) {
    const std::string name = std::string("module/") + dspp::dtype_name(dtypes[k]);
    REQUIRE(r.has(name));
    CHECK(r.dtype(name) == dtypes[k]);
    CHECK(r.shape(name) == std::vector<int64_t>{4, 5});
    const dspp::Tensor back = r.read(name, dtypes[k]);
    CHECK(std::memcmp(back.data(), originals[k].data(), back.nbytes()) == 0);
  }
  // Integers read only as themselves.
  CHECK(contains(error_of([&] { r.read("module/i32", DSPP_F32); }), "'module/i32'"));
  CHECK(contains(error_of([&] { r.read("module/nope", DSPP_F32); }), "'module/nope'"));

  // f32 <-> bf16 / f16 / f64 conversions on read, with round-to-nearest-even.
  TempDir tmp2;
  dspp::CheckpointWriter w2;
  dspp::Tensor f = dspp::Tensor::empty({6});
  const float vals[6] = {1.0f, 0.5f, -2.0f, 1.00390625f, 1.01171875f, 3.0f};
  std::memcpy(f.data(), vals, sizeof vals);
  w2.add("module/f", f);
  dspp::write_manifest(tmp2.path, {w2.write_shard(tmp2.path, 0)}, meta);
  const dspp::CheckpointReader r2(tmp2.path);
  std::vector<uint16_t> bf(6);
  r2.read_range("module/f", 0, 6, bf.data(), DSPP_BF16);
  CHECK(bf == std::vector<uint16_t>{0x3F80, 0x3F00, 0xC000, 0x3F80, 0x3F82, 0x4040});
  std::vector<uint16_t> h(3);
  r2.read_range("module/f", 0, 3, h.data(), DSPP_F16);
  CHECK(h == std::vector<uint16_t>{0x3C00, 0x3800, 0xC000});
  std::vector<double> d(6);
  r2.read_range("module/f", 0, 6, d.data(), DSPP_F64);
  for (int i = 0; i < 6; ++i) CHECK(d[static_cast<size_t>(i)] == static_cast<double>(vals[i]));
}

TEST_CASE("checkpoint pieces reshard: any range from four uneven shards", "[checkpoint]") {
  TempDir tmp;
  const fs::path dir = save_four(tmp.path, "global_step10");
  CHECK(dspp::read_latest(tmp.path) == std::optional<std::string>("global_step10"));
  CHECK(dspp::checkpoint_tag_dir(tmp.path) == dir);

  const dspp::CheckpointReader r(dir);
  const dspp::Manifest& m = r.manifest();
  CHECK(m.format_version == dspp::kCheckpointFormatVersion);
  CHECK(m.meta.world.world_size == 4);
  CHECK(m.meta.zero_stage == 2);
  CHECK(contains(m.meta.config_json, "\"train_batch_size\": 8"));
  CHECK(contains(m.meta.counters_json, "\"global_steps\":10"));
  CHECK(m.shards.size() == 4);
  CHECK(r.names() == std::vector<std::string>{"module/b", "module/e", "module/step", "module/w",
                                              "optimizer/exp_avg/w"});
  CHECK(r.shape("module/w") == kW);
  CHECK(r.missing_ranges("module/w").empty());

  // Whole, each shard boundary crossed, single elements at the edges, and a sweep of windows.
  check_w(r, 0, 407);
  check_w(r, 49, 2);
  check_w(r, 199, 3);
  check_w(r, 200, 1);
  check_w(r, 406, 1);
  check_w(r, 0, 0);
  for (int64_t start = 0; start < 407; start += 23) {
    for (int64_t count : {1, 17, 64, 151}) {
      if (start + count <= 407) check_w(r, start, count);
    }
  }
  // Into another layout: three ranks of a dp=3 run, ceil-divided like a ZeRO partition.
  for (int64_t rank = 0; rank < 3; ++rank) {
    const int64_t part = (407 + 2) / 3;
    const int64_t start = rank * part;
    check_w(r, start, std::min<int64_t>(part, 407 - start));
  }
  // As a Tensor, and converted to f64.
  const dspp::Tensor w = r.read("module/w", DSPP_F32);
  CHECK(w.shape() == kW);
  CHECK(w.data<float>()[300] == value_at(300));
  std::vector<double> d(10);
  r.read_range("module/w", 45, 10, d.data(), DSPP_F64);
  CHECK(d[9] == static_cast<double>(value_at(54)));

  // The optimizer state, pieces of another split.
  std::vector<float> m1(20);
  r.read_range("optimizer/exp_avg/w", 290, 20, m1.data(), DSPP_F32);
  for (int i = 0; i < 20; ++i) CHECK(m1[static_cast<size_t>(i)] == 2.0f * value_at(290 + i));
  // A replicated tensor (whole in two shards) and a bf16 tensor in two pieces, read as f32.
  std::vector<float> b(5);
  r.read_range("module/b", 0, 5, b.data(), DSPP_F32);
  CHECK(b == std::vector<float>{0.0f, 0.5f, 1.0f, 1.5f, 2.0f});
  std::vector<float> e(12);
  r.read_range("module/e", 0, 12, e.data(), DSPP_F32);
  for (int i = 0; i < 12; ++i) CHECK(e[static_cast<size_t>(i)] == static_cast<float>(i) / 8.0f);
  const dspp::Tensor step = r.read("module/step", DSPP_I64);
  CHECK(step.dim() == 0);
  CHECK(*step.data<int64_t>() == 1234567890123);

  CHECK(contains(error_of([&] { check_w(r, 400, 8); }), "outside"));
}

TEST_CASE("a shard summary travels as JSON", "[checkpoint]") {
  dspp::ShardSummary s;
  s.file = "rank_00002.safetensors";
  s.rank = 2;
  s.bytes = 123456789012;
  s.crc32c = 0xdeadbeef;
  s.pieces.push_back({"module/w", {37, 11}, DSPP_BF16, 5, 100, "module/w@5"});
  const dspp::ShardSummary t = dspp::shard_summary_from_json(dspp::shard_summary_to_json(s));
  CHECK(t.file == s.file);
  CHECK(t.rank == 2);
  CHECK(t.bytes == s.bytes);
  CHECK(t.crc32c == s.crc32c);
  REQUIRE(t.pieces.size() == 1);
  CHECK(t.pieces[0].name == "module/w");
  CHECK(t.pieces[0].shape == std::vector<int64_t>{37, 11});
  CHECK(t.pieces[0].dtype == DSPP_BF16);
  CHECK(t.pieces[0].start == 5);
  CHECK(t.pieces[0].count == 100);
  CHECK(t.pieces[0].key == "module/w@5");
  CHECK(contains(error_of([] { dspp::shard_summary_from_json("{\"file\": \"../x\"}"); }), "../x"));
}

TEST_CASE("checkpoint writer refuses inconsistent pieces", "[checkpoint]") {
  TempDir tmp;
  dspp::CheckpointWriter w;
  w.add_piece("module/w", f32_range(0, 10), {4, 5}, 0);
  CHECK(contains(error_of([&] {
                   w.add_piece("module/w", f32_range(0, 5), {4, 5}, 8);
                 }),
                 "overlaps"));
  CHECK(contains(error_of([&] {
                   w.add_piece("module/w", f32_range(0, 5), {4, 5}, 16);
                 }),
                 "outside"));
  CHECK(contains(error_of([&] {
                   w.add_piece("module/w", f32_range(0, 5), {5, 4}, 10);
                 }),
                 "'module/w'"));
  // Two shards that disagree on a tensor's shape cannot form one manifest.
  dspp::CheckpointWriter other;
  other.add_piece("module/w", f32_range(10, 10), {5, 4}, 10);
  const dspp::ShardSummary a = w.write_shard(tmp.path, 0);
  const dspp::ShardSummary b = other.write_shard(tmp.path, 1);
  const std::string msg = error_of([&] { dspp::write_manifest(tmp.path, {a, b}, {}); });
  CHECK(contains(msg, "'module/w'"));
  CHECK(contains(msg, "rank_00001.safetensors"));
  dspp::CheckpointMeta bad;
  bad.counters_json = "[1, 2]";
  CHECK(contains(error_of([&] { dspp::write_manifest(tmp.path, {a}, bad); }), "counters"));
}

TEST_CASE("a flipped byte in a shard is an error naming the shard file", "[checkpoint]") {
  TempDir tmp;
  const fs::path dir = save_four(tmp.path, "t");
  const fs::path shard = dir / "rank_00002.safetensors";
  std::string bytes = read_file(shard);
  bytes[bytes.size() - 2] ^= 0x10;
  write_file(shard, bytes);

  const dspp::CheckpointReader r(dir);
  // Shards are verified when first used: a range held by rank 0 alone still reads.
  check_w(r, 0, 50);
  const std::string msg = error_of([&] { check_w(r, 190, 15); });
  CHECK(contains(msg, shard.string()));
  CHECK(contains(msg, "checksum"));
  CHECK(contains(error_of([&] { r.verify_shard(2); }), shard.string()));

  const Run v = ds_checkpoint("verify '" + tmp.path.string() + "'");
  CHECK(v.rc == 1);
  CHECK(contains(v.err, shard.string()));
  CHECK_FALSE(contains(v.err, "rank_00001"));
}

TEST_CASE("a truncated shard is an error naming the shard file", "[checkpoint]") {
  TempDir tmp;
  const fs::path dir = save_four(tmp.path, "t");
  const fs::path shard = dir / "rank_00001.safetensors";
  const std::string bytes = read_file(shard);
  write_file(shard, bytes.substr(0, bytes.size() - 100));
  const dspp::CheckpointReader r(dir);
  const std::string msg = error_of([&] { check_w(r, 60, 10); });
  CHECK(contains(msg, shard.string()));
  CHECK(contains(msg, "truncated"));
  const Run v = ds_checkpoint("verify '" + dir.string() + "'");
  CHECK(v.rc == 1);
  CHECK(contains(v.err, shard.string()));
  // A missing shard file, too.
  fs::remove(dir / "rank_00003.safetensors");
  CHECK(contains(error_of([&] { check_w(r, 300, 10); }), "rank_00003.safetensors"));
  // And a missing manifest.
  fs::remove(dir / "manifest.json");
  CHECK(contains(error_of([&] { dspp::CheckpointReader r2(dir); }), "manifest.json"));
}

TEST_CASE("a range no shard holds is an error naming the tensor and the range", "[checkpoint]") {
  TempDir tmp;
  std::vector<dspp::ShardSummary> s = write_four_shards(tmp.path);
  s.erase(s.begin() + 1);  // rank 1 held module/w [50, 200)
  dspp::write_manifest(tmp.path, s, four_meta("t"));
  const dspp::CheckpointReader r(tmp.path);
  check_w(r, 0, 50);
  check_w(r, 200, 207);
  const std::string msg = error_of([&] { check_w(r, 40, 20); });
  CHECK(contains(msg, "'module/w'"));
  CHECK(contains(msg, "[50, 60)"));
  CHECK(contains(error_of([&] { check_w(r, 0, 407); }), "[50, 200)"));
  CHECK(r.missing_ranges("module/w") == std::vector<std::pair<int64_t, int64_t>>{{50, 200}});
  const Run v = ds_checkpoint("verify '" + tmp.path.string() + "'");
  CHECK(v.rc == 1);
  CHECK(contains(v.err, "'module/w' elements [50, 200)"));
  CHECK(contains(v.err, "'module/e' elements [0, 7)"));
}

TEST_CASE("the latest file", "[checkpoint]") {
  TempDir tmp;
  CHECK_FALSE(dspp::read_latest(tmp.path).has_value());
  CHECK(contains(error_of([&] { dspp::checkpoint_tag_dir(tmp.path); }), "latest"));
  dspp::write_latest(tmp.path, "global_step5");
  CHECK(read_file(tmp.path / "latest") == "global_step5");  // DeepSpeed's format: no newline
  dspp::write_latest(tmp.path, "global_step6");
  CHECK(dspp::read_latest(tmp.path) == std::optional<std::string>("global_step6"));
  write_file(tmp.path / "latest", "global_step7\n");  // hand-edited
  CHECK(dspp::read_latest(tmp.path) == std::optional<std::string>("global_step7"));
  CHECK(contains(error_of([&] { dspp::write_latest(tmp.path, "../x"); }), "../x"));
  CHECK(contains(error_of([&] { dspp::checkpoint_tag_dir(tmp.path, "a/b"); }), "a/b"));
}

TEST_CASE("a save killed at any crash point leaves the previous checkpoint current",
          "[checkpoint]") {
  const std::string point = GENERATE(std::string("before_rename"), std::string("shard_written"),
                                     std::string("shard_written:1"),
                                     std::string("manifest_written"), std::string("before_latest"));
  INFO("DSPP_CHECKPOINT_CRASH_AT=" << point);
  TempDir tmp;
  save_four(tmp.path, "step1");

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child saves step2 the way a run does and must die on the way.
    ::setenv("DSPP_CHECKPOINT_CRASH_AT", point.c_str(), 1);
    try {
      save_four(tmp.path, "step2");
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);

  CHECK(dspp::read_latest(tmp.path) == std::optional<std::string>("step1"));
  const dspp::CheckpointReader r(dspp::checkpoint_tag_dir(tmp.path));
  for (size_t i = 0; i < r.manifest().shards.size(); ++i) r.verify_shard(i);
  check_w(r, 0, 407);
  const Run v = ds_checkpoint("verify '" + tmp.path.string() + "'");
  CHECK(v.rc == 0);
  CHECK(contains(v.out, "step1"));

  const fs::path step2 = tmp.path / "step2";
  if (point == "manifest_written" || point == "before_latest") {
    // The new tag is complete; only `latest` did not move.
    const dspp::CheckpointReader r2(step2);
    check_w(r2, 0, 407);
  } else {
    CHECK(contains(error_of([&] { dspp::CheckpointReader r2(step2); }), "manifest.json"));
  }
  if (point == "before_rename") {
    // The first file was fully written under its temporary name, then nothing moved.
    CHECK_FALSE(fs::exists(step2 / "rank_00000.safetensors"));
    bool tmp_left = false;
    for (const auto& e : fs::directory_iterator(step2)) {
      tmp_left |= contains(e.path().filename().string(), "rank_00000.safetensors.tmp.");
    }
    CHECK(tmp_left);
  }
  if (point == "shard_written:1") {
    CHECK(fs::exists(step2 / "rank_00000.safetensors"));
    CHECK(fs::exists(step2 / "rank_00001.safetensors"));
    CHECK_FALSE(fs::exists(step2 / "rank_00002.safetensors"));
  }
}

TEST_CASE("ds-checkpoint inspects, verifies and exports", "[checkpoint]") {
  TempDir tmp;
  const fs::path dir = save_four(tmp.path, "global_step10");
  const std::string save = "'" + tmp.path.string() + "'";

  const Run inspect = ds_checkpoint("inspect " + save);
  INFO(inspect.err);
  REQUIRE(inspect.rc == 0);
  CHECK(contains(inspect.out, "world_size 4, dp 4, tp 1, pp 1"));
  CHECK(contains(inspect.out, "zero stage  2"));
  CHECK(contains(inspect.out, "module/w"));
  CHECK(contains(inspect.out, "f32[37, 11]"));
  CHECK(contains(inspect.out, "rank_00003.safetensors"));
  CHECK(contains(inspect.out, "\"global_steps\":10"));

  const Run verify = ds_checkpoint("verify " + save + " --tag global_step10");
  CHECK(verify.rc == 0);
  CHECK(contains(verify.out, "4 shards"));

  const fs::path out = tmp.path / "export.safetensors";
  const Run ex = ds_checkpoint("export '" + dir.string() + "' '" + out.string() + "'");
  INFO(ex.err);
  REQUIRE(ex.rc == 0);
  const Parsed p = parse_safetensors(read_file(out));
  CHECK(p.metadata.at("format") == "pt");
  // The module tensors, without the prefix, in fp32 (bf16 converted); no optimizer state.
  REQUIRE(p.tensors.size() == 4);
  const ParsedTensor& w = p.tensors.at("w");
  CHECK(w.dtype == "F32");
  CHECK(w.shape == kW);
  const std::vector<float> wv = floats_of(p.data, w);
  REQUIRE(wv.size() == 407);
  for (size_t i = 0; i < wv.size(); ++i) REQUIRE(wv[i] == value_at(static_cast<int64_t>(i)));
  const ParsedTensor& e = p.tensors.at("e");
  CHECK(e.dtype == "F32");
  CHECK(e.shape == std::vector<int64_t>{3, 4});
  CHECK(floats_of(p.data, e)[11] == 11.0f / 8.0f);
  CHECK(p.tensors.at("b").shape == std::vector<int64_t>{5});
  CHECK(p.tensors.at("step").dtype == "I64");
  CHECK(p.tensors.at("step").shape.empty());

  const fs::path opt = tmp.path / "opt.safetensors";
  const Run ex2 = ds_checkpoint("export " + save + " '" + opt.string() + "' --prefix optimizer/");
  REQUIRE(ex2.rc == 0);
  CHECK(parse_safetensors(read_file(opt)).tensors.count("exp_avg/w") == 1);

  const Run none = ds_checkpoint("export " + save + " '" + opt.string() + "' --prefix nothing/");
  CHECK(none.rc == 1);
  const Run missing = ds_checkpoint("verify '" + (tmp.path / "nowhere").string() + "'");
  CHECK(missing.rc == 1);
  CHECK(contains(missing.err, "nowhere"));
  const Run usage = ds_checkpoint("export " + save);
  CHECK(usage.rc == 2);
}
