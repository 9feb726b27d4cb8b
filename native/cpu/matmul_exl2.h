// The CPU's EXL2 matmul (the format and its view: ../exl2/format.h). It works on the packed codes directly, in integers: activations are permuted once
// per call and rounded to int8 with one scale per segment (at most 32 rows of one group);
// within a segment, sum xq[j] * q_j per output column with 8-bit multiply-adds (four codes
// per 32-bit lane), take out the zero point, then multiply by the column's scale and the
// activation scale. One implementation per instruction set, from matmul_exl2_impl.inc.
#pragma once
#include <cstdint>
#include <vector>

#include "../exl2/format.h"

namespace laminate {

// Activations for one call, in stored-row order, rounded to int8: row r's stored row j is
// x[r, perm[j]] ~ q[r * ldq + j] * scale[r * segments + s] for j in segment s, and
// sum[r * segments + s] is the sum of the segment's q.
struct Exl2Act {
  const int8_t* q = nullptr;
  int64_t ldq = 0;
  const float* scale = nullptr;
  const int32_t* sum = nullptr;
  int m = 0;
};

// Fills q (m * k), scale and sum (m * segments) from x (m rows, ldx apart).
void exl2_quantize_activations(const Exl2View& w, const float* x, int m, int64_t ldx, int8_t* q, float* scale,
                               int32_t* sum);

// Y[r, n] = sum_j xp[r, j] * w(j, n) for n in [n0, n1) and r < a.m, on a view in the quad layout.
using MatmulExl2Fn = void (*)(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);

void matmul_exl2_scalar(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_avx2(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_avx512(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_avx2vnni(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_avx512vnni(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_neon(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_neondot(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);

}  // namespace laminate
