// A tiny program for dsrun's tests: run as the ranks of a job, it reports what it sees and
// misbehaves on request. No dspp dependency: it only reads the environment dsrun sets.
//   dsrun_probe env                           RANK, LOCAL_RANK, ... on stdout; one line on stderr
//   dsrun_probe lines N LEN                   N lines of LEN characters, then one without newline
//   dsrun_probe fail PIDDIR RANK CODE MS      rank RANK exits CODE after MS ms; the others sleep 60
//   s dsrun_probe kill PIDDIR RANK MS           rank RANK kills itself (SIGKILL) after MS ms
//   dsrun_probe sleep PIDDIR                  sleeps 60 s
// With a PIDDIR each rank writes its pid to PIDDIR/rank<R>.pid first, so a test can check that
// dsrun left none running.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "<unset>";
}

int rank() {
  return std::atoi(env("RANK").c_str());
}

void write_pid(const std::string& dir) {
  const std::string path = dir + "/rank" + std::to_string(rank()) + ".pid";
  {
    std::ofstream out(path + ".tmp");
    out << getpid() << "\n";
  }
  std::rename((path + ".tmp").c_str(), path.c_str());  // a test never reads half a file
}

void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "env") {
    std::cout << "RANK=" << env("RANK") << " LOCAL_RANK=" << env("LOCAL_RANK")
              << " WORLD_SIZE=" << env("WORLD_SIZE")
              << " LOCAL_WORLD_SIZE=" << env("LOCAL_WORLD_SIZE")
              << " NODE_RANK=" << env("NODE_RANK") << " CROSS_RANK=" << env("CROSS_RANK")
              << " MASTER_ADDR=" << env("MASTER_ADDR") << " MASTER_PORT=" << env("MASTER_PORT")
              << " OMP_NUM_THREADS=" << env("OMP_NUM_THREADS")
              << " DSPP_PROBE_TAG=" << env("DSPP_PROBE_TAG") << std::endl;
    std::cerr << "stderr of rank " << rank() << std::endl;
    return 0;
  }
  if (mode == "lines" && argc == 4) {
    const int n = std::atoi(argv[2]), len = std::atoi(argv[3]);
    const std::string body(static_cast<size_t>(len), static_cast<char>('a' + rank() % 26));
    // Small writes, so that a line reaches dsrun in several pieces and ranks race each other.
    for (int i = 0; i < n; ++i) {
      const std::string line =
          "rank " + std::to_string(rank()) + " line " + std::to_string(i) + " " + body + " end\n";
      for (size_t at = 0; at < line.size(); at += 4096) {
        std::fwrite(line.data() + at, 1, std::min<size_t>(4096, line.size() - at), stdout);
        std::fflush(stdout);
      }
    }
    std::cout << "last line of rank " << rank() << " without newline" << std::flush;
    return 0;
  }
  if (((mode == "fail" || mode == "stubborn") && argc == 6) || (mode == "kill" && argc == 5)) {
    write_pid(argv[2]);
    if (rank() != std::atoi(argv[3])) {
      if (mode == "stubborn") signal(SIGTERM, SIG_IGN);
      sleep_ms(60000);
      return 0;
    }
    sleep_ms(std::atoi(argv[mode == "kill" ? 4 : 5]));
    if (mode == "kill") raise(SIGKILL);
    return std::atoi(argv[4]);
  }
  if (mode == "sleep" && argc == 3) {
    write_pid(argv[2]);
    sleep_ms(60000);
    return 0;
  }
  std::cerr << "usage: dsrun_probe env | lines N LEN | fail PIDDIR RANK CODE MS | "
               "stubborn PIDDIR RANK CODE MS | kill PIDDIR RANK MS | sleep PIDDIR\n";
  return 64;
}
