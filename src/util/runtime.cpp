#include "kd/util/runtime.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <torch/torch.h>

#include <thread>

namespace kd {

int configure_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  return threads;
}

void configure_allocator() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

std::string preferred_blas_coretype() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return "";
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return "SKYLAKEX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "HASWELL";
#endif
  return "";
}

void restart_with_blas_coretype(char** argv) {
  if (std::getenv("KD_BLAS_RESTARTED") != nullptr) return;
  std::string coretype = preferred_blas_coretype();
  if (coretype.empty()) return;
  setenv("OPENBLAS_CORETYPE", coretype.c_str(), 1);
  setenv("KD_BLAS_RESTARTED", "1", 1);
  execv("/proc/self/exe", argv);
  // execv returned: it failed; carry on with OpenBLAS's own choice.
  unsetenv("OPENBLAS_CORETYPE");
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace kd
