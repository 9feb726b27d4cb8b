// Loops that take a job's time but sit outside the per-ISA kernel files: compiled for
// AVX-512 and AVX2 besides the baseline, the variant picked at load, where the toolchain
// can (GCC on x86-64 Linux); elsewhere the baseline alone.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LAMINATE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LAMINATE_VECTOR_CLONES
#endif
