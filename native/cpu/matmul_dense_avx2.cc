// Dense matmul with AVX2, FMA and F16C (compiled with those flags; called only when the
// CPU has them).
#include <immintrin.h>

#include <cstdint>

#include "matmul_dense.h"

namespace laminate {
namespace {

struct Avx2 {
  static constexpr int W = 8;
  static constexpr int kRows = 4;
  static constexpr int kCols = 3;
  using V = __m256;
  static V zero() { return _mm256_setzero_ps(); }
  static V load_f32(const float* p) { return _mm256_loadu_ps(p); }
  static V load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static V load_bf16(const uint16_t* p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(V a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
};

#include "matmul_dense_impl.inc"

}  // namespace

void matmul_dense_avx2(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                       int64_t n0, int64_t n1) {
  matmul_dispatch<Avx2>(w, x, m, ldx, y, ldy, n0, n1);
}

}  // namespace laminate
