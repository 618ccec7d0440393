// Progress of a long loop. On a terminal (stdout is a TTY): one line redrawn in place,
// at most 5 times a second, with a bar, the rate and the time left. Otherwise (CI logs):
// a plain log line at most every `interval_seconds`, so logs stay short but show life.
// Nothing at all when logging is quieter than info (--quiet).
//
//   Progress progress("student", total_steps, "steps");
//   for (...) { ...; progress.update(step); }
//   progress.clear();   // before printing anything else on a terminal
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kd {

using Clock = std::chrono::steady_clock;

// Seconds from `start` to now, on the steady clock: how every phase of a run is timed.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit, double interval_seconds = 30.0);
  ~Progress();
  void update(int64_t done);
  void clear();  // erases the terminal line (no-op otherwise)

  // "[#####.....] 512/1000 steps  85.3 steps/s  ETA 6s": the text of one update.
  static std::string line(const std::string& label, int64_t done, int64_t total, const std::string& unit, double seconds);

 private:
  std::string label_, unit_;
  int64_t total_;
  double interval_;
  bool terminal_, enabled_, drawn_ = false;
  Clock::time_point start_, last_;
};

}  // namespace kd
