// Runs the kdistill binary as a user would, for end-to-end tests.
#pragma once

#include <sys/wait.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "data/python_helper.h"
#include "kd/util/fs.h"
#include "test_util.h"

namespace kd::test {

struct CommandResult {
  int status = -1;     // exit status
  std::string output;  // stdout and stderr together
};

// A shell command line, its stdout and stderr together.
inline CommandResult run_shell(const std::string& command_line) {
  std::string command = command_line + " 2>&1";
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

// `environment`: assignments put before the command, e.g. "KD_KILL_AFTER_EPOCH=student:3".
inline CommandResult run_kdistill_with_env(const std::string& environment, const std::string& arguments) {
  return run_shell(environment + " " + std::string(KD_CLI_PATH) + " --threads 2 " + arguments);
}

inline CommandResult run_kdistill(const std::string& arguments) { return run_kdistill_with_env("", arguments); }

// A folder for one `kdistill run`: the recipe written there, the run's outputs in out/.
class RunFolder : public ::testing::Test {
 protected:
  std::string recipe(const std::string& text) {
    auto path = (dir_ / "recipe.yaml").string();
    write_file_atomic(path, text);
    return path;
  }
  std::string out() const { return (dir_ / "out").string(); }
  nlohmann::json metrics() const { return nlohmann::json::parse(read_file(dir_ / "out/metrics.json")); }
  TempDir dir_;
};

// Starts `kdistill ARGS`, waits until its log shows `shown`, sends `signal` and waits: {"status", "log"}.
inline nlohmann::json signal_when(const std::string& args, const std::string& shown, int signal, const std::string& log) {
  auto python = run_python(
      "import json, shlex, subprocess, time\n"
      "log = open('" + log + "', 'w')\n"
      "p = subprocess.Popen(['" KD_CLI_PATH "', '--threads', '1'] + shlex.split(" + nlohmann::json(args).dump() + "),\n"
      "                     stdout=log, stderr=subprocess.STDOUT)\n"
      "deadline = time.time() + 120\n"
      "while " + nlohmann::json(shown).dump() + " not in open('" + log + "').read():\n"
      "    assert time.time() < deadline and p.poll() is None, open('" + log + "').read()\n"
      "    time.sleep(0.01)\n"
      "p.send_signal(" + std::to_string(signal) + ")\n"
      "status = p.wait(timeout=120)\n"
      "print(json.dumps({'status': status, 'log': open('" + log + "').read()}))\n");
  EXPECT_EQ(python.status, 0) << python.output;
  if (python.status != 0) return {{"status", -1}, {"log", python.output}};
  return nlohmann::json::parse(python.output.substr(python.output.rfind("{\"status\"")));
}

}  // namespace kd::test
