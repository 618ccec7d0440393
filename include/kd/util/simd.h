// Function multi-versioning for the hand-written CPU loops (fused ops, fused Adam): the function is
// built for AVX-512 and AVX2 as well as the baseline, and the loader picks the best the CPU runs
// (GCC's target_clones; plain on other compilers and architectures).
//
//   KD_VECTOR_CLONES void scale(float* x, int64_t n, float s) { for (...) x[i] *= s; }
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KD_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KD_VECTOR_CLONES
#endif
