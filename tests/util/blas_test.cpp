// The set-up installs an optimised BLAS; libtorch must actually be using it. And the memory helpers of kd/util/runtime.h.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

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

namespace {

// The VmFlags of the mapping of /proc/self/smaps that holds `address`.
std::string vm_flags_at(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  auto a = reinterpret_cast<uintptr_t>(address);
  while (std::getline(smaps, line)) {
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2 && line.find(':') > line.find(' ')) {
      inside = a >= begin && a < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

// kdistill's CPU allocator puts tensors of 4 MB and more in 2 MB pages (a large data set's first touch).
TEST(Memory, LargeTensorsAreAdvisedHugePages) {
  kd::configure_allocator();
  torch::Tensor large = torch::zeros({int64_t{3} << 20}, torch::kDouble);  // 24 MB
  torch::Tensor small = torch::ones({100});
  EXPECT_EQ(large.sum().item<double>(), 0.0);
  EXPECT_EQ(small.sum().item<float>(), 100.0f);
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp) GTEST_SKIP() << "no transparent huge pages in this kernel";
  const auto* middle = static_cast<const char*>(large.data_ptr()) + (size_t{12} << 20);
  EXPECT_NE(vm_flags_at(middle).find(" hg"), std::string::npos) << vm_flags_at(middle);
}

}  // namespace
