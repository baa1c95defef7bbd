#include "progress.h"

#include <cstdio>
#include <utility>

namespace ds_train {

std::string format_duration(double seconds) {
  if (seconds < 0) seconds = 0;
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

std::string format_rate(double per_second) {
  char buf[32];
  if (per_second >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM", per_second / 1e6);
  } else if (per_second >= 1e4) {
    std::snprintf(buf, sizeof buf, "%.1fk", per_second / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", per_second);
  }
  return buf;
}

Progress::Progress(int64_t total_steps, int64_t every, bool tty, std::string unit)
    : total_(total_steps), every_(every > 0 ? every : 1), tty_(tty), unit_(std::move(unit)) {
  start_ = Clock::now();
  last_draw_ = start_;
}

void Progress::step(int64_t step, double loss, double lr, int64_t tokens, double seconds) {
  window_loss_ += loss;
  window_steps_ += 1;
  window_tokens_ += tokens;
  window_seconds_ += seconds;
  const Clock::time_point now = Clock::now();
  const bool last = step == total_;
  if (tty_) {
    if (!last && now - last_draw_ < std::chrono::milliseconds(100)) return;
  } else if (!last && step % every_ != 0) {
    return;
  }
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta = elapsed / static_cast<double>(step) * static_cast<double>(total_ - step);
  const double rate = window_seconds_ > 0 ? window_tokens_ / window_seconds_ : 0.0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %.4f  lr %.3e  %s %s/s  elapsed %s  ETA %s",
                static_cast<long long>(step), static_cast<long long>(total_),
                window_loss_ / static_cast<double>(window_steps_), lr, format_rate(rate).c_str(),
                unit_.c_str(), format_duration(elapsed).c_str(), format_duration(eta).c_str());
  if (tty_) {
    // \033[K erases what a longer previous line left on the right.
    std::printf("\r%s\033[K", buf);
    drawn_ = true;
  } else {
    std::printf("%s\n", buf);
  }
  std::fflush(stdout);
  last_draw_ = now;
  window_loss_ = 0.0;
  window_steps_ = 0;
  window_tokens_ = 0;
  window_seconds_ = 0.0;
}

void Progress::clear() {
  if (!drawn_) return;
  std::printf("\r\033[K");
  std::fflush(stdout);
  drawn_ = false;
}

void Progress::line(const std::string& text) {
  clear();
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (!drawn_) return;
  std::printf("\n");
  std::fflush(stdout);
  drawn_ = false;
}

}  // namespace ds_train
