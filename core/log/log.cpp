#include "log/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace dspp::log {
namespace {

Level initial_level() {
  const char* env = std::getenv("DSPP_LOG_LEVEL");
  if (!env) return Level::kInfo;
  if (!std::strcmp(env, "debug")) return Level::kDebug;
  if (!std::strcmp(env, "warning")) return Level::kWarning;
  if (!std::strcmp(env, "error")) return Level::kError;
  return Level::kInfo;
}

struct State {
  std::mutex mu;
  Level level = initial_level();
  int rank = 0;
  int world = 1;
  // DSPP_LOG_RANK=0 (set by dsrun, which prefixes each line itself) leaves the rank out.
  bool show_rank =
      !(std::getenv("DSPP_LOG_RANK") && !std::strcmp(std::getenv("DSPP_LOG_RANK"), "0"));
  std::function<void(Level, std::string_view)> sink;
};

State& state() {
  static State s;
  return s;
}

const char* name(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void set_level(Level level) {
  std::lock_guard lock(state().mu);
  state().level = level;
}

Level level() {
  std::lock_guard lock(state().mu);
  return state().level;
}

void set_rank(int rank, int world_size) {
  std::lock_guard lock(state().mu);
  state().rank = rank;
  state().world = world_size;
}

void set_sink(std::function<void(Level, std::string_view)> sink) {
  std::lock_guard lock(state().mu);
  state().sink = std::move(sink);
}

void write(Level level, std::string_view who, std::string_view msg) {
  State& s = state();
  std::lock_guard lock(s.mu);
  if (level < s.level) return;
  std::string line = "[dspp";
  if (s.world > 1 && s.show_rank) line += " rank " + std::to_string(s.rank);
  line += "] ";
  line += name(level);
  line += ": ";
  if (!who.empty()) {
    line += who;
    line += ": ";
  }
  line += msg;
  if (s.sink) {
    s.sink(level, line);
    return;
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace dspp::log
