// One rank of the multi-process store tests (test_dist_store.cpp starts it through mp::run).
//
//   dist_store_worker tcp_count [late]   every rank adds 1 to "counter", sets "arrived/<rank>",
//                                        waits for all arrivals and checks counter == world;
//                                        "late": rank 0 starts its server 300 ms after the others
//   dist_store_worker file_add DIR N     N adds of 1 to "n" in the file store at DIR
//   dist_store_worker die                connects as RANK, sets "alive/<rank>", then _exit()s
//                                        without closing the store (as a killed rank would)
//
// Exit status 0 on success; anything else prints what went wrong.
#include <dspp/error.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "dist/launch_env.h"
#include "dist/store.h"

namespace {

using dspp::dist::make_file_store;
using dspp::dist::make_tcp_store;

int tcp_count(bool late) {
  const dspp::dist::LaunchEnv env = dspp::dist::read_launch_env(29500);
  if (late && env.rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto store = make_tcp_store(env.master_addr, env.master_port, env.rank == 0, env.rank,
                              dspp::dist::timeout_from_env());
  const std::string me = std::to_string(env.rank);
  store->set("arrived/" + me, std::to_string(store->add("counter", 1)));
  std::vector<std::string> keys;
  for (int r = 0; r < env.world_size; ++r) keys.push_back("arrived/" + std::to_string(r));
  const std::vector<std::string> missing = store->wait(keys, store->timeout());
  if (!missing.empty()) {
    std::printf("rank %d: %zu ranks never arrived, first %s\n", env.rank, missing.size(),
                missing[0].c_str());
    return 1;
  }
  const int64_t counter = store->add("counter", 0);
  // Rank 0 serves the store: it leaves only after every other rank made its last call.
  if (env.rank != 0) {
    store->set("done/" + me, "1");
  } else {
    std::vector<std::string> done;
    for (int r = 1; r < env.world_size; ++r) done.push_back("done/" + std::to_string(r));
    if (!store->wait(done, store->timeout()).empty()) {
      std::printf("rank 0: not every rank finished\n");
      return 1;
    }
  }
  std::printf("rank %d counter=%lld\n", env.rank, static_cast<long long>(counter));
  return counter == env.world_size ? 0 : 1;
}

int file_add(const std::string& dir, int n) {
  auto store = make_file_store(dir, std::chrono::seconds(30));
  int64_t last = 0;
  for (int i = 0; i < n; ++i) last = store->add("n", 1);
  std::printf("last add returned %lld\n", static_cast<long long>(last));
  return 0;
}

int die() {
  const dspp::dist::LaunchEnv env = dspp::dist::read_launch_env(29500);
  auto store =
      make_tcp_store(env.master_addr, env.master_port, false, env.rank, std::chrono::seconds(10));
  store->set("alive/" + std::to_string(env.rank), "1");
  std::printf("rank %d exits without closing the store\n", env.rank);
  std::fflush(stdout);
  ::_exit(0);  // no destructor: the socket closes with the process, without a goodbye
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "tcp_count") return tcp_count(argc > 2 && std::string(argv[2]) == "late");
    if (mode == "file_add" && argc == 4) return file_add(argv[2], std::atoi(argv[3]));
    if (mode == "die") return die();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("usage: dist_store_worker tcp_count [late] | file_add DIR N | die\n");
  return 2;
}
