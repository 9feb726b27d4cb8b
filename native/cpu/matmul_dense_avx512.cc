// Dense matmul with AVX-512 F/BW/VL (compiled with those flags; called only when the
// CPU has them). Weights are widened to float32 exactly, so results follow the same
// float32 arithmetic as the other paths, with sixteen lanes.
#include <immintrin.h>

#include <cstdint>

#include "matmul_dense.h"

namespace laminate {
namespace {

struct Avx512 {
  static constexpr int W = 16;
  static constexpr int kRows = 4;
  static constexpr int kCols = 6;
  using V = __m512;
  static V zero() { return _mm512_setzero_ps(); }
  static V load_f32(const float* p) { return _mm512_loadu_ps(p); }
  static V load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static V load_bf16(const uint16_t* p) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(V a) { return _mm512_reduce_add_ps(a); }
  static float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
};

#include "matmul_dense_impl.inc"

}  // namespace

void matmul_dense_avx512(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  matmul_dispatch<Avx512>(w, x, m, ldx, y, ldy, n0, n1);
}

}  // namespace laminate
