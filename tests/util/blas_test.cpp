// The set-up installs an optimised BLAS; libtorch must actually be using it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <string>

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

}  // namespace
