// EXL2 matmul with AVX2 and AVX-VNNI (compiled with those flags; called only when the CPU
// has them): the avx2 kernel, with one 8-bit dot product (vpdpbusd) where it multiplies,
// adds pairs and widens. The integer sums are the same: the 16-bit pair sums never
// saturate (matmul_exl2_impl.inc).
#define LAMINATE_EXL2_DOT4 1
#include "matmul_exl2_avx2.cc"
