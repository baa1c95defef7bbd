// Data: the distributed sampler against torch's DistributedSampler arithmetic, the DataLoader's
// batches, epochs and exact resume, token files in llm.c and nanoGPT formats (and their errors),
// and the synthetic addition task (determinism, split disjointness, structure, loss floor).
#include <dspp/data.h>
#include <dspp/error.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"

namespace fs = std::filesystem;
using dspp::AdditionTask;
using dspp::AdditionTaskOptions;
using dspp::Batch;
using dspp::DataLoader;
using dspp::DataLoaderState;
using dspp::DataSplit;
using dspp::DistributedSampler;
using dspp::Sample;
using dspp::Tensor;
using dspp::TokenFileDataset;
using dspp::TokenFileFormat;
using dspp::TokenFileOptions;

namespace {

// torch.utils.data.DistributedSampler.__init__, transcribed: num_samples per rank.
int64_t torch_num_samples(int64_t n, int64_t world, bool drop_last) {
  if (drop_last && n % world != 0) {
    return static_cast<int64_t>(std::ceil(static_cast<double>(n - world) / world));
  }
  return static_cast<int64_t>(std::ceil(static_cast<double>(n) / world));
}

std::vector<int32_t> to_vec(const Tensor& t) {
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

// A dataset whose sample i is inputs = [i, i], targets = [-i]: batches show which indices came.
class IndexDataset : public dspp::Dataset {
 public:
  explicit IndexDataset(int64_t n) : n_(n) {}
  int64_t size() const override { return n_; }
  Sample get(int64_t index) const override {
    Tensor in = Tensor::empty({2}, DSPP_I32);
    Tensor tg = Tensor::empty({1}, DSPP_I32);
    in.data<int32_t>()[0] = static_cast<int32_t>(index);
    in.data<int32_t>()[1] = static_cast<int32_t>(index);
    tg.data<int32_t>()[0] = -static_cast<int32_t>(index);
    return Sample{in, tg};
  }

 private:
  int64_t n_;
};

// The dataset indices a batch of IndexDataset holds, in row order.
std::vector<int64_t> rows_of(const Batch& b) {
  std::vector<int64_t> out;
  for (int64_t r = 0; r < b.inputs.size(0); ++r) out.push_back(b.inputs.data<int32_t>()[2 * r]);
  return out;
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("dspp_test_data_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const void* data, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}

// llm.c's write_datafile: 256 int32 header [magic, version, count], then the tokens.
void write_llmc(const std::string& path, const std::vector<uint16_t>& tokens,
                int32_t magic = 20240520, int32_t version = 1, int64_t declared = -1) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = static_cast<int32_t>(declared >= 0 ? declared : static_cast<int64_t>(tokens.size()));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(header.data()), 1024);
  f.write(reinterpret_cast<const char*>(tokens.data()),
          static_cast<std::streamsize>(2 * tokens.size()));
}

void write_raw(const std::string& path, const std::vector<uint16_t>& tokens) {
  write_bytes(path, tokens.data(), 2 * tokens.size());
}

std::vector<uint16_t> ramp(int n, int start = 0, int mod = 50000) {
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<uint16_t>((start + i) % mod);
  return v;
}

}  // namespace

// ---- sampler ---------------------------------------------------------------------------------

TEST_CASE("sampler: num_samples follows torch's DistributedSampler formula") {
  for (int64_t n = 1; n <= 40; ++n) {
    for (int world = 1; world <= 8; ++world) {
      for (bool drop_last : {false, true}) {
        DistributedSampler s(n, world, world - 1, true, 0, drop_last);
        INFO("N=" << n << " world=" << world << " drop_last=" << drop_last);
        CHECK(s.num_samples() == torch_num_samples(n, world, drop_last));
        CHECK(static_cast<int64_t>(s.indices().size()) == s.num_samples());
      }
    }
  }
}

TEST_CASE("sampler: unshuffled indices equal torch's, index for index") {
  // Produced by torch.utils.data.DistributedSampler(range(N), W, r, shuffle=False, drop_last=...).
  struct Case {
    int64_t n;
    int world;
    bool drop_last;
    std::vector<std::vector<int64_t>> per_rank;
  };
  const std::vector<Case> cases = {
      {10, 4, false, {{0, 4, 8}, {1, 5, 9}, {2, 6, 0}, {3, 7, 1}}},
      {10, 4, true, {{0, 4}, {1, 5}, {2, 6}, {3, 7}}},
      {3, 8, false, {{0}, {1}, {2}, {0}, {1}, {2}, {0}, {1}}},
      {3, 8, true, {{}, {}, {}, {}, {}, {}, {}, {}}},
      {7, 1, false, {{0, 1, 2, 3, 4, 5, 6}}},
  };
  for (const Case& c : cases) {
    for (int r = 0; r < c.world; ++r) {
      DistributedSampler s(c.n, c.world, r, /*shuffle=*/false, 0, c.drop_last);
      INFO("N=" << c.n << " world=" << c.world << " rank=" << r << " drop_last=" << c.drop_last);
      CHECK(s.indices() == c.per_rank[static_cast<size_t>(r)]);
    }
  }
}

TEST_CASE("sampler: ranks' shards are disjoint, cover the data, and share one order") {
  for (int64_t n : {12, 13, 17, 100}) {
    for (int world : {1, 2, 3, 4, 5}) {
      for (bool drop_last : {false, true}) {
        const uint64_t seed = 1234;
        const int64_t epoch = 3;
        const std::vector<int64_t> order = dspp::shuffled_indices(n, seed, epoch);
        std::vector<std::vector<int64_t>> shards;
        for (int r = 0; r < world; ++r) {
          DistributedSampler s(n, world, r, true, seed, drop_last);
          s.set_epoch(epoch);
          shards.push_back(s.indices());
        }
        const int64_t per_rank = torch_num_samples(n, world, drop_last);
        INFO("N=" << n << " world=" << world << " drop_last=" << drop_last);
        // Interleaving the ranks gives the epoch's order, padded from its start (or cut).
        std::multiset<int64_t> all;
        for (int64_t k = 0; k < per_rank; ++k) {
          for (int r = 0; r < world; ++r) {
            const int64_t p = k * world + r;
            const int64_t got = shards[static_cast<size_t>(r)][static_cast<size_t>(k)];
            CHECK(got == order[static_cast<size_t>(p % n)]);
            all.insert(got);
          }
        }
        std::set<int64_t> distinct(all.begin(), all.end());
        if (drop_last) {
          CHECK(all.size() == distinct.size());  // no sample twice
          CHECK(static_cast<int64_t>(distinct.size()) == (n / world) * world);
        } else {
          CHECK(static_cast<int64_t>(distinct.size()) == n);  // every sample at least once
          CHECK(static_cast<int64_t>(all.size()) - n == per_rank * world - n);  // padding only
          if (n % world == 0) CHECK(all.size() == distinct.size());
        }
      }
    }
  }
}

TEST_CASE("sampler: the shuffle is a permutation, reproducible, different per seed and epoch") {
  const std::vector<int64_t> a = dspp::shuffled_indices(1000, 7, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) CHECK(sorted[static_cast<size_t>(i)] == i);
  CHECK(dspp::shuffled_indices(1000, 7, 0) == a);
  CHECK(dspp::shuffled_indices(1000, 7, 1) != a);
  CHECK(dspp::shuffled_indices(1000, 8, 0) != a);
  // torch seeds with seed + epoch; ours must not collide there.
  CHECK(dspp::shuffled_indices(1000, 8, 0) != dspp::shuffled_indices(1000, 7, 1));
  // Pinned: the order is part of checkpoint resume, so it may never change silently.
  CHECK(dspp::shuffled_indices(10, 0, 0) == std::vector<int64_t>{1, 4, 9, 3, 2, 7, 5, 6, 8, 0});
  // Fisher–Yates draws every position uniformly: where index 0 lands over 20000 epochs.
  std::vector<int> counts(8, 0);
  for (int e = 0; e < 20000; ++e) {
    const std::vector<int64_t> p = dspp::shuffled_indices(8, 99, e);
    const auto it = std::find(p.begin(), p.end(), 0);
    ++counts[static_cast<size_t>(it - p.begin())];
  }
  double chi2 = 0.0;
  for (int c : counts) chi2 += (c - 2500.0) * (c - 2500.0) / 2500.0;
  CHECK(chi2 < 24.3);  // 7 degrees of freedom, p = 0.001
}

TEST_CASE("sampler: rejects a bad rank, world or empty dataset") {
  CHECK_THROWS_AS(DistributedSampler(10, 0, 0), dspp::Error);
  CHECK_THROWS_AS(DistributedSampler(10, 2, 2), dspp::Error);
  CHECK_THROWS_AS(DistributedSampler(10, 2, -1), dspp::Error);
  CHECK_THROWS_AS(DistributedSampler(0, 1, 0), dspp::Error);
}

// ---- loader ----------------------------------------------------------------------------------

TEST_CASE("loader: batch shapes, len() and the last partial batch") {
  AdditionTaskOptions o;
  o.context = 16;
  o.num_samples = 50;
  auto ds = std::make_shared<AdditionTask>(o);
  DataLoader keep(ds, 8, 0, 1, true, 5, /*drop_last=*/false);
  CHECK(keep.len() == 7);
  for (int64_t i = 0; i < 6; ++i) {
    Batch b = keep.next();
    CHECK(b.inputs.shape() == std::vector<int64_t>{8, 16});
    CHECK(b.targets.shape() == std::vector<int64_t>{8, 16});
    CHECK(b.inputs.dtype() == DSPP_I32);
    CHECK(b.targets.dtype() == DSPP_I32);
  }
  CHECK(keep.next().inputs.shape() == std::vector<int64_t>{2, 16});
  CHECK(keep.position() == 7);

  DataLoader drop(ds, 8, 0, 1, true, 5, /*drop_last=*/true);
  CHECK(drop.len() == 6);
  for (int64_t i = 0; i < 13; ++i) CHECK(drop.next().inputs.shape() == std::vector<int64_t>{8, 16});
}

TEST_CASE("loader: batches follow the sampler, epochs repeat with a new order") {
  auto ds = std::make_shared<IndexDataset>(23);
  for (int world : {1, 3}) {
    for (int rank = 0; rank < world; ++rank) {
      DataLoader loader(ds, 4, rank, world, true, 42);
      DistributedSampler ref(23, world, rank, true, 42);
      INFO("world=" << world << " rank=" << rank);
      for (int64_t epoch = 0; epoch < 3; ++epoch) {
        ref.set_epoch(epoch);
        const std::vector<int64_t> idx = ref.indices();
        std::vector<int64_t> seen;
        for (int64_t k = 0; k < loader.len(); ++k) {
          const Batch b = loader.next();
          CHECK(loader.epoch() == epoch);
          const std::vector<int64_t> rows = rows_of(b);
          seen.insert(seen.end(), rows.begin(), rows.end());
          for (int64_t r = 0; r < b.inputs.size(0); ++r) {
            CHECK(b.targets.data<int32_t>()[r] == -b.inputs.data<int32_t>()[2 * r]);
          }
        }
        CHECK(seen == idx);
      }
    }
  }
  DataLoader a(ds, 23, 0, 1, true, 42);
  const std::vector<int64_t> e0 = rows_of(a.next());
  const std::vector<int64_t> e1 = rows_of(a.next());
  CHECK(a.epoch() == 1);
  CHECK(e0 != e1);
  std::vector<int64_t> s0 = e0, s1 = e1;
  std::sort(s0.begin(), s0.end());
  std::sort(s1.begin(), s1.end());
  CHECK(s0 == s1);
}

TEST_CASE("loader: set_epoch restarts that epoch's order, unshuffled order is sequential") {
  auto ds = std::make_shared<IndexDataset>(10);
  DataLoader a(ds, 3, 0, 1, true, 1);
  a.next();
  a.next();
  a.set_epoch(5);
  CHECK(a.position() == 0);
  DataLoader b(ds, 3, 0, 1, true, 1);
  b.set_epoch(5);
  CHECK(rows_of(a.next()) == rows_of(b.next()));
  DataLoader seq(ds, 4, 0, 1, /*shuffle=*/false);
  CHECK(rows_of(seq.next()) == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(rows_of(seq.next()) == std::vector<int64_t>{4, 5, 6, 7});
  CHECK(rows_of(seq.next()) == std::vector<int64_t>{8, 9});
  CHECK(rows_of(seq.next()) == std::vector<int64_t>{0, 1, 2, 3});
}

TEST_CASE("loader: a saved state resumes with exactly the next batch") {
  AdditionTaskOptions o;
  o.context = 12;
  o.num_samples = 37;
  auto ds = std::make_shared<AdditionTask>(o);
  for (int64_t taken : {0, 1, 4, 9, 10, 11, 25}) {
    DataLoader a(ds, 4, 1, 2, true, 77);  // len 5: taken crosses epochs
    for (int64_t i = 0; i < taken; ++i) a.next();
    const DataLoaderState st = a.state();
    DataLoader b(ds, 4, 1, 2, true, /*seed=*/0);  // the state carries the seed
    b.load_state(st);
    INFO("taken=" << taken << " epoch=" << st.epoch << " position=" << st.position);
    CHECK(st.seed == 77);
    for (int i = 0; i < 7; ++i) {
      const Batch x = a.next();
      const Batch y = b.next();
      CHECK(to_vec(x.inputs) == to_vec(y.inputs));
      CHECK(to_vec(x.targets) == to_vec(y.targets));
    }
    CHECK(a.state().epoch == b.state().epoch);
    CHECK(a.state().position == b.state().position);
  }
  DataLoader c(ds, 4, 0, 2, true, 77);
  CHECK_THROWS_AS(c.load_state(DataLoaderState{0, c.len() + 1, 77}), dspp::Error);
}

TEST_CASE("loader: world W x micro b serves the same data per step as world 1 x micro W*b") {
  auto ds = std::make_shared<IndexDataset>(48);
  const int world = 4;
  const int64_t micro = 3;
  DataLoader single(ds, world * micro, 0, 1, true, 9);
  std::vector<std::unique_ptr<DataLoader>> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.push_back(std::make_unique<DataLoader>(ds, micro, r, world, true, 9));
  }
  for (int step = 0; step < 10; ++step) {  // crosses an epoch (len 4)
    std::vector<int64_t> want = rows_of(single.next());
    std::vector<int64_t> got;
    for (auto& l : ranks) {
      const std::vector<int64_t> rows = rows_of(l->next());
      got.insert(got.end(), rows.begin(), rows.end());
    }
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    CHECK(got == want);
  }
}

TEST_CASE("loader: collate_fn, TensorDataset and errors") {
  Tensor x = Tensor::empty({6, 3}, DSPP_F32);
  Tensor y = Tensor::empty({6}, DSPP_I32);
  for (int i = 0; i < 18; ++i) x.data<float>()[i] = static_cast<float>(i);
  for (int i = 0; i < 6; ++i) y.data<int32_t>()[i] = 10 + i;
  auto ds = std::make_shared<dspp::TensorDataset>(x, y);
  CHECK(ds->size() == 6);
  DataLoader plain(ds, 4, 0, 1, false);
  Batch b = plain.next();
  CHECK(b.inputs.shape() == std::vector<int64_t>{4, 3});
  CHECK(b.targets.shape() == std::vector<int64_t>{4});
  CHECK(b.inputs.data<float>()[5] == 5.0f);
  CHECK(b.targets.data<int32_t>()[3] == 13);

  int calls = 0;
  dspp::CollateFn count_rows = [&calls](const std::vector<Sample>& samples) {
    ++calls;
    Batch out = dspp::default_collate(samples);
    out.targets = Tensor();
    return out;
  };
  DataLoader custom(ds, 4, 0, 1, false, 0, false, count_rows);
  CHECK(!custom.next().targets.defined());
  CHECK(calls == 1);

  std::vector<Sample> mixed = {ds->get(0), Sample{Tensor::empty({4}, DSPP_F32), y.slice(0, {})}};
  const std::string msg = error_of([&] { dspp::default_collate(mixed); });
  CHECK(contains(msg, "one shape"));
  CHECK_THROWS_AS(dspp::default_collate({}), dspp::Error);
  CHECK_THROWS_AS(DataLoader(ds, 0), dspp::Error);
  CHECK_THROWS_AS(DataLoader(nullptr, 4), dspp::Error);

  // Too few samples for the world with drop_last: no batch at all, and a message that says why.
  DataLoader empty(std::make_shared<IndexDataset>(3), 1, 0, 4, true, 0, true);
  CHECK(empty.len() == 0);
  CHECK(contains(error_of([&] { empty.next(); }), "no batch"));
}

// ---- token files -----------------------------------------------------------------------------

TEST_CASE("token files: llm.c and raw formats give the same windows, shifted targets") {
  TempDir dir;
  const std::vector<uint16_t> toks = ramp(100, 7);
  write_llmc(dir.file("a_llmc.bin"), toks);
  write_raw(dir.file("a_raw.bin"), toks);
  TokenFileOptions o;
  o.context = 8;
  for (const char* name : {"a_llmc.bin", "a_raw.bin"}) {
    TokenFileDataset ds({dir.file(name)}, o);
    INFO(name);
    REQUIRE(ds.shards().size() == 1);
    CHECK(ds.shards()[0].format ==
          (std::string(name) == "a_llmc.bin" ? TokenFileFormat::kLlmc : TokenFileFormat::kRaw));
    CHECK(ds.num_tokens() == 100);
    CHECK(ds.size() == (100 - 9) / 8 + 1);
    for (int64_t i = 0; i < ds.size(); ++i) {
      const Sample s = ds.get(i);
      CHECK(s.inputs.shape() == std::vector<int64_t>{8});
      CHECK(s.inputs.dtype() == DSPP_I32);
      for (int64_t t = 0; t < 8; ++t) {
        CHECK(s.inputs.data<int32_t>()[t] == toks[static_cast<size_t>(8 * i + t)]);
        CHECK(s.targets.data<int32_t>()[t] == toks[static_cast<size_t>(8 * i + t + 1)]);
      }
    }
    CHECK_THROWS_AS(ds.get(ds.size()), dspp::Error);
  }
  // A stride shorter than T: overlapping windows.
  o.stride = 3;
  TokenFileDataset overlap({dir.file("a_raw.bin")}, o);
  CHECK(overlap.size() == (100 - 9) / 3 + 1);
  CHECK(overlap.get(2).inputs.data<int32_t>()[0] == toks[6]);
}

TEST_CASE("token files: shards, globs, directories and comma lists") {
  TempDir dir;
  write_llmc(dir.file("train_000.bin"), ramp(30, 0));
  write_raw(dir.file("train_001.bin"), ramp(4, 1000));  // too short for one window
  write_llmc(dir.file("train_002.bin"), ramp(21, 2000));
  write_raw(dir.file("val_000.bin"), ramp(40, 3000));
  TokenFileOptions o;
  o.context = 4;
  TokenFileDataset ds({dir.file("train_*.bin")}, o);
  REQUIRE(ds.shards().size() == 3);
  CHECK(ds.shards()[0].num_windows == 7);  // (30 - 5) / 4 + 1
  CHECK(ds.shards()[1].num_windows == 0);
  CHECK(ds.shards()[2].num_windows == 5);  // (21 - 5) / 4 + 1
  CHECK(ds.size() == 12);
  CHECK(ds.get(6).inputs.data<int32_t>()[0] == 24);
  CHECK(ds.get(7).inputs.data<int32_t>()[0] == 2000);
  CHECK(ds.get(11).targets.data<int32_t>()[3] == 2020);

  const std::vector<std::string> all = dspp::expand_data_paths(dir.path.string());
  CHECK(all.size() == 4);
  CHECK(std::is_sorted(all.begin(), all.end()));
  const std::vector<std::string> two =
      dspp::expand_data_paths(dir.file("val_000.bin") + "," + dir.file("train_000.bin"));
  CHECK(two == std::vector<std::string>{dir.file("val_000.bin"), dir.file("train_000.bin")});
  CHECK(contains(error_of([&] { dspp::expand_data_paths(dir.file("nope_*.bin")); }), "nope_"));
  CHECK(contains(error_of([&] { TokenFileDataset({dir.file("missing.bin")}, o); }), "missing.bin"));

  // A loader over the shards, sharded by rank, as ds-train uses it.
  auto shared = std::make_shared<TokenFileDataset>(std::vector<std::string>{dir.path.string()}, o);
  DataLoader loader(shared, 2, 1, 2, true, 3);
  CHECK(loader.next().inputs.shape() == std::vector<int64_t>{2, 4});
}

TEST_CASE("token files: errors name the file") {
  TempDir dir;
  TokenFileOptions o;
  o.context = 4;
  auto err = [&](const std::string& path, TokenFileFormat format = TokenFileFormat::kAuto) {
    TokenFileOptions oo = o;
    oo.format = format;
    return error_of([&] { TokenFileDataset({path}, oo); });
  };

  // Forced llm.c on a headerless file: bad magic.
  const std::string raw = dir.file("raw.bin");
  write_raw(raw, ramp(600, 1));
  std::string m = err(raw, TokenFileFormat::kLlmc);
  CHECK(contains(m, raw));
  CHECK(contains(m, "bad magic"));
  // Auto: an llm.c-shaped header with a wrong magic is an error, not 512 tokens of header.
  const std::string wrong = dir.file("wrong_magic.bin");
  write_llmc(wrong, ramp(50), 20240521);
  m = err(wrong);
  CHECK(contains(m, wrong));
  CHECK(contains(m, "bad magic 20240521"));
  // Unsupported version.
  const std::string v2 = dir.file("v2.bin");
  write_llmc(v2, ramp(50), 20240520, 2);
  m = err(v2);
  CHECK(contains(m, v2));
  CHECK(contains(m, "version 2"));
  // Truncated: the header declares more tokens than the file holds.
  const std::string cut = dir.file("cut.bin");
  write_llmc(cut, ramp(50), 20240520, 1, 80);
  m = err(cut);
  CHECK(contains(m, cut));
  CHECK(contains(m, "truncated"));
  // A header cut short.
  const std::string short_header = dir.file("short_header.bin");
  const int32_t words[3] = {20240520, 1, 10};
  write_bytes(short_header, words, sizeof(words));
  CHECK(contains(err(short_header), "truncated llm.c header"));
  // Trailing bytes after the declared tokens.
  const std::string longer = dir.file("longer.bin");
  write_llmc(longer, ramp(50), 20240520, 1, 40);
  CHECK(contains(err(longer), "trailing"));
  // Raw of odd size.
  const std::string odd = dir.file("odd.bin");
  const unsigned char bytes[7] = {1, 0, 2, 0, 3, 0, 4};
  write_bytes(odd, bytes, sizeof(bytes));
  m = err(odd);
  CHECK(contains(m, odd));
  CHECK(contains(m, "odd size"));
  // Empty.
  const std::string empty = dir.file("empty.bin");
  write_bytes(empty, bytes, 0);
  CHECK(contains(err(empty), "empty"));
  // Too short for a single window anywhere.
  const std::string tiny = dir.file("tiny.bin");
  write_raw(tiny, ramp(4));
  CHECK(contains(err(tiny), "window"));
  // A token past the vocabulary, found when its window is read.
  TokenFileOptions ov = o;
  ov.vocab_size = 50;
  TokenFileDataset big({raw}, ov);
  CHECK_NOTHROW(big.get(0));
  m = error_of([&] { big.get(12); });  // window 12 starts at token 48 = value 49, then 50
  CHECK(contains(m, raw));
  CHECK(contains(m, "outside the vocabulary"));
}

TEST_CASE("token files: llm.c Llama-3 uint32 tokens") {
  TempDir dir;
  std::vector<int32_t> header(256, 0);
  header[0] = 20240801;
  header[1] = 7;
  header[2] = 20;
  std::vector<uint32_t> toks(20);
  for (uint32_t i = 0; i < 20; ++i) toks[i] = 128000 + i;
  const std::string path = dir.file("llama.bin");
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(header.data()), 1024);
    f.write(reinterpret_cast<const char*>(toks.data()), 80);
  }
  TokenFileOptions o;
  o.context = 5;
  TokenFileDataset ds({path}, o);
  CHECK(ds.shards()[0].token_bytes == 4);
  CHECK(ds.size() == 3);
  CHECK(ds.get(1).inputs.data<int32_t>()[0] == 128005);
  CHECK(ds.get(2).targets.data<int32_t>()[4] == 128015);
}

// ---- the synthetic task ----------------------------------------------------------------------

TEST_CASE("addition task: deterministic per seed, train and held-out disjoint") {
  AdditionTaskOptions o;
  o.num_samples = 2000;
  const AdditionTask a(o), b(o);
  for (int64_t i : {0, 1, 999, 1999}) CHECK(a.tokens(i) == b.tokens(i));
  AdditionTaskOptions other = o;
  other.seed = 1;
  CHECK(AdditionTask(other).tokens(0) != a.tokens(0));
  AdditionTaskOptions held = o;
  held.split = DataSplit::kHeldOut;
  const AdditionTask h(held);
  std::set<std::vector<int32_t>> train;
  for (int64_t i = 0; i < o.num_samples; ++i) train.insert(a.tokens(i));
  CHECK(static_cast<int64_t>(train.size()) == o.num_samples);  // no two samples alike
  for (int64_t i = 0; i < held.num_samples; ++i) CHECK(train.count(h.tokens(i)) == 0);
}

TEST_CASE("addition task: targets are inputs shifted, every answer is the sum") {
  for (int digits : {1, 2, 3}) {
    for (int base : {10, 7}) {
      for (int64_t T : {5, 64, 71}) {
        AdditionTaskOptions o;
        o.digits = digits;
        o.base = base;
        o.context = T;
        o.num_samples = 200;
        const AdditionTask task(o);
        INFO("digits=" << digits << " base=" << base << " T=" << T);
        const int32_t plus = base, eq = base + 1, sep = base + 2;
        for (int64_t i = 0; i < o.num_samples; ++i) {
          const Sample s = task.get(i);
          const std::vector<int32_t> in = to_vec(s.inputs), tg = to_vec(s.targets);
          REQUIRE(static_cast<int64_t>(in.size()) == T);
          CHECK(in[0] == sep);
          for (int64_t t = 0; t + 1 < T; ++t) CHECK(in[static_cast<size_t>(t + 1)] == tg[t]);
          // Parse the full token stream problem by problem, independently of the generator.
          std::vector<int32_t> toks = task.tokens(i);
          CHECK(toks.size() == static_cast<size_t>(T + 1));
          size_t p = 1;
          const size_t L = static_cast<size_t>(task.problem_length());
          while (p + L <= toks.size()) {
            int64_t A = 0, B = 0, C = 0;
            for (int k = 0; k < digits; ++k) A = A * base + toks[p + static_cast<size_t>(k)];
            CHECK(toks[p + static_cast<size_t>(digits)] == plus);
            for (int k = 0; k < digits; ++k) {
              B = B * base + toks[p + static_cast<size_t>(digits + 1 + k)];
            }
            CHECK(toks[p + static_cast<size_t>(2 * digits + 1)] == eq);
            for (int k = 0; k <= digits; ++k) {
              C = C * base + toks[p + static_cast<size_t>(2 * digits + 2 + k)];
            }
            CHECK(toks[p + L - 1] == sep);
            CHECK(A + B == C);
            p += L;
          }
        }
      }
    }
  }
}

TEST_CASE("addition task: the loss floor formula matches the generated data") {
  // Empirical: classify every target by parsing the stream (a digit right after ';' or '+' or
  // within an operand is unpredictable; everything else is determined by the prefix, checked
  // above), estimate the operand digits' entropy from their frequencies, and compare the
  // resulting per-token loss of a perfect model with irreducible_loss().
  for (int64_t T : {64, 37}) {
    for (int base : {10, 5}) {
      AdditionTaskOptions o;
      o.context = T;
      o.base = base;
      o.num_samples = 4000;
      const AdditionTask task(o);
      const int32_t plus = base, eq = base + 1, sep = base + 2;
      std::vector<int64_t> operand_counts(static_cast<size_t>(base), 0);
      std::map<int32_t, int64_t> top_counts;
      int64_t operand_targets = 0, top_targets = 0, low_targets = 0, total = 0;
      for (int64_t i = 0; i < o.num_samples; ++i) {
        const std::vector<int32_t> toks = task.tokens(i);
        int state = 0;  // 0: in A, 1: in B, 2: in C
        int in_field = 0;
        for (size_t k = 1; k < toks.size(); ++k) {
          const int32_t tok = toks[k];
          const int64_t t = static_cast<int64_t>(k) - 1;  // the target index
          ++total;
          AdditionTask::TargetKind kind = AdditionTask::TargetKind::kSymbol;
          if (tok == plus) {
            state = 1, in_field = 0;
          } else if (tok == eq) {
            state = 2, in_field = 0;
          } else if (tok == sep) {
            state = 0, in_field = 0;
          } else if (state < 2) {
            kind = AdditionTask::TargetKind::kOperand;
            ++operand_targets;
            ++operand_counts[static_cast<size_t>(tok)];
          } else {
            kind = AdditionTask::TargetKind::kAnswer;
            if (in_field++ == 0) {
              ++top_targets;
              ++top_counts[tok];
            } else {
              ++low_targets;
            }
          }
          CHECK(task.target_kind(t) == kind);
        }
      }
      double h_operand = 0.0;
      for (int64_t c : operand_counts) {
        const double q = static_cast<double>(c) / static_cast<double>(operand_targets);
        if (q > 0) h_operand -= q * std::log(q);
      }
      double h_top = 0.0;
      for (const auto& kv : top_counts) {
        const double q = static_cast<double>(kv.second) / static_cast<double>(top_targets);
        h_top -= q * std::log(q);
      }
      INFO("T=" << T << " base=" << base);
      const double empirical = static_cast<double>(operand_targets) * h_operand / total;
      CHECK(empirical == Approx(task.irreducible_loss()).epsilon(0.002));
      const double fmt = (static_cast<double>(operand_targets + low_targets) * h_operand +
                          static_cast<double>(top_targets) * h_top) /
                         total;
      CHECK(fmt == Approx(task.format_only_loss()).epsilon(0.005));
      CHECK(task.irreducible_loss() < task.format_only_loss());
      CHECK(task.format_only_loss() < task.chance_loss());
    }
  }
}

TEST_CASE("addition task: defaults, vocabulary, decode/encode") {
  const AdditionTask task;  // digits 2, base 10, T 64
  CHECK(task.vocab_size() == 13);
  CHECK(task.problem_length() == 10);
  CHECK(task.chance_loss() == Approx(std::log(13.0)));
  // 27 of the 64 targets are operand digits (t mod 10 in {0, 1, 3, 4}).
  CHECK(task.irreducible_loss() == Approx(27.0 * std::log(10.0) / 64.0));  // 0.9714
  // Without the operands: 39 targets uniform over 10 digits, 6 carries with P(1) = 99/200.
  const double carry = -0.495 * std::log(0.495) - 0.505 * std::log(0.505);
  CHECK(task.format_only_loss() == Approx((39.0 * std::log(10.0) + 6.0 * carry) / 64.0));
  const std::string text = task.decode(task.get(0).inputs);
  CHECK(text.size() == 64);
  CHECK(text.substr(0, 1) == ";");
  CHECK(text[3] == '+');
  CHECK(text[6] == '=');
  CHECK(text[10] == ';');
  CHECK(task.encode(text) == to_vec(task.get(0).inputs));
  CHECK(task.encode("12+34=046;") == std::vector<int32_t>{1, 2, 10, 3, 4, 11, 0, 4, 6, 12});
  CHECK_THROWS_AS(task.encode("1x2"), dspp::Error);
  const int32_t odd_ids[3] = {5, 13, -1};
  CHECK(task.decode(odd_ids, 3) == "5??");

  AdditionTaskOptions padded;
  padded.vocab_size = 16;
  padded.base = 12;
  padded.num_samples = 50;
  const AdditionTask p(padded);
  CHECK(p.vocab_size() == 16);
  CHECK(p.chance_loss() == Approx(std::log(16.0)));
  for (int64_t i = 0; i < 50; ++i) {
    for (int32_t tok : p.tokens(i)) CHECK((tok >= 0 && tok < 15));
  }
  CHECK(p.decode(p.encode(";ab+01=0b0;")) == ";ab+01=0b0;");
  AdditionTaskOptions bad;
  bad.vocab_size = 12;
  CHECK_THROWS_AS(AdditionTask(bad), dspp::Error);
  bad = AdditionTaskOptions{};
  bad.base = 37;
  CHECK_THROWS_AS(AdditionTask(bad), dspp::Error);
  CHECK_THROWS_AS(task.get(task.size()), dspp::Error);
}
