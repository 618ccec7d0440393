// Runs the system Python (/usr/bin/python3, which has numpy and torch) so that tests
// compare against files and numbers made by the real libraries at test time.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace kd::test {

struct PythonResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// Runs `script` with /usr/bin/python3, from a temporary file so that no shell quoting is involved.
inline PythonResult run_python(const std::string& script) {
  std::random_device device;
  const auto file = std::filesystem::temp_directory_path() / ("kd_py_" + std::to_string(device()) + ".py");
  {
    std::ofstream out(file);
    out << script;
  }
  PythonResult result;
  const std::string command = "/usr/bin/python3 '" + file.string() + "' 2>&1";
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[4096];
    size_t got = 0;
    while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, got);
    result.status = pclose(pipe);
  }
  std::filesystem::remove(file);
  return result;
}

// Whether /usr/bin/python3 exists and can import `module`.
inline bool python_has(const std::string& module) {
  return run_python("import " + module + "\n").status == 0;
}

}  // namespace kd::test
