// Attention with AVX-512 F (compiled with those flags; called only when the CPU has them):
// a key block is one vector.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "attention.h"

namespace laminate {
namespace {

struct Avx512 {
  using B = __m512;
  static B zero() { return _mm512_setzero_ps(); }
  static B set1(float x) { return _mm512_set1_ps(x); }
  static B load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, B v) { _mm512_storeu_ps(p, v); }
  static B load_e(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static B load_e(const int8_t* p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))); }
  static B mul(B a, B b) { return _mm512_mul_ps(a, b); }
  static B add(B a, B b) { return _mm512_add_ps(a, b); }
  static B sub(B a, B b) { return _mm512_sub_ps(a, b); }
  static B fmadd(B a, B b, B c) { return _mm512_fmadd_ps(a, b, c); }
  static float hmax(B v) { return _mm512_reduce_max_ps(v); }
  static float hsum(B v) { return _mm512_reduce_add_ps(v); }
  static float scalar(uint16_t h) { return _cvtsh_ss(h); }
  static float scalar(int8_t q) { return q; }
  // e^x as 2^n * p(r), x = n ln 2 + r, |r| <= ln 2 / 2, with a degree-6 polynomial for
  // e^r (about 1 ulp); 0 below -87.3.
  static B exp(B x) {
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365f), _CMP_GE_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.3365f));
    const B n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    B r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    B y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps(keep, y, _mm512_castsi512_ps(e));
  }
};

#include "attention_impl.inc"

}  // namespace

void attention_avx512(const AttentionJob& job) { attend_any<Avx512>(job); }

}  // namespace laminate
