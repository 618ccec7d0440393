// Runs the TF.js peers (tests/node, installed by scripts/setup.sh) from the TF.js tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "kd/util/fs.h"

namespace kd::test {

// Why the Node.js peer cannot run here ("" when it can): node missing or tests/node not installed.
inline std::string tfjs_unavailable() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed";
  std::filesystem::path modules = std::filesystem::path(KD_SOURCE_DIR) / "tests/node/node_modules/@tensorflow/tfjs";
  if (!std::filesystem::exists(modules)) return modules.string() + " is missing (run scripts/setup.sh)";
  return "";
}

struct NodeResult {
  int status = -1;
  std::string output;
};

// Runs `node SCRIPT ARGS...` with NODE_PATH on tests/node/node_modules; output in `log`.
inline NodeResult run_node(const std::string& script, const std::string& args, const std::filesystem::path& log) {
  std::string source = KD_SOURCE_DIR;
  std::string command = "NODE_PATH='" + source + "/tests/node/node_modules' node '" + source + "/" + script + "' " +
                        args + " > '" + log.string() + "' 2>&1";
  NodeResult result;
  result.status = std::system(command.c_str());
  result.output = std::filesystem::exists(log) ? read_file(log) : "";
  return result;
}

}  // namespace kd::test
