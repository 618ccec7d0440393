// Process-wide settings: threads and seeds. libtorch defaults to one intra-op
// thread on Debian; kdistill uses every core unless told otherwise.
#pragma once

#include <cstdint>
#include <string>

namespace kd {

// threads <= 0 means all cores. Returns the number in force.
int configure_threads(int threads);
// Keeps freed tensor memory in the process instead of handing it back to the kernel after
// every step: glibc's defaults trim the heap and unmap large blocks on free, so each training
// step page-faults its activations in again (measured: half the CPU time in the kernel). Blocks of
// 64 MB and more (whole data sets) are still mapped on their own and returned when freed, so the
// peak memory stays that of the live tensors. Installs kdistill's CPU allocator for libtorch:
// tensors of 16 MB and more in 2 MB pages (MADV_HUGEPAGE), which page-fault 512 times less.
void configure_allocator();
// The OpenBLAS core type that fits this CPU ("SKYLAKEX" with AVX-512, "HASWELL" with AVX2 and FMA),
// or "" when OPENBLAS_CORETYPE is already set or nothing better than OpenBLAS's own choice fits.
// Debian 12's OpenBLAS 0.3.21 does not recognise recent cores and picks slower kernels (measured on
// this project's 2-core Xeon: 37 GFLOP/s fp32 GEMM by default, 201 with SKYLAKEX).
std::string preferred_blas_coretype();
// OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded, before main: a program calls this first
// thing in main to restart itself (execv of /proc/self/exe, same arguments) with the variable set.
// Returns when no restart is needed or it failed; KD_BLAS_RESTARTED marks the restarted process.
void restart_with_blas_coretype(char** argv);
// Seeds libtorch's global generator.
void seed_everything(uint64_t seed);

}  // namespace kd
