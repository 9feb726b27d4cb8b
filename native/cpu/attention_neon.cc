// Attention with AArch64 Advanced SIMD (built for arm64 only): a key block is four 128-bit
// vectors. Half floats widen with FCVTL, int8 codes through 16 and 32 bits.
#include <arm_neon.h>

#include <cmath>
#include <cstdint>

#include "../core/dtype.h"
#include "attention.h"

namespace laminate {
namespace {

struct Neon {
  struct B {
    float32x4_t v[4];
  };
  template <class F>
  static B map(F f) {
    return {{f(0), f(1), f(2), f(3)}};
  }
  static B zero() { return set1(0.0f); }
  static B set1(float x) { return map([x](int) { return vdupq_n_f32(x); }); }
  static B load(const float* p) { return map([p](int i) { return vld1q_f32(p + 4 * i); }); }
  static void store(float* p, const B& b) {
    for (int i = 0; i < 4; i++) vst1q_f32(p + 4 * i, b.v[i]);
  }
  static B load_e(const uint16_t* p) {
    const float16x8_t lo = vreinterpretq_f16_u16(vld1q_u16(p)), hi = vreinterpretq_f16_u16(vld1q_u16(p + 8));
    return {{vcvt_f32_f16(vget_low_f16(lo)), vcvt_high_f32_f16(lo), vcvt_f32_f16(vget_low_f16(hi)), vcvt_high_f32_f16(hi)}};
  }
  static B load_e(const int8_t* p) {
    const int8x16_t q = vld1q_s8(p);
    const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    return {{vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vcvtq_f32_s32(vmovl_high_s16(lo)),
             vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), vcvtq_f32_s32(vmovl_high_s16(hi))}};
  }
  static B mul(const B& a, const B& b) { return map([&](int i) { return vmulq_f32(a.v[i], b.v[i]); }); }
  static B add(const B& a, const B& b) { return map([&](int i) { return vaddq_f32(a.v[i], b.v[i]); }); }
  static B sub(const B& a, const B& b) { return map([&](int i) { return vsubq_f32(a.v[i], b.v[i]); }); }
  static B fmadd(const B& a, const B& b, const B& c) { return map([&](int i) { return vfmaq_f32(c.v[i], a.v[i], b.v[i]); }); }
  static float hmax(const B& b) { return vmaxvq_f32(vmaxq_f32(vmaxq_f32(b.v[0], b.v[1]), vmaxq_f32(b.v[2], b.v[3]))); }
  static float hsum(const B& b) { return vaddvq_f32(vaddq_f32(vaddq_f32(b.v[0], b.v[2]), vaddq_f32(b.v[1], b.v[3]))); }
  static float scalar(uint16_t h) { return f16_to_f32(h); }
  static float scalar(int8_t q) { return q; }
  // e^x as in attention_avx512.cc.
  static float32x4_t exp4(float32x4_t x) {
    const uint32x4_t keep = vcgeq_f32(x, vdupq_n_f32(-87.3365f));
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.0f)), vdupq_n_f32(-87.3365f));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
    y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, r);
    y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, r);
    y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, r);
    y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, r);
    y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, r);
    y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), y, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_u32(vandq_u32(keep, vreinterpretq_u32_f32(vmulq_f32(y, vreinterpretq_f32_s32(e)))));
  }
  static B exp(const B& x) { return map([&](int i) { return exp4(x.v[i]); }); }
};

#include "attention_impl.inc"

}  // namespace

void attention_neon(const AttentionJob& job) { attend_any<Neon>(job); }

}  // namespace laminate
