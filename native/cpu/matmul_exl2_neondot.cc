// EXL2 matmul with AArch64 Advanced SIMD and the ARMv8.2-A dot-product extension (SDOT):
// the NEON kernel with four 8-bit products added into each 32-bit lane (compiled with
// -march=armv8.2-a+dotprod; called only when the CPU has it).
#define LAMINATE_EXL2_DOT4 1
#include "matmul_exl2_neon.cc"
