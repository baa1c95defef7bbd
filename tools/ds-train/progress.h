// The progress report: on a terminal one line rewritten in place (carriage return), at most ten
// times a second; otherwise a plain line every `every` steps. Loss and tokens/s are over the
// steps since the last report; the ETA is the wall time per step so far (evaluations included)
// times the steps left.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ds_train {

std::string format_duration(double seconds);  // "1:05", "1:02:03"
std::string format_rate(double per_second);   // "51.2k", "1.3M", "830"

class Progress {
 public:
  // `unit`: what the throughput counts, "tok" or "samples".
  Progress(int64_t total_steps, int64_t every, bool tty, std::string unit);

  // After each optimizer step: its mean micro-batch loss, lr, tokens (or samples) and seconds.
  void step(int64_t step, double loss, double lr, int64_t tokens, double seconds);
  // A line of its own (an evaluation result), never torn by the progress line.
  void line(const std::string& text);
  // Clears the in-place line (a terminal) before something else writes to the screen.
  void clear();
  // Ends the in-place line so what follows starts on a fresh line.
  void finish();
  bool tty() const { return tty_; }

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_;
  int64_t every_;
  bool tty_;
  std::string unit_;
  bool drawn_ = false;  // the in-place line is on screen
  Clock::time_point start_;
  Clock::time_point last_draw_;
  double window_loss_ = 0.0;
  int64_t window_steps_ = 0;
  int64_t window_tokens_ = 0;
  double window_seconds_ = 0.0;
};

}  // namespace ds_train
