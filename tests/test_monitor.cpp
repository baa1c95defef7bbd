// DeepSpeed's monitors: csv_monitor files and rows after engine steps (one process and rank 0 of
// two), and the comms logger against the counting layer's stats() and DeepSpeed's bandwidth
// formulas.
#include <dspp/dist.h>
#include <dspp/initialize.h>
#include <dspp/models.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "log/log.h"
#include "monitor/csv_monitor.h"
#include "multiprocess.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

std::string temp_dir() {
  char tmpl[] = "/tmp/dspp-monitor-XXXXXX";
  return ::mkdtemp(tmpl);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The lines of a file written with "\r\n" endings (as Python's csv.writer writes them).
std::vector<std::string> crlf_lines(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = text.find("\r\n", at);
    if (end == std::string::npos) {
      out.push_back("<no CRLF>" + text.substr(at));
      break;
    }
    out.push_back(text.substr(at, end - at));
    at = end + 2;
  }
  return out;
}

struct Row {
  int64_t step;
  double value;
};

std::vector<Row> rows_of(const std::vector<std::string>& lines) {
  std::vector<Row> out;
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t comma = lines[i].find(',');
    out.push_back({std::stoll(lines[i].substr(0, comma)), std::stod(lines[i].substr(comma + 1))});
  }
  return out;
}

dspp::Batch regression_batch(int64_t b, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  dspp::Batch batch{dspp::Tensor::empty({b, 3}), dspp::Tensor::empty({b, 2})};
  for (int64_t i = 0; i < b * 3; ++i) batch.inputs.data<float>()[i] = u(rng);
  for (int64_t i = 0; i < b * 2; ++i) batch.targets.data<float>()[i] = u(rng);
  return batch;
}

}  // namespace

TEST_CASE("python_float writes what Python's repr writes") {
  using dspp::monitor::python_float;
  CHECK(python_float(2.0) == "2.0");
  CHECK(python_float(0.1) == "0.1");
  CHECK(python_float(-1.5) == "-1.5");
  CHECK(python_float(0.0001) == "0.0001");
  CHECK(python_float(1e-05) == "1e-05");
  CHECK(python_float(1.5e-07) == "1.5e-07");
  CHECK(python_float(123456.0) == "123456.0");
  CHECK(python_float(1e16) == "1e+16");
  CHECK(python_float(0.0) == "0.0");
  CHECK(python_float(static_cast<double>(2.3f)) == "2.299999952316284");
}

TEST_CASE("csv_monitor: DeepSpeed's files and rows after engine steps with GA 2") {
  const std::string dir = temp_dir();
  const int64_t ga = 2, micro = 4, steps = 3;
  auto model = std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 8, 2}, dspp::MLPLoss::kMSE}, 7);
  dspp::InitializeArgs a;
  a.model = model;
  a.config = R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                 "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
                 "scheduler": {"type": "WarmupLR",
                               "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.1,
                                          "warmup_num_steps": 4, "warmup_type": "linear"}},
                 "csv_monitor": {"enabled": true, "output_path": ")" +
             dir + R"(/out/", "job_name": "my job"}})";
  auto [engine, optimizer, loader, sched] = dspp::initialize(a);

  // What DeepSpeed writes: at the boundary backward, the window's sum of loss / GA (fp32) at
  // global_samples before the step; after the step, get_lr()[0] at global_samples after it.
  std::vector<Row> want_loss, want_lr;
  for (int64_t s = 0; s < steps; ++s) {
    float window = 0.0f;
    const int64_t samples_before = engine->global_samples();
    for (int64_t m = 0; m < ga; ++m) {
      const float loss = engine->forward(regression_batch(micro, 10 * s + m));
      window += loss / static_cast<float>(ga);
      engine->backward(loss);
      engine->step();
    }
    want_loss.push_back({samples_before, window});
    want_lr.push_back({engine->global_samples(), engine->get_lr()[0]});
  }

  const std::string job = dir + "/out/my job";
  // Every event is a file named by its path with '/' and ' ' as '_'; nothing else is written.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(job)) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  REQUIRE(files ==
          std::vector<std::string>{"Train_Samples_lr.csv", "Train_Samples_train_loss.csv"});

  const auto loss_lines = crlf_lines(job + "/Train_Samples_train_loss.csv");
  const auto lr_lines = crlf_lines(job + "/Train_Samples_lr.csv");
  REQUIRE(loss_lines.size() == static_cast<size_t>(steps) + 1);
  REQUIRE(lr_lines.size() == static_cast<size_t>(steps) + 1);
  CHECK(loss_lines[0] == "step,train_loss");
  CHECK(lr_lines[0] == "step,lr");
  const auto loss_rows = rows_of(loss_lines);
  const auto lr_rows = rows_of(lr_lines);
  for (size_t i = 0; i < static_cast<size_t>(steps); ++i) {
    INFO("step " << i + 1 << ": " << loss_lines[i + 1] << " / " << lr_lines[i + 1]);
    CHECK(loss_rows[i].step == want_loss[i].step);
    CHECK(loss_rows[i].value == want_loss[i].value);  // repr round-trips exactly
    CHECK(lr_rows[i].step == want_lr[i].step);
    CHECK(lr_rows[i].value == want_lr[i].value);
  }
  CHECK(loss_rows[0].step == 0);
  CHECK(lr_rows[0].step == 8);  // train_batch_size = 4 x GA 2
  // The warmup moves the lr: the rows are not one constant.
  CHECK(lr_rows[2].value > lr_rows[0].value);
  fs::remove_all(dir);
}

TEST_CASE("csv_monitor off by default writes nothing") {
  const std::string dir = temp_dir();
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  {
    auto model = std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 4, 2}, dspp::MLPLoss::kMSE}, 1);
    dspp::InitializeArgs a;
    a.model = model;
    a.config = R"({"train_micro_batch_size_per_gpu": 2,
                   "optimizer": {"type": "SGD", "params": {"lr": 0.1}}})";
    auto [engine, optimizer, loader, sched] = dspp::initialize(a);
    engine->backward(engine->forward(regression_batch(2, 1)));
    engine->step();
  }
  fs::current_path(cwd);
  CHECK(fs::is_empty(dir));
  fs::remove_all(dir);
}

namespace {

// A two-rank communicator whose every operation completes 2 ms after it is issued, at wait():
// the comms logger must time issue -> completion.
class SlowWork final : public dspp::CommWork {
 public:
  dspp_status wait() noexcept override {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return DSPP_OK;
  }
  void release() noexcept override { delete this; }
};

class SlowCommunicator final : public dspp::Communicator {
 public:
  int32_t rank() const noexcept override { return 0; }
  int32_t size() const noexcept override { return 2; }
  dspp_status split(const int32_t*, int32_t, const char*,
                    dspp::Communicator** out) noexcept override {
    *out = nullptr;
    return DSPP_ERR_NOT_SUPPORTED;
  }
  void release() noexcept override { delete this; }
  dspp_status all_reduce(dspp_tensor_view, int32_t, dspp::CommWork** w) noexcept override {
    return done(w);
  }
  dspp_status reduce_scatter(dspp_tensor_view, dspp_tensor_view, int32_t,
                             dspp::CommWork** w) noexcept override {
    return done(w);
  }
  dspp_status all_gather(dspp_tensor_view, dspp_tensor_view, dspp::CommWork** w) noexcept override {
    return done(w);
  }
  dspp_status broadcast(dspp_tensor_view, int32_t, dspp::CommWork** w) noexcept override {
    return done(w);
  }
  dspp_status send(dspp_tensor_view, int32_t, int32_t, dspp::CommWork** w) noexcept override {
    return done(w);
  }
  dspp_status recv(dspp_tensor_view, int32_t, int32_t, dspp::CommWork** w) noexcept override {
    return done(w);
  }
  dspp_status barrier() noexcept override {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return DSPP_OK;
  }
  dspp_status reduce(dspp_tensor_view, int32_t, int32_t, dspp::CommWork** w) noexcept override {
    return done(w);
  }

 private:
  static dspp_status done(dspp::CommWork** w) {
    *w = new SlowWork();
    return DSPP_OK;
  }
};

std::shared_ptr<dspp::ProcessGroup> slow_group() {
  return std::make_shared<dspp::ProcessGroup>(
      "slow", std::vector<int>{0, 1}, 0,
      std::shared_ptr<dspp::Communicator>(new SlowCommunicator(),
                                          [](dspp::Communicator* c) { c->release(); }));
}

// Every collective of the group once or more, of two sizes.
void run_collectives(dspp::ProcessGroup& g) {
  dspp::Tensor a = dspp::Tensor::zeros({256});
  dspp::Tensor b = dspp::Tensor::zeros({1024});
  dspp::Tensor half = dspp::Tensor::zeros({512});
  g.all_reduce(a, dspp::kReduceSum);
  g.all_reduce(a, dspp::kReduceSum);
  g.all_reduce(b, dspp::kReduceSum);
  g.broadcast(a, 0);
  g.all_gather(half, b);
  g.reduce_scatter(b, half, dspp::kReduceSum);
  g.barrier();
  dspp::CommWork* w = nullptr;
  REQUIRE(g.comm()->reduce(a.view(), 0, 0, &w) == DSPP_OK);
  REQUIRE(w->wait() == DSPP_OK);
  w->release();
}

}  // namespace

TEST_CASE("comms logger: counts and bytes equal stats(), latency issue to wait, DeepSpeed's bw") {
  auto g = slow_group();
  run_collectives(*g);  // before the logger is on: counted, not recorded
  CHECK(g->comms_records().empty());
  g->reset_stats();

  dspp::CommsLogOptions o;
  o.enabled = true;
  g->set_comms_logging(o);
  run_collectives(*g);
  const dspp::CommStats stats = g->stats();
  const dspp::CommRecords rec = g->comms_records();

  std::vector<std::string> ops;
  for (const auto& [op, sizes] : rec) ops.push_back(op);
  CHECK(ops == std::vector<std::string>{"all_gather", "all_reduce", "barrier", "broadcast",
                                        "reduce", "reduce_scatter"});
  for (const auto& [op, c] : stats) {
    INFO(op);
    REQUIRE(rec.count(op) == 1);
    int64_t calls = 0, bytes = 0;
    for (const auto& [size, r] : rec.at(op)) {
      calls += r.count;
      bytes += r.count * size;
      REQUIRE(r.latency_ms.size() == static_cast<size_t>(r.count));
      for (size_t i = 0; i < r.latency_ms.size(); ++i) {
        const double ms = r.latency_ms[i];
        CHECK(ms >= 2.0);  // SlowWork completes 2 ms after the issue
        CHECK(ms < 2000.0);
        // DeepSpeed's calc_bw_log with n = 2, in Gbps (bytes / ms * 8 / 1e6).
        const double s = static_cast<double>(size) / ms * 8.0 / 1e6;
        double alg = s, bus = s;
        if (op == "all_reduce") alg = 2.0 * s, bus = s * 2.0 * (2 - 1) / 2;
        if (op == "all_gather" || op == "reduce_scatter") bus = s * (2 - 1) / 2.0;
        CHECK(r.algbw_gbps[i] == Approx(alg).epsilon(1e-12));
        CHECK(r.busbw_gbps[i] == Approx(bus).epsilon(1e-12));
      }
    }
    CHECK(calls == c.calls);
    CHECK(bytes == c.bytes);
  }
  CHECK(rec.at("all_reduce").at(1024).count == 2);
  CHECK(rec.at("all_reduce").at(4096).count == 1);
  CHECK(rec.at("all_gather").count(4096) == 1);  // the output buffer, as stats() counts

  // DeepSpeed's log_all table: every op and each of its sizes.
  const std::string table = dspp::format_comms_summary(rec);
  INFO(table);
  CHECK(table.rfind("Comm. Op            Message Size        Count               "
                    "Total Latency(ms)   Avg Latency(ms)     tput_avg (Gbps)     busbw_avg (Gbps)",
                    0) == 0);
  for (const std::string& op : ops) CHECK(contains(table, "\n" + op + "\n"));
  CHECK(contains(table, "                    1.0 KB              2                   "));
  CHECK(contains(table, "                    4.0 KB              1                   "));
  CHECK(contains(table, "                    0B                  1                   "));
}

TEST_CASE("comms logger: prof_ops limits the record, verbose logs each op, off costs nothing") {
  auto g = slow_group();
  dspp::CommsLogOptions o;
  o.enabled = true;
  o.prof_all = false;
  o.prof_ops = {"all_gather"};
  o.verbose = true;
  o.lead = true;
  std::vector<std::string> lines;
  dspp::log::set_sink([&](dspp::log::Level, std::string_view m) { lines.emplace_back(m); });
  g->set_comms_logging(o);
  run_collectives(*g);
  dspp::log::set_sink({});
  const dspp::CommRecords rec = g->comms_records();
  REQUIRE(rec.size() == 1);
  CHECK(rec.begin()->first == "all_gather");
  REQUIRE(lines.size() == 1);
  CHECK(contains(lines[0], "comm op: all_gather | time (ms): "));
  CHECK(contains(lines[0], " | msg size: 4.0 KB | algbw (Gbps): "));

  o.enabled = false;
  g->set_comms_logging(o);
  g->reset_comms_records();
  run_collectives(*g);
  CHECK(g->comms_records().empty());
  CHECK(g->stats().at("all_reduce").calls == 6);  // the counting layer counts regardless
}

TEST_CASE("comm_bandwidth and format_message_size follow DeepSpeed") {
  // 1 MB in 1 ms = 8.388608 Gbps of one buffer.
  const auto ar = dspp::comm_bandwidth("all_reduce", 1 << 20, 1.0, 4);
  CHECK(ar.algbw_gbps == Approx(2 * 8.388608));
  CHECK(ar.busbw_gbps == Approx(8.388608 * 2 * 3 / 4.0));
  const auto ag = dspp::comm_bandwidth("all_gather", 1 << 20, 1.0, 4);
  CHECK(ag.algbw_gbps == Approx(8.388608));
  CHECK(ag.busbw_gbps == Approx(8.388608 * 3 / 4.0));
  const auto bc = dspp::comm_bandwidth("broadcast", 1 << 20, 1.0, 4);
  CHECK(bc.busbw_gbps == Approx(bc.algbw_gbps));
  CHECK(dspp::comm_bandwidth("all_reduce", 100, 0.0, 2).algbw_gbps == 0.0);
  CHECK(dspp::format_message_size(0) == "0B");
  CHECK(dspp::format_message_size(8) == "8.0 B");
  CHECK(dspp::format_message_size(1536) == "1.5 KB");
  CHECK(dspp::format_message_size(3 << 20) == "3.0 MB");
  CHECK(dspp::format_message_size(1000) == "1000.0 B");
}

TEST_CASE("ds-train on 2 processes: monitor rows from rank 0 only, comms summary on rank 0") {
  const std::string dir = temp_dir();
  const int steps = 4;
  mp::Launch l;
  l.exe = DSPP_BINARY_DIR "/bin/ds-train";
  l.world = 2;
  l.args = {"--steps",        std::to_string(steps),
            "--n-layer",      "1",
            "--n-embd",       "16",
            "--n-head",       "2",
            "--context",      "16",
            "--eval-batches", "1",
            "--eval-every",   "0",
            "--csv",          dir + "/metrics.csv",
            "--set",          "train_micro_batch_size_per_gpu=2",
            "--set",          "gradient_accumulation_steps=2",
            "--set",          "csv_monitor.enabled=true",
            "--set",          "csv_monitor.output_path=" + dir,
            "--set",          "csv_monitor.job_name=job",
            "--set",          "comms_logger.enabled=true"};
  l.env = {{"OMP_NUM_THREADS", "1"}, {"DSPP_TIMEOUT", "1"}};
  l.deadline_s = 120;
  const std::vector<mp::RankResult> rs = mp::run(l);
  const std::string out = mp::describe(rs);
  INFO(out);
  for (const mp::RankResult& r : rs) REQUIRE(r.exit_code == 0);

  // Both ranks share the folder: one header and one row per step means rank 1 wrote nothing.
  const auto loss = crlf_lines(dir + "/job/Train_Samples_train_loss.csv");
  const auto lr = crlf_lines(dir + "/job/Train_Samples_lr.csv");
  REQUIRE(loss.size() == static_cast<size_t>(steps) + 1);
  REQUIRE(lr.size() == static_cast<size_t>(steps) + 1);
  CHECK(loss[0] == "step,train_loss");
  const auto loss_rows = rows_of(loss);
  const auto lr_rows = rows_of(lr);
  // train_batch_size = 2 x GA 2 x dp 2 = 8.
  for (int i = 0; i < steps; ++i) {
    CHECK(loss_rows[static_cast<size_t>(i)].step == 8 * i);
    CHECK(lr_rows[static_cast<size_t>(i)].step == 8 * (i + 1));
    CHECK(std::isfinite(loss_rows[static_cast<size_t>(i)].value));
  }
  // ds-train's own CSV: the lr each step used. DeepSpeed's lr event after step k is the lr of
  // step k + 1.
  std::ifstream metrics(dir + "/metrics.csv");
  std::string line;
  std::getline(metrics, line);
  std::vector<double> used_lr;
  while (std::getline(metrics, line)) {
    std::istringstream s(line);
    std::string step, l_loss, l_lr;
    std::getline(s, step, ',');
    std::getline(s, l_loss, ',');
    std::getline(s, l_lr, ',');
    used_lr.push_back(std::stod(l_lr));
  }
  REQUIRE(used_lr.size() == static_cast<size_t>(steps));
  for (size_t i = 0; i + 1 < used_lr.size(); ++i) {
    CHECK(lr_rows[i].value == Approx(used_lr[i + 1]).epsilon(1e-6));
  }

  // The summary: on rank 0 only, with the gradient all-reduce and the initial broadcast.
  const std::string header = "Comm. Op            Message Size        Count";
  const mp::RankResult& r0 = rs[0].rank == 0 ? rs[0] : rs[1];
  const mp::RankResult& r1 = rs[0].rank == 0 ? rs[1] : rs[0];
  CHECK(contains(r0.output, header));
  CHECK(contains(r0.output, "\nall_reduce\n"));
  CHECK(contains(r0.output, "\nbroadcast\n"));
  CHECK(!contains(r1.output, header));
  fs::remove_all(dir);
}
