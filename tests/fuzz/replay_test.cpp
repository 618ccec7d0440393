// Every fuzz target (fuzz/targets.cpp) on its seed corpus and on every input a fuzzer found a fault
// with (fuzz/regressions/NAME/, each kept once fixed): parsed or refused with a kd::Error, nothing
// else escaping. In the sanitizer build (scripts/sanitize.sh) the same inputs run under ASan and UBSan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "../../fuzz/targets.h"

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The files of fuzz/SUBFOLDER/NAME, sorted.
std::vector<fs::path> inputs(const std::string& subfolder, const std::string& name) {
  std::vector<fs::path> files;
  fs::path folder = fs::path(KD_SOURCE_DIR) / "fuzz" / subfolder / name;
  if (!fs::is_directory(folder)) return files;
  for (const auto& entry : fs::directory_iterator(folder)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

class FuzzReplay : public testing::TestWithParam<kd::fuzz::Target> {};

TEST_P(FuzzReplay, SeedsAndRegressionsAreParsedOrRefused) {
  const auto& target = GetParam();
  fs::path folder = kd::fuzz::scratch_folder();
  auto seeds = inputs("corpus", target.name);
  EXPECT_FALSE(seeds.empty()) << "fuzz/corpus/" << target.name << " has no seed";
  auto regressions = inputs("regressions", target.name);
  seeds.insert(seeds.end(), regressions.begin(), regressions.end());
  for (const auto& file : seeds) {
    std::string bytes = read_bytes(file);
    std::string escaped =
        kd::fuzz::run_target(target, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), folder);
    EXPECT_EQ(escaped, "") << file;
  }
  fs::remove_all(folder);
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay, testing::ValuesIn(kd::fuzz::targets()),
                         [](const testing::TestParamInfo<kd::fuzz::Target>& info) { return info.param.name; });

}  // namespace
