// Runs the kdistill binary as a user would, for end-to-end tests.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace kd::test {

struct CommandResult {
  int status = -1;     // exit status
  std::string output;  // stdout and stderr together
};

// `environment`: assignments put before the command, e.g. "KD_KILL_AFTER_EPOCH=student:3".
inline CommandResult run_kdistill_with_env(const std::string& environment, const std::string& arguments) {
  std::string command = environment + " " + std::string(KD_CLI_PATH) + " --threads 2 " + arguments + " 2>&1";
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline CommandResult run_kdistill(const std::string& arguments) { return run_kdistill_with_env("", arguments); }

}  // namespace kd::test
