// EXL2 matmul with AVX2, FMA and F16C (compiled with those flags; called only when the
// CPU has them).
#include <immintrin.h>

#include <cstdint>
#include <algorithm>
#include <utility>
#include <vector>

#include "matmul_exl2.h"

namespace laminate {
namespace {

struct Avx2 {
  static constexpr int W = 8;
  using V = __m256;
  using U = __m256i;
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V load_f32(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V a) { _mm256_storeu_ps(p, a); }
  static U zero_u() { return _mm256_setzero_si256(); }
  static U load_u32(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  template <int K>
  static U srl(U a) { return _mm256_srli_epi32(a, K); }
  template <int K>
  static U sll(U a) { return _mm256_slli_epi32(a, K); }
  static U and_u(U a, U b) { return _mm256_and_si256(a, b); }
  static U or_u(U a, U b) { return _mm256_or_si256(a, b); }
  static U set1_u(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static U add_i(U a, U b) { return _mm256_add_epi32(a, b); }
  static U sub_i(U a, U b) { return _mm256_sub_epi32(a, b); }
  static U xor_u(U a, U b) { return _mm256_xor_si256(a, b); }
  static U maddubs(U a, U b) { return _mm256_maddubs_epi16(a, b); }
  static U add_i16(U a, U b) { return _mm256_add_epi16(a, b); }
  static U widen(U a) { return _mm256_madd_epi16(a, _mm256_set1_epi16(1)); }
  static U abs8(U a) { return _mm256_abs_epi8(a); }
  static U sign8(U a, U b) { return _mm256_sign_epi8(a, b); }
  static V i32_to_f32(U a) { return _mm256_cvtepi32_ps(a); }
  static V scales(const uint32_t* words, const float* table) {
    const __m256i s = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(words[0])), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)), _mm256_set1_epi32(15));
    const __m256 low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table), s);
    const __m256 high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), s);
    return _mm256_blendv_ps(low, high, _mm256_castsi256_ps(_mm256_slli_epi32(s, 28)));  // s >= 8: high
  }
#ifdef LAMINATE_EXL2_DOT4
  // unsigned bytes of a times signed bytes of b, four to a lane, added to acc's int32 lanes
  static constexpr bool kDot4 = true;
  static constexpr bool kSignedDot4 = false;
  static U dot4(U acc, U a, U b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
#else
  static constexpr bool kDot4 = false;
  static constexpr bool kSignedDot4 = false;
#endif
};

#include "matmul_exl2_impl.inc"

}  // namespace

#ifdef LAMINATE_EXL2_DOT4
void matmul_exl2_avx2vnni(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
#else
void matmul_exl2_avx2(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
#endif
  matmul_exl2_impl<Avx2>(w, a, y, ldy, n0, n1);
}

}  // namespace laminate
