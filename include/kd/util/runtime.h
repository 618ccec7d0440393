// Process-wide settings: threads and seeds. libtorch defaults to one intra-op
// thread on Debian; kdistill uses every core unless told otherwise.
#pragma once

#include <cstdint>

namespace kd {

// threads <= 0 means all cores. Returns the number in force.
int configure_threads(int threads);
// Keeps freed tensor memory in the process instead of handing it back to the kernel after
// every step: glibc's defaults trim the heap and unmap large blocks on free, so each training
// step page-faults its activations in again (measured: half the CPU time in the kernel).
void configure_allocator();
// Seeds libtorch's global generator.
void seed_everything(uint64_t seed);

}  // namespace kd
