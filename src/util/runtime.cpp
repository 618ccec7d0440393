#include "kd/util/runtime.h"

#include <torch/torch.h>

#include <thread>

namespace kd {

int configure_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  return threads;
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

}  // namespace kd
