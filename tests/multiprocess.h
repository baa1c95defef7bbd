// Multi-process tests: start real processes as the ranks of one run (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT set as a launcher would), wait for them with a deadline, and collect
// each one's exit status and output. Used where a test needs control a launcher does not give
// (start only some ranks, kill one, keep the survivors running).
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace mp {

struct RankResult {
  int rank = -1;
  int exit_code = -1;  // the process's exit status, or -1 when a signal ended it
  int signal = 0;      // the signal that ended it, 0 when it exited
  bool killed_at_deadline = false;
  double seconds = 0;       // from start to exit
  double kill_sent_s = -1;  // when the injected kill was sent (from start), -1 if never
  std::string output;       // stdout and stderr together
};

struct Launch {
  std::string exe;
  std::vector<std::string> args;  // "{rank}" in an argument becomes the rank
  int world = 1;
  std::vector<int> start;  // the ranks to start; empty: all
  std::map<std::string, std::string> env;
  double deadline_s = 120;  // processes still running then are killed (SIGKILL)
  // Fault injection from outside: send `kill_signal` to rank `kill_rank` `kill_after_s` seconds
  // after the start, or after rank 0's output first contains `kill_after_text` when given.
  int kill_rank = -1;
  double kill_after_s = 0;
  int kill_signal = SIGKILL;
  std::string kill_after_text;
};

// A TCP port nothing listens on now (the kernel's pick), for MASTER_PORT.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("free_port: no port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

inline std::string replace_rank(std::string s, int rank) {
  for (size_t p; (p = s.find("{rank}")) != std::string::npos;) {
    s.replace(p, 6, std::to_string(rank));
  }
  return s;
}

// Starts the ranks and waits for all of them (or the deadline). Results are in rank order of
// `start`.
inline std::vector<RankResult> run(const Launch& l) {
  using Clock = std::chrono::steady_clock;
  std::vector<int> ranks = l.start;
  if (ranks.empty()) {
    for (int r = 0; r < l.world; ++r) ranks.push_back(r);
  }
  std::map<std::string, std::string> env = l.env;
  if (!env.count("MASTER_ADDR")) env["MASTER_ADDR"] = "127.0.0.1";
  if (!env.count("MASTER_PORT")) env["MASTER_PORT"] = std::to_string(free_port());
  env["WORLD_SIZE"] = std::to_string(l.world);
  // These are tests of the CPU path (Gloo, more ranks than a machine has GPUs): ds-train would
  // otherwise take the GPU LOCAL_RANK names when the machine has one (--device auto).
  if (!env.count("DSPP_DEVICE")) env["DSPP_DEVICE"] = "cpu";

  const auto t0 = Clock::now();
  std::vector<RankResult> results(ranks.size());
  std::vector<pid_t> pids(ranks.size(), -1);
  std::vector<std::string> logs(ranks.size());
  char tmpl[] = "/tmp/dspp-mp-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl) ? tmpl : "/tmp";
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int rank = ranks[i];
    results[i].rank = rank;
    logs[i] = dir + "/rank" + std::to_string(rank) + ".log";
    pid_t pid = ::fork();
    if (pid == 0) {
      std::FILE* f = std::fopen(logs[i].c_str(), "w");
      if (f) {
        ::dup2(::fileno(f), 1);
        ::dup2(::fileno(f), 2);
      }
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      std::vector<std::string> argv_s{l.exe};
      for (const std::string& a : l.args) argv_s.push_back(replace_rank(a, rank));
      std::vector<char*> argv;
      for (std::string& a : argv_s) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(l.exe.c_str(), argv.data());
      std::perror("execv");
      ::_exit(127);
    }
    pids[i] = pid;
  }
  size_t running = ranks.size();
  const auto deadline = t0 + std::chrono::duration<double>(l.deadline_s);
  auto kill_at = t0 + std::chrono::duration<double>(l.kill_after_s);
  bool armed = l.kill_after_text.empty();
  bool killed = l.kill_rank < 0;
  double kill_sent_s = -1;
  while (running > 0) {
    bool progressed = false;
    if (!killed && !armed) {
      std::ifstream in(logs[0]);
      std::ostringstream text;
      text << in.rdbuf();
      if (text.str().find(l.kill_after_text) != std::string::npos) {
        armed = true;
        kill_at = Clock::now() + std::chrono::duration<double>(l.kill_after_s);
      }
    }
    if (!killed && armed && Clock::now() >= kill_at) {
      killed = true;
      kill_sent_s = std::chrono::duration<double>(Clock::now() - t0).count();
      for (size_t i = 0; i < ranks.size(); ++i) {
        if (ranks[i] == l.kill_rank && pids[i] > 0) ::kill(pids[i], l.kill_signal);
      }
    }
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (pids[i] < 0) continue;
      int status = 0;
      if (::waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        results[i].seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        if (WIFEXITED(status)) results[i].exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) results[i].signal = WTERMSIG(status);
        pids[i] = -1;
        --running;
        progressed = true;
      }
    }
    if (running > 0 && Clock::now() > deadline) {
      for (size_t i = 0; i < ranks.size(); ++i) {
        if (pids[i] < 0) continue;
        ::kill(pids[i], SIGKILL);
        int status = 0;
        ::waitpid(pids[i], &status, 0);
        results[i].killed_at_deadline = true;
        results[i].signal = SIGKILL;
        results[i].seconds = l.deadline_s;
        pids[i] = -1;
      }
      running = 0;
    }
    if (!progressed && running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < ranks.size(); ++i) {
    results[i].kill_sent_s = kill_sent_s;
    std::ifstream in(logs[i]);
    std::ostringstream s;
    s << in.rdbuf();
    results[i].output = s.str();
    std::remove(logs[i].c_str());
  }
  ::rmdir(dir.c_str());
  return results;
}

// One line per rank, for failure messages.
inline std::string describe(const std::vector<RankResult>& rs) {
  std::ostringstream s;
  for (const RankResult& r : rs) {
    s << "--- rank " << r.rank << " exit=" << r.exit_code << " signal=" << r.signal
      << (r.killed_at_deadline ? " (killed at deadline)" : "") << " after " << r.seconds << " s\n"
      << r.output << "\n";
  }
  return s.str();
}

}  // namespace mp
