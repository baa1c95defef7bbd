// Engine checkpoints through ds-train (real processes, Gloo on loopback). The reference is one
// uninterrupted process: a run saved at step 4 at world 4 / ZeRO-2 and resumed at world 2 /
// ZeRO-3 or at world 1 / ZeRO-0 must produce the uninterrupted run's losses for steps 5-8 (the
// same arithmetic on the same global batches, so within fp32 reduction-order noise: 2e-5
// relative; AdamW's states and the LR schedule position must come back exactly for that).
// A rank killed at each point of a save leaves the previous checkpoint loadable; a flipped byte
// is refused naming the shard.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <dspp/initialize.h>
#include <dspp/models.h>

#include "catch.h"
#include "multiprocess.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
const char* kDsTrain = DSPP_BINARY_DIR "/bin/ds-train";
constexpr int kGlobalBatch = 16;

std::string temp_dir() {
  char tmpl[] = "/tmp/dspp-ckpt-train-XXXXXX";
  return ::mkdtemp(tmpl);
}

std::vector<double> read_losses(const std::string& csv) {
  std::ifstream in(csv);
  std::vector<double> out;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) out.push_back(std::stod(line.substr(line.find(',') + 1)));
  return out;
}

// ds-train at `world` with the same schedule whatever --steps is (total 8, warmup 2).
std::vector<mp::RankResult> train(int world, int steps, std::vector<std::string> extra,
                                  std::map<std::string, std::string> env = {}) {
  mp::Launch l;
  l.exe = kDsTrain;
  l.world = world;
  l.args = {
      "--steps",        std::to_string(steps),
      "--n-layer",      "1",
      "--n-embd",       "32",
      "--n-head",       "2",
      "--context",      "16",
      "--eval-every",   "0",
      "--eval-batches", "1",
      "--warmup",       "2",
      "--set",          "scheduler.params.total_num_steps=8",
      "--set",          "train_micro_batch_size_per_gpu=" + std::to_string(kGlobalBatch / world)};
  l.args.insert(l.args.end(), extra.begin(), extra.end());
  env["OMP_NUM_THREADS"] = "1";
  env["DSPP_TIMEOUT"] = "0.5";
  l.env = env;
  l.deadline_s = 120;
  return mp::run(l);
}

void require_ok(const std::vector<mp::RankResult>& rs) {
  for (const mp::RankResult& r : rs) {
    if (r.exit_code != 0) FAIL(mp::describe(rs));
  }
}

std::string stage(int s) {
  return "zero_optimization.stage=" + std::to_string(s);
}

std::string latest_of(const std::string& dir) {
  std::ifstream in(dir + "/latest");
  std::string tag;
  std::getline(in, tag);
  return tag;
}

}  // namespace

TEST_CASE(
    "saved at world 4 ZeRO-2 and resumed at world 2 ZeRO-3 or world 1 ZeRO-0: uninterrupted") {
  const std::string dir = temp_dir();
  require_ok(train(1, 8, {"--csv", dir + "/whole.csv"}));
  const std::vector<double> whole = read_losses(dir + "/whole.csv");
  REQUIRE(whole.size() == 8);
  require_ok(train(4, 4, {"--set", stage(2), "--save", dir + "/ck"}));
  CHECK(latest_of(dir + "/ck") == "global_step4");

  struct Resume {
    int world;
    std::vector<std::string> args;
  };
  const Resume resumes[] = {
      {2, {"--set", stage(3), "--set", "zero_optimization.stage3_param_persistence_threshold=0"}},
      {1, {"--set", stage(0)}},
      {4, {"--set", stage(1)}}};
  for (const Resume& r : resumes) {
    INFO("resumed at world " << r.world << " " << r.args[1]);
    std::vector<std::string> a = r.args;
    a.insert(a.end(), {"--resume", dir + "/ck", "--csv", dir + "/resumed.csv"});
    const std::vector<mp::RankResult> rs = train(r.world, 8, a);
    require_ok(rs);
    CHECK(contains(rs[0].output, "resumed from " + dir + "/ck/global_step4 at step 5"));
    const std::vector<double> got = read_losses(dir + "/resumed.csv");
    REQUIRE(got.size() == 4);
    for (size_t i = 0; i < 4; ++i) {
      INFO("step " << i + 5 << ": uninterrupted " << whole[i + 4] << ", resumed " << got[i]);
      CHECK(std::abs(got[i] - whole[i + 4]) <= 2e-5 * std::abs(whole[i + 4]));
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("a rank killed at any point of a save leaves the previous checkpoint loadable") {
  // point[:rank] of DSPP_CHECKPOINT_CRASH_AT: inside rank 1's shard write (before its rename),
  // after rank 1's shard, after rank 0's manifest, just before rank 0 moves `latest`.
  for (const std::string point :
       {"before_rename:1", "shard_written:1", "manifest_written", "before_latest"}) {
    INFO("crash at " << point);
    const std::string dir = temp_dir();
    require_ok(train(2, 2, {"--save", dir + "/ck"}));
    REQUIRE(latest_of(dir + "/ck") == "global_step2");
    const std::vector<mp::RankResult> crashed =
        train(2, 4, {"--resume", dir + "/ck", "--save", dir + "/ck"},
              {{"DSPP_CHECKPOINT_CRASH_AT", point}});
    bool someone_died = false;
    for (const mp::RankResult& r : crashed) someone_died = someone_died || r.exit_code != 0;
    CHECK(someone_died);
    CHECK(latest_of(dir + "/ck") == "global_step2");
    const ToolRun verify = run_tool(DS_CHECKPOINT_BIN, "verify " + dir + "/ck");
    const std::string out = verify.out + verify.err;
    CHECK(verify.rc == 0);
    INFO(out);
    const std::vector<mp::RankResult> again = train(2, 3, {"--resume", dir + "/ck"});
    require_ok(again);
    CHECK(contains(again[0].output, "resumed from " + dir + "/ck/global_step2 at step 3"));
    fs::remove_all(dir);
  }
}

TEST_CASE("a flipped byte in a shard: the load refuses, naming the file") {
  const std::string dir = temp_dir();
  require_ok(train(2, 2, {"--save", dir + "/ck"}));
  const std::string shard = dir + "/ck/global_step2/rank_00001.safetensors";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    f.seekg(size - 5);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(size - 5);
    f.write(&c, 1);
  }
  const std::vector<mp::RankResult> rs = train(2, 3, {"--resume", dir + "/ck"});
  CHECK(rs[0].exit_code != 0);
  CHECK(contains(mp::describe(rs), "rank_00001.safetensors"));
  const ToolRun verify = run_tool(DS_CHECKPOINT_BIN, "verify " + dir + "/ck");
  const std::string out = verify.out + verify.err;
  CHECK(verify.rc != 0);
  CHECK(contains(out, "rank_00001.safetensors"));
  fs::remove_all(dir);
}

TEST_CASE("load_module_only and load_lr_scheduler_states=false restore what DeepSpeed's do") {
  const std::string dir = temp_dir();
  auto make = [](uint64_t seed) {
    dspp::InitializeArgs a;
    a.model = std::make_shared<dspp::GPT>(dspp::GPTConfig{13, 64, 1, 2, 32}, seed);
    a.training_data = std::make_shared<dspp::AdditionTask>();
    a.config = R"({"train_micro_batch_size_per_gpu": 4,
                   "optimizer": {"type": "AdamW", "params": {"lr": 0.01}},
                   "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}})";
    return dspp::initialize(a);
  };
  auto values = [](dspp::Engine& e) {
    dspp::zero::GatheredParameters g(e);
    std::vector<float> v;
    for (dspp::Parameter* p : e.module().parameters()) {
      v.insert(v.end(), p->value.data<float>(), p->value.data<float>() + p->value.numel());
    }
    return v;
  };
  auto saved = make(1);
  for (int s = 0; s < 3; ++s) {
    const float l = saved.engine->forward(saved.dataloader->next());
    saved.engine->backward(l);
    saved.engine->step();
  }
  saved.engine->save_checkpoint(dir, "t", R"({"note": "x"})");
  const std::vector<float> want = values(*saved.engine);

  // Module only: the parameters come back, the counters and the schedule do not.
  auto m = make(2);
  REQUIRE(values(*m.engine) != want);
  const auto got = m.engine->load_checkpoint(dir, "t", true, true, /*load_module_only=*/true);
  CHECK(got.client_state == R"({"note":"x"})");
  CHECK(values(*m.engine) == want);
  CHECK(m.engine->global_steps() == 0);
  CHECK(m.engine->get_lr() == make(3).engine->get_lr());

  // Everything but the scheduler: the counters come back, the lr stays at the schedule's start.
  auto n = make(2);
  n.engine->load_checkpoint(dir, "t", true, /*load_lr_scheduler_states=*/false, false);
  CHECK(values(*n.engine) == want);
  CHECK(n.engine->global_steps() == 3);
  CHECK(n.engine->get_lr() == make(3).engine->get_lr());
  CHECK(n.engine->get_lr() != saved.engine->get_lr());
  // And with it, the lr continues where the saved run is.
  auto f = make(2);
  f.engine->load_checkpoint(dir, "t");
  CHECK(f.engine->get_lr() == saved.engine->get_lr());
  fs::remove_all(dir);
}
