#include "kd/util/runtime.h"

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <torch/torch.h>

#include <thread>

#include "kd/util/strings.h"

namespace kd {

int configure_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // libtorch applies the count on each thread's first parallel call (lazy_init_num_threads), by calling
  // set_num_threads there, which rebuilds its pthreadpool each time: a new worker thread that spins
  // ~20 ms of CPU. The tabular benchmark's run built it four times (here, on the main thread's first
  // parallel op and on the OpenMP worker's). Each thread of the team is initialised first, while no
  // count is set (that only sets OpenMP's default), so the pool is built here and only here.
  at::internal::lazy_init_num_threads();
#pragma omp parallel num_threads(threads)
  at::internal::lazy_init_num_threads();
  torch::set_num_threads(threads);
  return threads;
}

namespace {

constexpr size_t kHugePage = size_t{2} << 20;
// Rounding up to 2 MB adds at most half of a 4 MB block (a 4-16 MB tensor: a tabular data set of 50,000
// x 40 floats is 8 MB, 22 ms of 4 KB page faults the first time it is written).
constexpr size_t kHugeFrom = size_t{4} << 20;

}  // namespace

namespace {

// Frees both kinds of block: c10::alloc_cpu is posix_memalign on Linux, the large ones aligned_alloc.
void free_block(void* block) { std::free(block); }

// libtorch's CPU allocator, except that blocks of 4 MB and more are 2 MB aligned and marked
// MADV_HUGEPAGE: first touching 169 MB (Fashion-MNIST's training inputs as float32) took 470 ms
// in 4 KB page faults on this VM and 18 ms in 2 MB pages. The kernel may decline (THP "never"):
// then it is the usual small pages.
class HugePageAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) const override {
    if (bytes < kHugeFrom) {
      void* block = c10::alloc_cpu(bytes);
      return {block, block, &free_block, c10::Device(c10::DeviceType::CPU)};
    }
    size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* block = std::aligned_alloc(kHugePage, rounded);
    if (block == nullptr) throw std::bad_alloc();
    madvise(block, rounded, MADV_HUGEPAGE);
    return {block, block, &free_block, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }
};

}  // namespace

void configure_allocator() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  static HugePageAllocator allocator;
  c10::SetCPUAllocator(&allocator, /*priority=*/1);
}

void configure_torchscript() { torch::jit::getExecutorMode() = false; }

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

namespace {

// 2: AVX-512 kernels, 1: AVX2 ones, 0: anything older or unknown. OpenBLAS's own core names.
int kernel_class(std::string name) {
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* core : {"skylakex", "cooperlake", "sapphirerapids"}) {
    if (name == core) return 2;
  }
  for (const char* core : {"haswell", "zen", "excavator"}) {
    if (name == core) return 1;
  }
  return 0;
}

}  // namespace

std::string use_fitting_blas_kernels() {
  using Action = void (*)();
  using Name = char* (*)();
  auto corename = reinterpret_cast<Name>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  auto quit = reinterpret_cast<Action>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  auto init = reinterpret_cast<Action>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (corename == nullptr) return "";
  std::string current = corename();
  std::string wanted = preferred_blas_coretype();
  // The kernel table of that name must exist in this build, or OpenBLAS's init would exit.
  bool available = !wanted.empty() && dlsym(RTLD_DEFAULT, ("gotoblas_" + wanted).c_str()) != nullptr;
  if (quit == nullptr || init == nullptr || !available || kernel_class(wanted) <= kernel_class(current)) {
    return current;
  }
  setenv("OPENBLAS_CORETYPE", wanted.c_str(), 1);
  quit();
  init();
  return corename();
}

int64_t memory_available() {
  int64_t total = 0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemTotal:") {
      total = kib * 1024;
      break;
    }
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  for (const char* file : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(file);
    std::string value;
    if (!(in >> value)) continue;
    auto limit = parse_int(value);  // "max" (v2) is no limit; v1 writes a huge number for none
    if (limit && *limit > 0 && (total == 0 || *limit < total)) total = *limit;
  }
  return total;
}

int64_t default_memory_limit() { return memory_available() / 10 * 8; }

std::optional<int64_t> parse_bytes(const std::string& text) {
  std::string t = to_lower(trim(text));
  if (ends_with(t, "ib")) t.erase(t.size() - 2, 1);  // "GiB" as "GB"
  if (ends_with(t, "b")) t.pop_back();
  double scale = 1;
  if (!t.empty() && std::string("kmgt").find(t.back()) != std::string::npos) {
    scale = std::pow(1024.0, static_cast<double>(std::string("kmgt").find(t.back()) + 1));
    t.pop_back();
  }
  auto value = parse_double(trim(t));
  if (!value || *value < 0 || !std::isfinite(*value * scale) || *value * scale > 9e18) return std::nullopt;
  return static_cast<int64_t>(*value * scale);
}

std::string bytes_text(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 5) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} bytes", bytes) : fmt::format("{:.1f} {}", bytes, units[unit]);
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace kd
