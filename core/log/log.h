// The core's logger: one line per message, prefixed with the rank when distributed (unless
// DSPP_LOG_RANK=0: dsrun prefixes lines itself). Plugins log
// through dspp_host_api::log, which lands here.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace dspp::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below the level are dropped. Initial level from DSPP_LOG_LEVEL
// (debug|info|warning|error), default info.
void set_level(Level level);
Level level();
void set_rank(int rank, int world_size);
// Replaces the sink (tests capture messages); an empty function restores stderr.
void set_sink(std::function<void(Level, std::string_view)> sink);

void write(Level level, std::string_view who, std::string_view msg);
inline void debug(std::string_view who, std::string_view msg) {
  write(Level::kDebug, who, msg);
}
inline void info(std::string_view who, std::string_view msg) {
  write(Level::kInfo, who, msg);
}
inline void warn(std::string_view who, std::string_view msg) {
  write(Level::kWarning, who, msg);
}
inline void error(std::string_view who, std::string_view msg) {
  write(Level::kError, who, msg);
}

}  // namespace dspp::log
