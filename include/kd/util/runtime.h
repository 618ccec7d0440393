// Process-wide settings: threads and seeds. libtorch defaults to one intra-op
// thread on Debian; kdistill uses every core unless told otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace kd {

// threads <= 0 means all cores. Returns the number in force.
int configure_threads(int threads);
// Keeps freed tensor memory in the process instead of handing it back to the kernel after
// every step: glibc's defaults trim the heap and unmap large blocks on free, so each training
// step page-faults its activations in again (measured: half the CPU time in the kernel). Blocks of
// 64 MB and more (whole data sets) are still mapped on their own and returned when freed, so the
// peak memory stays that of the live tensors. Installs
// kdistill's CPU allocator for libtorch: tensors of 4 MB and more in 2 MB pages (MADV_HUGEPAGE), which
// page-fault 512 times less.
void configure_allocator();
// TorchScript graphs (teachers and students from files) run in libtorch's simple executor, for the
// whole process: the default profiling executor spends a graph's first calls profiling and
// re-optimising it (the tabular benchmark's teacher: 88 ms of warm-up against 62; a Fashion-MNIST CNN
// teacher, first four calls: 131-289 ms against 100-131), and its optimisations gave no speed here
// afterwards (libtorch 1.13 fuses nothing on the CPU: that CNN's forward of 256 took 10.7-12.2 ms
// against 10.1-10.7).
void configure_torchscript();
// The OpenBLAS core type that fits this CPU ("SKYLAKEX" with AVX-512, "HASWELL" with AVX2 and FMA),
// or "" when OPENBLAS_CORETYPE is already set or nothing better than OpenBLAS's own choice fits.
// Debian 12's OpenBLAS 0.3.21 does not recognise recent cores and picks slower kernels (measured on
// this project's 2-core Xeon: 37 GFLOP/s fp32 GEMM by default, 201 with SKYLAKEX).
std::string preferred_blas_coretype();
// Switches OpenBLAS, in this process, to preferred_blas_coretype() when the kernels it picked at load
// time are of a lower class (generic or SSE kernels on an AVX-512 CPU); a core it chose that fits (as
// COOPERLAKE on an AVX-512 CPU) is kept. Uses OpenBLAS's exported gotoblas_dynamic_quit/init, which
// re-read OPENBLAS_CORETYPE; call it first thing in main, before any BLAS call. Does nothing when the
// BLAS is not a DYNAMIC_ARCH OpenBLAS. OPENBLAS_CORETYPE stays set after a switch, so that child
// processes (auto's workers, the benchmark's peer) load the same kernels. Returns OpenBLAS's core name
// in force ("" when not OpenBLAS).
std::string use_fitting_blas_kernels();
// The memory this process may use: the machine's (MemTotal) or its cgroup's limit (memory.max, v2;
// memory.limit_in_bytes, v1), the smaller. 0 when neither can be read.
int64_t memory_available();
// The default of --max-memory: 80 % of memory_available() (0, no limit, when that is unknown).
int64_t default_memory_limit();
// "8G", "512M", "1.5GB", "300000000" -> bytes (K, M, G, T are powers of 1024); nothing for other text.
std::optional<int64_t> parse_bytes(const std::string& text);
// 1536 -> "1.5 KiB", 12.3e9 -> "11.5 GiB".
std::string bytes_text(double bytes);
// Seeds libtorch's global generator.
void seed_everything(uint64_t seed);

}  // namespace kd
