// The set-up installs an optimised BLAS; libtorch must actually be using it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <string>

#include "kd/util/runtime.h"

namespace {

// The shared libraries mapped into this process whose path mentions `word`.
std::string mapped_libraries_with(const std::string& word) {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  while (std::getline(maps, line)) {
    if (line.find(word) != std::string::npos && found.find(line.substr(line.rfind(' ') + 1)) == std::string::npos) {
      found += line.substr(line.rfind(' ') + 1) + "\n";
    }
  }
  return found;
}

TEST(Blas, MatmulRunsOnOpenBlasNotTheReferenceBlas) {
  auto a = torch::randn({256, 256});
  auto c = a.mm(a);
  ASSERT_EQ(c.size(0), 256);
  EXPECT_NE(mapped_libraries_with("openblas"), "") << "libtorch is not linked to OpenBLAS at run time";
  // Debian's reference BLAS lives in .../blas/libblas.so.3; OpenBLAS's in .../openblas-*/.
  EXPECT_EQ(mapped_libraries_with("/blas/libblas.so"), "") << "the reference BLAS is loaded";
}

// The in-process switch to the kernels that fit the CPU: OpenBLAS reports a core of the CPU's class
// afterwards, and products are still right.
TEST(Blas, FittingKernelsAreInForceAndCorrect) {
  bool preset = std::getenv("OPENBLAS_CORETYPE") != nullptr;
  std::string core = kd::use_fitting_blas_kernels();
  ASSERT_NE(core, "") << "OpenBLAS's openblas_get_corename is not reachable";
  for (auto& c : core) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
#if defined(__x86_64__)
  if (!preset && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    EXPECT_TRUE(core == "skylakex" || core == "cooperlake" || core == "sapphirerapids") << core;
  }
#endif
  (void)preset;
  auto a = torch::randn({300, 200}), b = torch::randn({200, 100});
  auto exact = a.to(torch::kDouble).mm(b.to(torch::kDouble));
  EXPECT_LT((a.mm(b).to(torch::kDouble) - exact).abs().max().item<double>(), 1e-3);
}

}  // namespace
