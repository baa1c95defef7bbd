// The TensorBoard monitor's event files, read back by a reader written here: TFRecord framing
// parsed by hand, both masked CRCs checked with a bitwise CRC-32C (independent of the core's
// table and SSE4.2 code), the records decoded with the generated protobuf classes. Also
// CRC-32C test vectors.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <dspp/initialize.h>
#include <dspp/models.h>

#include "catch.h"
#include "dspp/error.h"
#include "monitor/crc32c.h"
#include "monitor/tensorboard.h"

#if DSPP_HAVE_TENSORBOARD
#include "monitor/tensorboard_event.pb.h"
#endif

namespace {

namespace fs = std::filesystem;

// CRC-32C one bit at a time, straight from the definition (reflected polynomial 0x82F63B78).
uint32_t bitwise_crc32c(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

uint32_t masked(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string temp_dir() {
  char tmpl[] = "/tmp/dspp-tensorboard-XXXXXX";
  return ::mkdtemp(tmpl);
}

uint64_t le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  return v;
}

// The records of a TFRecord file; fails the test on a bad length, CRC or truncation.
std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string f = ss.str();
  std::vector<std::string> out;
  size_t at = 0;
  while (at < f.size()) {
    REQUIRE(f.size() - at >= 12);
    const uint64_t len = le(f, at, 8);
    CHECK(le(f, at + 8, 4) == masked(bitwise_crc32c(f.data() + at, 8)));
    REQUIRE(f.size() - at - 12 >= len + 4);
    const std::string data = f.substr(at + 12, len);
    CHECK(le(f, at + 12 + len, 4) == masked(bitwise_crc32c(data.data(), data.size())));
    out.push_back(data);
    at += 12 + len + 4;
  }
  return out;
}

}  // namespace

TEST_CASE("crc32c: test vectors, pieces, and the table path equals the bitwise definition") {
  const char* digits = "123456789";
  CHECK(dspp::crc32c(digits, 9) == 0xE3069283u);
  CHECK(dspp::detail::crc32c_portable(digits, 9, 0) == 0xE3069283u);
  CHECK(bitwise_crc32c(digits, 9) == 0xE3069283u);
  CHECK(dspp::crc32c(digits, 0) == 0u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF, and 0..31.
  std::vector<unsigned char> b(32, 0);
  CHECK(dspp::crc32c(b.data(), b.size()) == 0x8A9136AAu);
  std::fill(b.begin(), b.end(), 0xFF);
  CHECK(dspp::crc32c(b.data(), b.size()) == 0x62A8AB43u);
  for (size_t i = 0; i < 32; ++i) b[i] = static_cast<unsigned char>(i);
  CHECK(dspp::crc32c(b.data(), b.size()) == 0x46DD794Eu);

  std::mt19937 rng(5);
  std::vector<unsigned char> buf(1000);
  for (auto& c : buf) c = static_cast<unsigned char>(rng());
  for (size_t off : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100, 993}) {
      INFO("offset " << off << " size " << n);
      const uint32_t want = bitwise_crc32c(buf.data() + off, n);
      CHECK(dspp::crc32c(buf.data() + off, n) == want);
      CHECK(dspp::detail::crc32c_portable(buf.data() + off, n, 0) == want);
      // In two pieces, the first piece's CRC as the seed.
      const size_t cut = n / 3;
      CHECK(dspp::crc32c(buf.data() + off + cut, n - cut, dspp::crc32c(buf.data() + off, cut)) ==
            want);
      CHECK(dspp::detail::crc32c_portable(
                buf.data() + off + cut, n - cut,
                dspp::detail::crc32c_portable(buf.data() + off, cut, 0)) == want);
    }
  }
  CHECK(dspp::monitor::tfrecord_masked_crc(digits, 9) == masked(0xE3069283u));
}

#if DSPP_HAVE_TENSORBOARD

TEST_CASE("tensorboard: file name, file_version record, one scalar Event per event") {
  const std::string root = temp_dir();
  const double t0 = now_s();
  dspp::monitor::TensorBoardMonitor tb(root, "job");
  CHECK(tb.log_dir() == root + "/job");
  REQUIRE(fs::path(tb.file()).parent_path() == fs::path(root) / "job");

  // events.out.tfevents.<10-digit seconds>.<host>.<pid>.<n>, TensorBoard's own writer's name.
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string name = fs::path(tb.file()).filename().string();
  std::smatch m;
  const std::string prefix = "events.out.tfevents.";
  REQUIRE(name.rfind(prefix, 0) == 0);
  const std::string rest = name.substr(prefix.size());
  REQUIRE(std::regex_match(rest, m, std::regex(R"(([0-9]{10})\.(.*)\.([0-9]+)\.([0-9]+))")));
  CHECK(std::abs(std::stod(m[1].str()) - t0) < 5);
  CHECK(m[2].str() == host);
  CHECK(m[3].str() == std::to_string(::getpid()));

  // Read while the monitor is open: every write_events is flushed.
  tb.write_events({{"Train/Samples/train_loss", 2.5, 8}, {"Train/Samples/lr", 1e-3, 8}});
  tb.write_events({{"Train/Samples/train_loss", 0.0, 16},
                   {"Train/Samples/lr", -0.75, int64_t{1} << 40},
                   {"Train/Samples/loss_scale", 65536.0, 0}});
  const std::vector<std::string> recs = read_records(tb.file());
  REQUIRE(recs.size() == 6);

  dspp::tensorboard::Event first;
  REQUIRE(first.ParseFromString(recs[0]));
  CHECK(first.what_case() == dspp::tensorboard::Event::kFileVersion);
  CHECK(first.file_version() == "brain.Event:2");
  CHECK(first.wall_time() >= t0 - 1);
  CHECK(first.wall_time() <= now_s() + 1);

  struct Want {
    const char* tag;
    float value;
    int64_t step;
  };
  const Want want[] = {{"Train/Samples/train_loss", 2.5f, 8},
                       {"Train/Samples/lr", 1e-3f, 8},
                       {"Train/Samples/train_loss", 0.0f, 16},
                       {"Train/Samples/lr", -0.75f, int64_t{1} << 40},
                       {"Train/Samples/loss_scale", 65536.0f, 0}};
  double last_wall = first.wall_time();
  for (size_t i = 0; i < 5; ++i) {
    INFO("record " << i + 1);
    dspp::tensorboard::Event ev;
    REQUIRE(ev.ParseFromString(recs[i + 1]));
    REQUIRE(ev.what_case() == dspp::tensorboard::Event::kSummary);
    REQUIRE(ev.summary().value_size() == 1);
    const auto& v = ev.summary().value(0);
    CHECK(v.tag() == want[i].tag);
    // A value of 0 is still present: TensorBoard drops a Value without one.
    CHECK(v.value_case() == dspp::tensorboard::Summary::Value::kSimpleValue);
    CHECK(v.simple_value() == want[i].value);
    CHECK(ev.step() == want[i].step);
    CHECK(ev.wall_time() >= last_wall);
    last_wall = ev.wall_time();
  }
  fs::remove_all(root);
}

TEST_CASE(
    "tensorboard: two monitors never share a file, and an empty output_path is the launch folder") {
  const std::string root = temp_dir();
  dspp::monitor::TensorBoardMonitor a(root, "j");
  dspp::monitor::TensorBoardMonitor b(root, "j");
  CHECK(a.file() != b.file());
  a.write_events({{"x", 1.0, 1}});
  b.write_events({{"x", 2.0, 1}});
  CHECK(read_records(a.file()).size() == 2);
  CHECK(read_records(b.file()).size() == 2);

  // DeepSpeed joins "" and job_name: a folder under the working directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(root);
  {
    dspp::monitor::TensorBoardMonitor c("", "DeepSpeedJobName");
    CHECK(c.log_dir() == "DeepSpeedJobName");
    CHECK(fs::exists(fs::path(root) / "DeepSpeedJobName" / fs::path(c.file()).filename()));
  }
  fs::current_path(cwd);
  fs::remove_all(root);
}

TEST_CASE("tensorboard: a folder that cannot be made is an I/O error naming it") {
  const std::string root = temp_dir();
  { std::ofstream(root + "/file") << "x"; }
  try {
    dspp::monitor::TensorBoardMonitor tb(root + "/file", "job");
    FAIL("no error");
  } catch (const dspp::Error& e) {
    CHECK(e.code() == dspp::Errc::kIo);
    CHECK(std::string(e.what()).find(root + "/file") != std::string::npos);
  }
  fs::remove_all(root);
}

TEST_CASE("tensorboard through the engine: DeepSpeed's loss and lr events at global_samples") {
  const std::string root = temp_dir();
  auto model = std::make_shared<dspp::MLP>(dspp::MLPConfig{{3, 8, 2}, dspp::MLPLoss::kMSE}, 7);
  dspp::InitializeArgs a;
  a.model = model;
  a.config = R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                 "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
                 "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 4}},
                 "tensorboard": {"enabled": true, "output_path": ")" +
             root + R"(", "job_name": "run"}})";
  auto r = dspp::initialize(a);
  // As DeepSpeed: at the boundary backward the window's sum of loss / GA at global_samples
  // before the step; after the step the next lr at global_samples after it.
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<std::pair<std::string, std::pair<float, int64_t>>> want;
  for (int s = 0; s < 3; ++s) {
    float window = 0.0f;
    const int64_t before = r.engine->global_samples();
    for (int m = 0; m < 2; ++m) {
      dspp::Batch b{dspp::Tensor::empty({4, 3}), dspp::Tensor::empty({4, 2})};
      for (int i = 0; i < 12; ++i) b.inputs.data<float>()[i] = u(rng);
      for (int i = 0; i < 8; ++i) b.targets.data<float>()[i] = u(rng);
      const float loss = r.engine->forward(b);
      window += loss / 2.0f;
      if (m == 1) want.push_back({"Train/Samples/train_loss", {window, before}});
      r.engine->backward(loss);
      r.engine->step();
    }
    want.push_back({"Train/Samples/lr",
                    {static_cast<float>(r.engine->get_lr()[0]), r.engine->global_samples()}});
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(root) / "run")) files.push_back(e.path());
  REQUIRE(files.size() == 1);
  const std::vector<std::string> recs = read_records(files[0].string());
  REQUIRE(recs.size() == want.size() + 1);  // file_version first
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("event " << i);
    dspp::tensorboard::Event ev;
    REQUIRE(ev.ParseFromString(recs[i + 1]));
    REQUIRE(ev.summary().value_size() == 1);
    CHECK(ev.summary().value(0).tag() == want[i].first);
    CHECK(ev.summary().value(0).simple_value() == want[i].second.first);
    CHECK(ev.step() == want[i].second.second);
  }
  fs::remove_all(root);
}

#else

TEST_CASE("tensorboard: built without protobuf, the monitor says so") {
  CHECK_FALSE(dspp::monitor::tensorboard_available());
  CHECK_THROWS_AS(dspp::monitor::TensorBoardMonitor("/tmp", "job"), dspp::Error);
}

#endif
