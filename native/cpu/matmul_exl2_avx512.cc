// EXL2 matmul with AVX-512 F/BW/VL (compiled with those flags; called only when the CPU
// has them): sixteen output columns at a time.
#include <immintrin.h>

#include <cstdint>
#include <algorithm>
#include <utility>
#include <vector>

#include "matmul_exl2.h"

namespace laminate {
namespace {

struct Avx512 {
  static constexpr int W = 16;
  using V = __m512;
  using U = __m512i;
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V load_f32(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V a) { _mm512_storeu_ps(p, a); }
  static U zero_u() { return _mm512_setzero_si512(); }
  static U load_u32(const uint32_t* p) { return _mm512_loadu_si512(p); }
  template <int K>
  static U srl(U a) { return _mm512_srli_epi32(a, K); }
  template <int K>
  static U sll(U a) { return _mm512_slli_epi32(a, K); }
  static U and_u(U a, U b) { return _mm512_and_si512(a, b); }
  static U or_u(U a, U b) { return _mm512_or_si512(a, b); }
  static U set1_u(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static U add_i(U a, U b) { return _mm512_add_epi32(a, b); }
  static U sub_i(U a, U b) { return _mm512_sub_epi32(a, b); }
  static U xor_u(U a, U b) { return _mm512_xor_si512(a, b); }
  static U maddubs(U a, U b) { return _mm512_maddubs_epi16(a, b); }
  static U add_i16(U a, U b) { return _mm512_add_epi16(a, b); }
  static U widen(U a) { return _mm512_madd_epi16(a, _mm512_set1_epi16(1)); }
  static U abs8(U a) { return _mm512_abs_epi8(a); }
  static U sign8(U a, U b) { return _mm512_mask_sub_epi8(a, _mm512_movepi8_mask(b), _mm512_setzero_si512(), a); }
  static V i32_to_f32(U a) { return _mm512_cvtepi32_ps(a); }
  static V scales(const uint32_t* words, const float* table) {
    const __m512i packed = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(static_cast<int>(words[0]))),
                                              _mm256_set1_epi32(static_cast<int>(words[1])), 1);
    const __m512i shifts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i s = _mm512_and_si512(_mm512_srlv_epi32(packed, shifts), _mm512_set1_epi32(15));
    return _mm512_permutexvar_ps(s, _mm512_loadu_ps(table));
  }
#ifdef LAMINATE_EXL2_DOT4
  // unsigned bytes of a times signed bytes of b, four to a lane, added to acc's int32 lanes
  static constexpr bool kDot4 = true;
  static constexpr bool kSignedDot4 = false;
  static U dot4(U acc, U a, U b) { return _mm512_dpbusd_epi32(acc, a, b); }
#else
  static constexpr bool kDot4 = false;
  static constexpr bool kSignedDot4 = false;
#endif
};

#include "matmul_exl2_impl.inc"

}  // namespace

#ifdef LAMINATE_EXL2_DOT4
void matmul_exl2_avx512vnni(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
#else
void matmul_exl2_avx512(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
#endif
  matmul_exl2_impl<Avx512>(w, a, y, ldy, n0, n1);
}

}  // namespace laminate
