// Data parallelism is exact: ds-train run as W real processes (Gloo on loopback, ZeRO stage 0)
// with gradient accumulation GA must compute what one process computes on the same global batch.
// Each rank's loader takes a 1/W share of every global batch (DistributedSampler), the stage
// all-reduces the gradients, and every rank steps the same optimizer.
//
// Tolerance: both runs do the same arithmetic except the order of the gradient sums (per-rank
// means, then a ring all-reduce, instead of one mean over the batch): fp32 rounding, ~1e-7
// relative per step. Losses must agree to 2e-5 relative (measured: ~5e-8). Parameters:
// - SGD with momentum is linear in the gradient, so the rounding stays at its size: 1e-6 absolute
//   (measured 2e-8 after 8 steps at world 4, GA 2);
// - AdamW divides by sqrt(v): for an element whose gradient is at rounding-noise level, m/sqrt(v)
//   is itself noise of order 1, so single elements may differ by a fraction of one step's lr.
//   1e-4 absolute = 1% of lr (measured 9e-6 at world 2, GA 2).
// A real error (a missing average, a wrong shard, a skipped reduction) moves the loss by > 1e-3.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "catch.h"
#include "multiprocess.h"
#include "test_util.h"

namespace {

const char* kDsTrain = DSPP_BINARY_DIR "/bin/ds-train";
constexpr int kSteps = 8;
constexpr int kGlobalBatch = 16;

struct Run {
  std::vector<double> losses;  // per optimizer step, from the CSV (rank 0's, averaged over dp)
  std::vector<float> params;
  std::string output;
};

std::string temp_dir() {
  char tmpl[] = "/tmp/dspp-dist-train-XXXXXX";
  return ::mkdtemp(tmpl);
}

std::vector<double> read_losses(const std::string& csv) {
  std::ifstream in(csv);
  std::vector<double> out;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string step, loss;
    std::getline(s, step, ',');
    std::getline(s, loss, ',');
    out.push_back(std::stod(loss));
  }
  return out;
}

std::vector<float> read_params(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

// ds-train on `world` processes, each with micro = global / (world * ga).
// `dp` ranks share the data (the others of the world are sequence-parallel copies of them).
Run train(int world, int ga, const std::vector<std::string>& extra = {}, int steps = kSteps,
          int dp = 0) {
  const std::string dir = temp_dir();
  const int micro = kGlobalBatch / ((dp > 0 ? dp : world) * ga);
  mp::Launch l;
  l.exe = kDsTrain;
  l.world = world;
  l.args = {"--steps",        std::to_string(steps),
            "--n-layer",      "1",
            "--n-embd",       "32",
            "--n-head",       "2",
            "--context",      "16",
            "--eval-batches", "1",
            "--eval-every",   "0",
            "--set",          "train_micro_batch_size_per_gpu=" + std::to_string(micro),
            "--set",          "gradient_accumulation_steps=" + std::to_string(ga),
            "--csv",          dir + "/losses.csv",
            "--dump-params",  dir + "/params.bin"};
  l.args.insert(l.args.end(), extra.begin(), extra.end());
  l.env = {{"OMP_NUM_THREADS", "1"}, {"DSPP_TIMEOUT", "1"}};
  l.deadline_s = 120;
  std::vector<mp::RankResult> rs = mp::run(l);
  Run r;
  r.output = mp::describe(rs);
  for (const mp::RankResult& x : rs) {
    if (x.exit_code != 0) FAIL("world " << world << " GA " << ga << " failed:\n" << r.output);
  }
  r.losses = read_losses(dir + "/losses.csv");
  r.params = read_params(dir + "/params.bin");
  std::remove((dir + "/losses.csv").c_str());
  std::remove((dir + "/params.bin").c_str());
  ::rmdir(dir.c_str());
  return r;
}

void check_same(const Run& ref, const Run& got, double param_tol) {
  REQUIRE(ref.losses.size() == static_cast<size_t>(kSteps));
  REQUIRE(got.losses.size() == ref.losses.size());
  for (size_t i = 0; i < ref.losses.size(); ++i) {
    INFO("step " << i + 1 << ": single " << ref.losses[i] << " vs distributed " << got.losses[i]);
    CHECK(std::abs(got.losses[i] - ref.losses[i]) <= 2e-5 * std::abs(ref.losses[i]));
  }
  REQUIRE(got.params.size() == ref.params.size());
  REQUIRE(!ref.params.empty());
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < ref.params.size(); ++i) {
    const double d = std::abs(static_cast<double>(got.params[i]) - ref.params[i]);
    if (!(d <= worst)) worst = d, at = i;  // NaN counts as worst
  }
  INFO("largest parameter difference " << worst << " at element " << at << " of "
                                       << ref.params.size());
  CHECK(worst <= param_tol);
  // The run moved: a run that trained nothing would match trivially.
  CHECK(ref.losses.back() < ref.losses.front());
}

// The single-process ZeRO-0 run against worlds 1 (stages > 0), 2 and 4 with GA 1 and 2 at the
// given stage.
void check_worlds(std::vector<std::string> optimizer, double param_tol, int stage = 0) {
  const Run ref = train(1, 1, optimizer);
  optimizer.push_back("--set");
  optimizer.push_back("zero_optimization.stage=" + std::to_string(stage));
  for (int world : {1, 2, 4}) {
    if (world == 1 && stage == 0) continue;  // that is the reference itself
    for (int ga : {1, 2}) {
      INFO("ZeRO stage " << stage << " world " << world << " GA " << ga);
      check_same(ref, train(world, ga, optimizer), param_tol);
    }
  }
}

}  // namespace

TEST_CASE("ZeRO-0 over Gloo with AdamW: world 2 and 4, GA 1 and 2, equal one process") {
  check_worlds({}, 1e-4);  // ds-train's default config: AdamW, warmup + cosine, clipping 1.0
}

TEST_CASE("ZeRO-0 over Gloo with SGD momentum: world 2 and 4, GA 1 and 2, equal one process") {
  check_worlds({"--set", "optimizer.type=SGD", "--set",
                "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}"},
               1e-6);
}

TEST_CASE("ZeRO-1 over Gloo with AdamW and SGD: worlds 1 2 4 x GA 1 2 equal one process") {
  check_worlds({}, 1e-4, 1);
  check_worlds({"--set", "optimizer.type=SGD", "--set",
                "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}"},
               1e-6, 1);
}

TEST_CASE("ZeRO-1 with whole-parameter optimizers (Muon, Lamb): worlds 1 2 4 equal one process") {
  // Partitions cut at parameter boundaries; each rank orthogonalises (Muon) or takes the trust
  // ratio (Lamb) of the whole matrices it owns. Same tolerance reasoning as AdamW: both normalise.
  check_worlds({"--set", "optimizer.type=Muon"}, 1e-4, 1);
  check_worlds({"--set", "optimizer.type=Lamb"}, 1e-4, 1);
}

TEST_CASE("ZeRO-2 over Gloo with AdamW and SGD: worlds 1 2 4 x GA 1 2 equal one process") {
  // A small bucket (2000 elements) so that several buckets are reduced during each backward.
  check_worlds({"--set", "zero_optimization.reduce_bucket_size=2000"}, 1e-4, 2);
  check_worlds(
      {"--set", "optimizer.type=SGD", "--set", "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}",
       "--set", "zero_optimization.reduce_bucket_size=2000"},
      1e-6, 2);
}

TEST_CASE("ZeRO-2 with whole-parameter optimizers (Muon, Lamb): worlds 1 2 4 equal one process") {
  check_worlds({"--set", "optimizer.type=Muon"}, 1e-4, 2);
  check_worlds({"--set", "optimizer.type=Lamb"}, 1e-4, 2);
}

// ZeRO-3 with every parameter partitioned (persistence threshold 0), small reduction buckets and a
// small prefetch bucket, so that gathers run ahead of use and several buckets reduce per backward.
const std::vector<std::string> kStage3Partitioned = {
    "--set", "zero_optimization.stage3_param_persistence_threshold=0",
    "--set", "zero_optimization.stage3_prefetch_bucket_size=3000",
    "--set", "zero_optimization.reduce_bucket_size=2000"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_CASE("ZeRO-3 over Gloo with AdamW and SGD: worlds 1 2 4 x GA 1 2 equal one process") {
  check_worlds(kStage3Partitioned, 1e-4, 3);
  check_worlds(with({"--set", "optimizer.type=SGD", "--set",
                     "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}"},
                    kStage3Partitioned),
               1e-6, 3);
}

TEST_CASE("ZeRO-3 with whole-parameter optimizers (Muon, Lamb): worlds 1 2 4 equal one process") {
  check_worlds(with({"--set", "optimizer.type=Muon"}, kStage3Partitioned), 1e-4, 3);
  check_worlds(with({"--set", "optimizer.type=Lamb"}, kStage3Partitioned), 1e-4, 3);
}

TEST_CASE("ZeRO-3 with persistent small parameters and with zero::Init equals one process") {
  const std::vector<std::string> sgd = {"--set", "optimizer.type=SGD", "--set",
                                        "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}"};
  const Run ref = train(1, 1, sgd);
  // The default threshold (1e5 elements) keeps every parameter of this small model gathered.
  check_same(ref, train(2, 1, with(sgd, {"--set", "zero_optimization.stage=3"})), 1e-6);
  // Built under zero::Init (each module partitioned as it is built): at stage 3 the chunks go
  // straight to the stage; at stage 1 the engine gathers them whole first.
  for (int stage : {3, 1}) {
    INFO("zero::Init, stage " << stage);
    std::vector<std::string> a =
        with(with(sgd, kStage3Partitioned),
             {"--zero-init", "--set", "zero_optimization.stage=" + std::to_string(stage)});
    check_same(ref, train(4, 2, a), 1e-6);
  }
}

TEST_CASE("offload_optimizer cpu at stages 1 2 3 equals one process") {
  // On a CPU-only run the optimizer's states already live in host memory and are stepped by the
  // CPU kernels: offload changes nothing but must be accepted at every stage and keep the results.
  const std::vector<std::string> sgd = {"--set", "optimizer.type=SGD", "--set",
                                        "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}"};
  const Run ref = train(1, 1, sgd);
  for (int stage : {1, 2, 3}) {
    INFO("stage " << stage);
    check_same(ref,
               train(2, 1,
                     with(sgd, {"--set", "zero_optimization.stage=" + std::to_string(stage),
                                "--set", "zero_optimization.offload_optimizer.device=cpu"})),
               1e-6);
  }
}

TEST_CASE("zero::Init + ZeRO-3 at world 4 train a model whose whole states exceed a rank's limit") {
  // GPT 4 x 384 wide: Psi ~ 7.1M parameters. Built whole, a rank holds 4 Psi bytes of parameters
  // and 4 Psi of gradients before the engine even starts: 57 MB > the 48 MB limit, and the run
  // fails naming the limit. Built under zero::Init at stage 3, a rank holds a quarter of the
  // parameters, of the gradients and of Adam's two states (4 Psi bytes = 28 MB) plus bounded
  // buffers (reduction buckets of 2.5e5 elements, one module gathered, a prefetch of 5e5) and
  // activations: it fits, and it trains exactly as one unlimited process does.
  const std::vector<std::string> model = {
      "--n-layer", "4",
      "--n-embd",  "384",
      "--n-head",  "4",
      "--context", "8",
      "--set",     "zero_optimization.reduce_bucket_size=250000",
      "--set",     "zero_optimization.stage3_prefetch_bucket_size=500000",
      "--set",     "optimizer.type=SGD",
      "--set",     "optimizer.params={\"lr\": 0.05, \"momentum\": 0.9}"};
  const std::string dir = temp_dir();
  auto run = [&](int world, std::vector<std::string> extra, const std::string& limit) {
    extra.push_back("--csv");
    extra.push_back(dir + "/losses-" + std::to_string(world) + limit + ".csv");
    mp::Launch l;
    l.exe = kDsTrain;
    l.world = world;
    l.args = {
        "--steps",        "6",
        "--eval-every",   "0",
        "--eval-batches", "1",
        "--set",          "train_micro_batch_size_per_gpu=" + std::to_string(kGlobalBatch / world)};
    l.args.insert(l.args.end(), model.begin(), model.end());
    l.args.insert(l.args.end(), extra.begin(), extra.end());
    l.env = {{"OMP_NUM_THREADS", "1"}, {"DSPP_TIMEOUT", "1"}};
    if (!limit.empty()) l.env["DSPP_HOST_MEMORY_LIMIT"] = limit;
    l.deadline_s = 240;
    return mp::run(l);
  };
  const std::vector<mp::RankResult> ref = run(1, {}, "");
  REQUIRE(ref[0].exit_code == 0);
  const std::vector<std::string> stage3 = {"--set", "zero_optimization.stage=3"};

  const std::vector<mp::RankResult> whole = run(4, stage3, "48M");
  INFO(mp::describe(whole));
  CHECK(whole[0].exit_code != 0);
  CHECK(contains(mp::describe(whole), "DSPP_HOST_MEMORY_LIMIT"));

  std::vector<std::string> init = stage3;
  init.push_back("--zero-init");
  const std::vector<mp::RankResult> part = run(4, init, "48M");
  INFO(mp::describe(part));
  for (const mp::RankResult& r : part) REQUIRE(r.exit_code == 0);
  // The per-step losses equal the single unlimited process's.
  const std::vector<double> want = read_losses(dir + "/losses-1.csv");
  const std::vector<double> got = read_losses(dir + "/losses-448M.csv");
  REQUIRE(want.size() == 6);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i + 1 << ": one process " << want[i] << ", zero::Init world 4 " << got[i]);
    CHECK(std::abs(got[i] - want[i]) <= 2e-5 * std::abs(want[i]));
  }
  CHECK(want.back() < want.front());
  std::filesystem::remove_all(dir);
}

TEST_CASE("the file store (DSPP_INIT_METHOD=file://) starts a world 2 run equal to one process") {
  const std::string dir = temp_dir();
  const Run ref = train(1, 1);
  mp::Launch l;
  l.exe = kDsTrain;
  l.world = 2;
  l.args = {"--steps",        std::to_string(kSteps),
            "--n-layer",      "1",
            "--n-embd",       "32",
            "--n-head",       "2",
            "--context",      "16",
            "--eval-batches", "1",
            "--eval-every",   "0",
            "--set",          "train_micro_batch_size_per_gpu=" + std::to_string(kGlobalBatch / 2),
            "--dump-params",  dir + "/params.bin"};
  // No MASTER_PORT is served: the ranks meet in the folder. (mp::run still sets the variables.)
  l.env = {{"OMP_NUM_THREADS", "1"},
           {"DSPP_TIMEOUT", "1"},
           {"DSPP_INIT_METHOD", "file://" + dir + "/store"}};
  const std::vector<mp::RankResult> rs = mp::run(l);
  for (const mp::RankResult& r : rs) {
    INFO(mp::describe(rs));
    REQUIRE(r.exit_code == 0);
  }
  const std::vector<float> got = read_params(dir + "/params.bin");
  REQUIRE(got.size() == ref.params.size());
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref.params[i]));
  }
  CHECK(worst <= 1e-4);  // AdamW, as in the ZeRO-0 test above
  CHECK(std::filesystem::exists(dir + "/store"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("mesh dp 2 x sp 2 at world 4: loader shards by dp, gradients average over dp x sp") {
  // The layers do not split sequences, so the two ranks of an sp group compute the same thing;
  // the run must equal one process on the same global batch.
  const std::vector<std::string> mesh = {"--set", "data_parallel_size=2", "--set",
                                         "sequence_parallel_size=2"};
  const Run ref = train(1, 1);
  check_same(ref, train(4, 2, mesh, kSteps, /*dp=*/2), 1e-4);
}

TEST_CASE("ZeRO-0: a summed reduction is W times the mean (gradient_allreduce_op)") {
  // SGD without momentum: with sum the update is exactly world x the mean's, so after one step
  // the parameter change doubles at world 2.
  const std::vector<std::string> sgd = {
      "--set", "optimizer.type=SGD", "--set", "optimizer.params={\"lr\": 0.05}",
      "--set", "scheduler=null",     "--set", "gradient_clipping=0"};
  auto with = [&](std::vector<std::string> v, const std::string& op) {
    v.push_back("--set");
    v.push_back("gradient_allreduce_op=\"" + op + "\"");
    return v;
  };
  const Run mean = train(2, 1, with(sgd, "mean"), 1);
  const Run sum = train(2, 1, with(sgd, "sum"), 1);
  REQUIRE(mean.params.size() == sum.params.size());
  // Recover the initial parameters from the mean run: p0 = p_mean + lr * g, p_sum = p0 - 2 lr g,
  // so p_sum - p0 = 2 (p_mean - p0), i.e. p_sum = 2 p_mean - p0. p0 comes from a zero-lr run.
  const Run zero =
      train(2, 1,
            with({"--set", "optimizer.type=SGD", "--set", "optimizer.params={\"lr\": 0.0}", "--set",
                  "scheduler=null", "--set", "gradient_clipping=0"},
                 "mean"),
            1);
  double worst = 0.0, moved = 0.0;
  for (size_t i = 0; i < mean.params.size(); ++i) {
    const double p0 = zero.params[i];
    const double dm = mean.params[i] - p0;
    const double ds = sum.params[i] - p0;
    worst = std::max(worst, std::abs(ds - 2.0 * dm));
    moved = std::max(moved, std::abs(dm));
  }
  INFO("largest |(p_sum - p0) - 2 (p_mean - p0)| = " << worst << ", largest mean step " << moved);
  CHECK(moved > 1e-4);
  CHECK(worst <= 1e-6 + 1e-4 * moved);
}

namespace {

// A long ds-train run as `world` processes, started (or not) and killed as the Launch says.
std::vector<mp::RankResult> long_run(mp::Launch l) {
  l.exe = kDsTrain;
  l.args = {"--steps",   "100000", "--n-layer",    "1", "--n-embd",      "32", "--n-head", "2",
            "--context", "16",     "--eval-every", "0", "--print-every", "5"};
  // 0.1 min: every wait for a missing peer ends within 6 s.
  l.env = {{"OMP_NUM_THREADS", "1"}, {"DSPP_TIMEOUT", "0.1"}};
  l.deadline_s = 60;
  return mp::run(l);
}

}  // namespace

TEST_CASE("a rank killed mid-run: the others stop with an error naming it, within the timeout") {
  for (int victim : {1, 0}) {
    mp::Launch l;
    l.world = 3;
    l.kill_rank = victim;
    l.kill_after_text = "step 10/";  // rank 0's progress line: training is under way
    l.kill_after_s = 0.5;
    const std::vector<mp::RankResult> rs = long_run(l);
    INFO("killed rank " << victim << "\n" << mp::describe(rs));
    for (const mp::RankResult& r : rs) {
      if (r.rank == victim) {
        CHECK(r.signal == SIGKILL);
        continue;
      }
      CHECK_FALSE(r.killed_at_deadline);
      CHECK(r.exit_code == 1);
      REQUIRE(r.kill_sent_s > 0);
      CHECK(r.seconds - r.kill_sent_s < 6.0 + 3.0);  // within the timeout, plus exit slack
      CHECK(contains(r.output, "ds-train: error:"));
      if (victim == 1) {
        CHECK(contains(r.output, "rank 1 exited or was killed"));
      } else {
        CHECK(contains(r.output, "rank 0's store"));
      }
    }
  }
}

TEST_CASE("a rank that never starts: the others fail naming it, within the timeout") {
  mp::Launch l;
  l.world = 3;
  l.start = {0, 1};
  const std::vector<mp::RankResult> rs = long_run(l);
  INFO(mp::describe(rs));
  for (const mp::RankResult& r : rs) {
    CHECK_FALSE(r.killed_at_deadline);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "rank 2 of 3 did not arrive within 0.1 min (DSPP_TIMEOUT)"));
  }
}

TEST_CASE("ranks that loaded different plugins all fail, naming the rank and the plugin") {
  // Rank 1's plugin_paths folder holds one more plugin than rank 0's (which is empty).
  const std::string dir = temp_dir();
  ::mkdir((dir + "/r0").c_str(), 0755);
  ::mkdir((dir + "/r1").c_str(), 0755);
  const std::string lib = "libdspp_scheduler_testconst.so";
  {
    std::ifstream src(std::string(DSPP_TEST_PLUGIN_DIR) + "/good/" + lib, std::ios::binary);
    std::ofstream dst(dir + "/r1/" + lib, std::ios::binary);
    dst << src.rdbuf();
  }
  mp::Launch l;
  l.exe = kDsTrain;
  l.world = 2;
  l.args = {"--steps",   "2",  "--n-layer", "1",
            "--n-embd",  "32", "--n-head",  "2",
            "--context", "16", "--set",     "plugin_paths=[\"" + dir + "/r{rank}\"]"};
  l.env = {{"OMP_NUM_THREADS", "1"}, {"DSPP_TIMEOUT", "0.2"}};
  l.deadline_s = 60;
  const std::vector<mp::RankResult> rs = mp::run(l);
  INFO(mp::describe(rs));
  for (const mp::RankResult& r : rs) {
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "the ranks loaded different plugins"));
    CHECK(contains(r.output, "only on rank 1:"));
    CHECK(contains(r.output, "scheduler/testconst"));
  }
  std::remove((dir + "/r1/" + lib).c_str());
  ::rmdir((dir + "/r1").c_str());
  ::rmdir((dir + "/r0").c_str());
  ::rmdir(dir.c_str());
}

namespace {

// The numbers after `key` in rank 0's "model states" / "communication" lines.
int64_t number_after(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + key.size()));
}

std::string rank0_output(int world, const std::vector<std::string>& extra) {
  mp::Launch l;
  l.exe = kDsTrain;
  l.world = world;
  l.args = {"--steps",   "4",  "--n-layer",    "1", "--n-embd",       "32", "--n-head", "2",
            "--context", "16", "--eval-every", "0", "--eval-batches", "1"};
  l.args.insert(l.args.end(), extra.begin(), extra.end());
  l.env = {{"OMP_NUM_THREADS", "1"}, {"DSPP_TIMEOUT", "1"}};
  const std::vector<mp::RankResult> rs = mp::run(l);
  for (const mp::RankResult& r : rs) {
    if (r.exit_code != 0) FAIL(mp::describe(rs));
  }
  return rs[0].output;
}

}  // namespace

TEST_CASE("model-state bytes per rank follow the ZeRO paper's partitioning (fp32, Adam)") {
  // fp32 training holds 4 bytes of parameters, 4 of gradients and 8 of Adam state (exp_avg,
  // exp_avg_sq) per parameter; stage 1 divides the state by Nd, stage 2 the gradients too. The
  // flat buffer is padded to 16 x Nd elements, so measured bytes may exceed the formula by that
  // padding (< 0.5% here). Stage 2's reduction buckets (reduce_bucket_size, reported apart as
  // buffers) are not model states, as in the paper. Psi = the parameter count ds-train prints.
  // Stage 3 partitions the parameters too (persistence threshold 0: none kept whole); its
  // per-parameter padding is at most 16 x Nd elements per parameter.
  for (int stage : {0, 1, 2, 3}) {
    for (int world : {1, 2, 4}) {
      INFO("stage " << stage << " world " << world);
      const std::string out =
          rank0_output(world, {"--set", "zero_optimization.stage=" + std::to_string(stage), "--set",
                               "zero_optimization.stage3_param_persistence_threshold=0"});
      const size_t p = out.find(" parameters\n");
      REQUIRE(p != std::string::npos);
      const double psi = std::stod(out.substr(out.rfind(", ", p) + 2));
      const double params = static_cast<double>(number_after(out, "): parameters "));
      const double grads = static_cast<double>(number_after(out, "gradients "));
      const double states = static_cast<double>(number_after(out, "optimizer states "));
      const double nd = world;
      auto near = [](double measured, double formula) {
        return measured >= formula && measured <= formula * 1.005;
      };
      CHECK(near(params, stage >= 3 ? 4 * psi / nd : 4 * psi));
      CHECK(near(grads, stage >= 2 ? 4 * psi / nd : 4 * psi));
      CHECK(near(states, stage >= 1 ? 8 * psi / nd : 8 * psi));
    }
  }
}

TEST_CASE(
    "communication per step: stages 0-2 move 2 Psi (one all-reduce) and stage 3 moves 3 Psi") {
  // Bandwidth-optimal algorithms send per rank: all_reduce 2(n-1)/n of its buffer,
  // reduce_scatter (n-1)/n of its input, reduce (n-1)/n of its buffer, all_gather (n-1)/n of its
  // output, broadcast (n-1)/n of its buffer (a pipelined ring: every rank but the root receives
  // it once). The paper's volume for stages 0-2 is 2 Psi x (n-1)/n x 4 bytes per step (GA 1);
  // stage 3 gathers the parameters for forward and again for backward: 3 Psi. Small extra
  // collectives (the loss average, the norm) are < 0.1%.
  for (int stage : {0, 1, 2, 3}) {
    for (int world : {2, 4}) {
      INFO("stage " << stage << " world " << world);
      const std::string out =
          rank0_output(world, {"--set", "zero_optimization.stage=" + std::to_string(stage), "--set",
                               "zero_optimization.stage3_param_persistence_threshold=0"});
      const size_t p = out.find(" parameters\n");
      REQUIRE(p != std::string::npos);
      const double psi = std::stod(out.substr(out.rfind(", ", p) + 2));
      const size_t line = out.find("communication per step");
      REQUIRE(line != std::string::npos);
      const std::string comm = out.substr(line, out.find('\n', line) - line);
      const double n = world;
      double wire = 0.0;
      for (auto [op, factor] :
           {std::pair{"all_reduce ", 2 * (n - 1) / n}, std::pair{"reduce_scatter ", (n - 1) / n},
            std::pair{" reduce ", (n - 1) / n}, std::pair{"all_gather ", (n - 1) / n},
            std::pair{"broadcast ", (n - 1) / n}}) {
        const size_t at = comm.find(op);
        if (at == std::string::npos) continue;
        const size_t x = comm.find("x ", at);
        wire += factor * std::stod(comm.substr(x + 2));
      }
      double paper = (stage == 3 ? 3 : 2) * psi * (n - 1) / n * 4;
      if (stage == 3) {
        // GPT's lm_head reads the tied token embedding (vocab x 32) after wte has released it:
        // stage 3 gathers it once per reader, twice more per step than the paper counts.
        const int64_t vocab = number_after(out, " vocab=");
        REQUIRE(vocab > 0);
        paper += 2.0 * static_cast<double>(vocab) * 32 * (n - 1) / n * 4;
      }
      INFO(comm << " -> " << wire << " B on the wire, paper " << paper);
      CHECK(wire >= paper);
      CHECK(wire <= paper * 1.01);
      if (stage == 1) CHECK(contains(comm, "reduce_scatter"));
      if (stage >= 2) CHECK(contains(comm, " reduce "));
      if (stage == 3) CHECK(contains(comm, "broadcast "));
    }
  }
}
