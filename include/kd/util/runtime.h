// Process-wide settings: threads and seeds. libtorch defaults to one intra-op
// thread on Debian; kdistill uses every core unless told otherwise.
#pragma once

#include <cstdint>

namespace kd {

// threads <= 0 means all cores. Returns the number in force.
int configure_threads(int threads);
// Seeds libtorch's global generator.
void seed_everything(uint64_t seed);

}  // namespace kd
