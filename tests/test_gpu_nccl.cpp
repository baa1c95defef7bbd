// comm/nccl on real GPUs: starts gpu_nccl_worker as every rank of a world of one process per
// visible GPU (one GPU gives a world of one), with a file store, and passes when every rank exits
// 0 after checking its results against a float64 reference (see gpu_nccl_worker.cpp). Skipped
// (exit 77) without a GPU; see tests/gpu_main.cpp.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>

#include "catch.h"
#include "multiprocess.h"
#include "test_util.h"

TEST_CASE("comm/nccl: every collective x dtype x op against float64, splits, errors",
          "[gpu][nccl]") {
  namespace fs = std::filesystem;
  int gpus = 0;
  REQUIRE(cudaGetDeviceCount(&gpus) == cudaSuccess);
  const int world = std::min(gpus, 8);
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("dspp_gpu_nccl_" + std::to_string(rd()));
  mp::Launch l;
  l.exe = GPU_NCCL_WORKER;
  l.args = {dir.string(), "60000"};
  l.world = world;
  l.deadline_s = 240;
  const auto rs = mp::run(l);
  std::error_code ec;
  fs::remove_all(dir, ec);
  INFO("world " << world << "\n" << mp::describe(rs));
  for (const mp::RankResult& r : rs) {
    CHECK_FALSE(r.killed_at_deadline);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.output, "worker ok"));
  }
}
