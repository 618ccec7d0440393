#include "kd/util/runtime.h"

#include <malloc.h>
#include <torch/torch.h>

#include <thread>

namespace kd {

int configure_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  return threads;
}

void configure_allocator() {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace kd
