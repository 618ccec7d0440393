// Errors: the library throws, the CLI catches once, prints one line and exits.
//
// kd::Error is bad input from the user (a file, a recipe field, a flag): the
// message names the file, the line or field, what was found and what was
// expected, e.g. `train.csv:17: column "age": "n/a" is not a number`.
// The CLI exits with status 2 on it.
//
// KD_CHECK is an internal invariant that stays on in release builds; a failure
// is a bug in kdistill, not in the input (exit status 1).
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kd {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Work stopped by a signal (kd::stop_signal) once what resumes it is written: the CLI prints the
// message and exits with 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).
class Interrupted : public std::runtime_error {
 public:
  Interrupted(int signal, const std::string& message) : std::runtime_error(message), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

// Throws kd::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// The first line of an exception's message, without libtorch's C++ backtrace: what a user
// needs when a library error (a c10::Error from a user's model, say) is reported in one line.
std::string first_line(const std::exception& error);

// Prefixes an error's message with where it happened ("recipe.yaml: ...") and rethrows.
[[noreturn]] void rethrow_with_context(const std::string& context);

}  // namespace kd

#define KD_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      throw std::logic_error(fmt::format("internal check failed at {}:{}: {}: {}", __FILE__, \
                                         __LINE__, #cond, fmt::format(__VA_ARGS__)));         \
    }                                                                                         \
  } while (0)
