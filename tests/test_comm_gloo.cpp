// comm/gloo across real processes: each test starts comm_gloo_worker as every rank of a world
// (tests/multiprocess.h) and passes when every rank exits 0 after checking its results against a
// float64 reference (see comm_gloo_worker.cpp for the modes and the tolerances).
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "catch.h"
#include "multiprocess.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

// Runs `mode` on `world` ranks (only `start` when given) with a fresh file store, or the TCP
// store rank 0 serves when `store` is "tcp".
std::vector<mp::RankResult> run_worker(const std::string& mode, int world, int timeout_ms,
                                       double deadline_s, std::vector<int> start = {},
                                       const std::string& store = "file") {
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("dspp_comm_gloo_" + std::to_string(rd()));
  mp::Launch l;
  l.exe = COMM_GLOO_WORKER;
  l.args = {dir.string(), mode, std::to_string(timeout_ms), store};
  l.world = world;
  l.start = std::move(start);
  l.deadline_s = deadline_s;
  std::vector<mp::RankResult> rs = mp::run(l);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return rs;
}

void require_all_ok(const std::vector<mp::RankResult>& rs) {
  INFO(mp::describe(rs));
  for (const mp::RankResult& r : rs) {
    CHECK_FALSE(r.killed_at_deadline);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.output, "worker ok"));
  }
}

}  // namespace

TEST_CASE("comm/gloo collectives match a float64 reference on 2 ranks", "[comm_gloo]") {
  require_all_ok(run_worker("battery", 2, 20000, 60));
}

TEST_CASE("comm/gloo collectives match a float64 reference on 3 ranks", "[comm_gloo]") {
  require_all_ok(run_worker("battery", 3, 20000, 60));
}

TEST_CASE("comm/gloo collectives match a float64 reference on 4 ranks", "[comm_gloo]") {
  require_all_ok(run_worker("battery", 4, 20000, 90));
}

TEST_CASE(
    "comm/gloo async works in reverse order with split groups and a send/recv ring and barriers",
    "[comm_gloo]") {
  SECTION("world 3, file store") {
    require_all_ok(run_worker("features", 3, 20000, 60));
  }
  SECTION("world 4, TCP store") {
    require_all_ok(run_worker("features", 4, 20000, 60, {}, "tcp"));
  }
}

TEST_CASE("comm/gloo refuses bad arguments with a message and stays usable", "[comm_gloo]") {
  const auto rs = run_worker("errors", 2, 10000, 30);
  require_all_ok(rs);
  INFO(mp::describe(rs));
  CHECK(contains(rs[0].output, "avg is not defined for the integer dtype i32"));
}

TEST_CASE("comm/gloo a peer that exits makes the others fail within the timeout", "[comm_gloo]") {
  const auto rs = run_worker("die", 3, 2000, 20, {}, "tcp");
  INFO(mp::describe(rs));
  for (const mp::RankResult& r : rs) {
    CHECK_FALSE(r.killed_at_deadline);
    CHECK(r.exit_code == 0);
    if (r.rank != 1) {
      CHECK(contains(r.output, "worker ok"));
      CHECK(contains(r.output, "failed after"));
    }
  }
}

TEST_CASE("comm/gloo a peer that stops answering makes the others time out", "[comm_gloo]") {
  const auto rs = run_worker("stall", 2, 1500, 20);
  INFO(mp::describe(rs));
  for (const mp::RankResult& r : rs) {
    CHECK_FALSE(r.killed_at_deadline);
    CHECK(r.exit_code == 0);
  }
  CHECK(contains(rs[0].output, "worker ok"));
  CHECK(contains(rs[0].output, "status 5"));
}

TEST_CASE("comm/gloo init_world times out naming the rank that never arrived", "[comm_gloo]") {
  const auto rs = run_worker("alone", 2, 1000, 20, {0});
  INFO(mp::describe(rs));
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].exit_code == 0);
  CHECK(contains(rs[0].output, "worker ok"));
  CHECK(contains(rs[0].output, "never arrived"));
}
