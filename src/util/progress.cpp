#include "kd/util/progress.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>

namespace kd {

namespace {
std::string duration_text(double seconds) {
  auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s / 60) % 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}
}  // namespace

Progress::Progress(std::string label, int64_t total, std::string unit, double interval_seconds)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), interval_(interval_seconds),
      terminal_(isatty(STDOUT_FILENO) == 1), enabled_(spdlog::should_log(spdlog::level::info)),
      start_(Clock::now()), last_(start_) {}

Progress::~Progress() { clear(); }

std::string Progress::line(const std::string& label, int64_t done, int64_t total, const std::string& unit,
                           double seconds) {
  double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
  int filled = static_cast<int>(fraction * 20);
  std::string bar = std::string(filled, '#') + std::string(20 - filled, '.');
  std::string eta = rate > 0 ? duration_text(static_cast<double>(total - done) / rate) : "?";
  return fmt::format("{} [{}] {}/{} {}  {:.1f} {}/s  ETA {}", label, bar, done, total, unit, rate, unit, eta);
}

void Progress::update(int64_t done) {
  if (!enabled_) return;
  auto now = Clock::now();
  double since_last = std::chrono::duration<double>(now - last_).count();
  if (since_last < (terminal_ ? 0.2 : interval_) || done >= total_) return;
  last_ = now;
  std::string text = line(label_, done, total_, unit_, std::chrono::duration<double>(now - start_).count());
  if (terminal_) {
    std::fprintf(stdout, "\r%s\033[K", text.c_str());
    std::fflush(stdout);
    drawn_ = true;
  } else {
    spdlog::info("{}", text);
  }
}

void Progress::clear() {
  if (!drawn_) return;
  std::fprintf(stdout, "\r\033[K");
  std::fflush(stdout);
  drawn_ = false;
}

}  // namespace kd
