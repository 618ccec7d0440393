// The parsers' fuzz targets: each takes a file's bytes, writes them where the parser reads them, and
// runs the parser and what a run does next with its result (encode a table, decode an image, describe
// a model). A kd::Error is the input refused: what a bad file must give. Anything else escaping a
// parser (a libtorch or library exception, an internal check) is a finding, as is any crash or
// sanitizer report.
//
// Two drivers share them: fuzz/fuzz_main.cpp under libFuzzer (scripts/fuzz.sh), and the replay test
// (tests/fuzz/replay_test.cpp) that runs every seed and every regression input in the normal build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kd::fuzz {

struct Target {
  std::string name;         // fuzz_NAME, fuzz/corpus/NAME, fuzz/regressions/NAME
  std::string description;  // what it reads
  void (*run)(const uint8_t* data, size_t size, const std::filesystem::path& folder);
};

const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

// Runs `target` on `data` in `folder` (emptied first). "" when the input was parsed or refused with a
// kd::Error; otherwise what escaped (the exception's type and first line).
std::string run_target(const Target& target, const uint8_t* data, size_t size, const std::filesystem::path& folder);

// A fresh folder for one process's inputs (under /dev/shm when it is there: no disk writes per run).
std::filesystem::path scratch_folder();

}  // namespace kd::fuzz
