// EXL2 matmul with AArch64 Advanced SIMD (built for arm64 only). A vector is two 128-bit
// registers, eight 32-bit lanes, as in the AVX2 kernel. Without the dot-product extension
// the unsigned-by-signed byte products are widened to 16 bits and summed in pairs
// (the same sums as x86's maddubs, which never saturate here); with it (matmul_exl2_neondot.cc
// defines LAMINATE_EXL2_DOT4, compiled for ARMv8.2-A with dotprod) SDOT adds four byte
// products into each lane. SDOT multiplies signed bytes: codes below 8 bits are at most 63
// and read the same either way, and 8-bit codes are passed centered (q - 128) with the
// activations as they are (S::kSignedDot4).
#include <arm_neon.h>

#include <cstdint>
#include <algorithm>
#include <utility>
#include <vector>

#include "matmul_exl2.h"

namespace laminate {
namespace {

struct Neon {
  static constexpr int W = 8;
  struct V {
    float32x4_t lo, hi;
  };
  struct U {
    uint32x4_t lo, hi;
  };
  static int8x16_t s8(uint32x4_t a) { return vreinterpretq_s8_u32(a); }
  static uint32x4_t u32(int8x16_t a) { return vreinterpretq_u32_s8(a); }
  static uint32x4_t u32(int16x8_t a) { return vreinterpretq_u32_s16(a); }
  static uint32x4_t u32(int32x4_t a) { return vreinterpretq_u32_s32(a); }
  static int16x8_t s16(uint32x4_t a) { return vreinterpretq_s16_u32(a); }

  static V set1(float x) { return {vdupq_n_f32(x), vdupq_n_f32(x)}; }
  static V mul(const V& a, const V& b) { return {vmulq_f32(a.lo, b.lo), vmulq_f32(a.hi, b.hi)}; }
  static V fmadd(const V& a, const V& b, const V& c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
  static V load_f32(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
  static void store(float* p, const V& a) {
    vst1q_f32(p, a.lo);
    vst1q_f32(p + 4, a.hi);
  }
  static U set1_u(uint32_t x) { return {vdupq_n_u32(x), vdupq_n_u32(x)}; }
  static U zero_u() { return set1_u(0); }
  static U load_u32(const uint32_t* p) { return {vld1q_u32(p), vld1q_u32(p + 4)}; }
  template <int K>
  static U srl(const U& a) { return {vshrq_n_u32(a.lo, K), vshrq_n_u32(a.hi, K)}; }
  template <int K>
  static U sll(const U& a) { return {vshlq_n_u32(a.lo, K), vshlq_n_u32(a.hi, K)}; }
  static U and_u(const U& a, const U& b) { return {vandq_u32(a.lo, b.lo), vandq_u32(a.hi, b.hi)}; }
  static U or_u(const U& a, const U& b) { return {vorrq_u32(a.lo, b.lo), vorrq_u32(a.hi, b.hi)}; }
  static U xor_u(const U& a, const U& b) { return {veorq_u32(a.lo, b.lo), veorq_u32(a.hi, b.hi)}; }
  static U add_i(const U& a, const U& b) { return {vaddq_u32(a.lo, b.lo), vaddq_u32(a.hi, b.hi)}; }
  static U sub_i(const U& a, const U& b) { return {vsubq_u32(a.lo, b.lo), vsubq_u32(a.hi, b.hi)}; }
  static V i32_to_f32(const U& a) {
    return {vcvtq_f32_s32(vreinterpretq_s32_u32(a.lo)), vcvtq_f32_s32(vreinterpretq_s32_u32(a.hi))};
  }
  // unsigned bytes of a times signed bytes of b, adjacent products summed into int16
  static uint32x4_t maddubs1(uint32x4_t a, uint32x4_t b) {
    const uint8x16_t ua = vreinterpretq_u8_u32(a);
    const int8x16_t sb = s8(b);
    const int16x8_t lo = vmulq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(ua))), vmovl_s8(vget_low_s8(sb)));
    const int16x8_t hi = vmulq_s16(vreinterpretq_s16_u16(vmovl_high_u8(ua)), vmovl_high_s8(sb));
    return u32(vpaddq_s16(lo, hi));
  }
  static U maddubs(const U& a, const U& b) { return {maddubs1(a.lo, b.lo), maddubs1(a.hi, b.hi)}; }
  static U add_i16(const U& a, const U& b) {
    return {u32(vaddq_s16(s16(a.lo), s16(b.lo))), u32(vaddq_s16(s16(a.hi), s16(b.hi)))};
  }
  static U widen(const U& a) { return {u32(vpaddlq_s16(s16(a.lo))), u32(vpaddlq_s16(s16(a.hi)))}; }
  static U abs8(const U& a) { return {u32(vabsq_s8(s8(a.lo))), u32(vabsq_s8(s8(a.hi)))}; }
  // bytes of a negated where those of b are negative, zero where b is zero
  static uint32x4_t sign1(uint32x4_t a, uint32x4_t b) {
    const int8x16_t sa = s8(a), sb = s8(b);
    const int8x16_t r = vbslq_s8(vcltzq_s8(sb), vnegq_s8(sa), sa);
    return vandq_u32(u32(r), vreinterpretq_u32_u8(vtstq_s8(sb, sb)));
  }
  static U sign8(const U& a, const U& b) { return {sign1(a.lo, b.lo), sign1(a.hi, b.hi)}; }
  static V scales(const uint32_t* words, const float* table) {
    alignas(16) float s[8];
    for (int i = 0; i < 8; i++) s[i] = table[(words[0] >> (4 * i)) & 15u];
    return load_f32(s);
  }
#ifdef LAMINATE_EXL2_DOT4
  static constexpr bool kDot4 = true;
  static constexpr bool kSignedDot4 = true;
  static uint32x4_t dot1(uint32x4_t acc, uint32x4_t a, uint32x4_t b) {
    return u32(vdotq_s32(vreinterpretq_s32_u32(acc), s8(a), s8(b)));
  }
  static U dot4(const U& acc, const U& a, const U& b) { return {dot1(acc.lo, a.lo, b.lo), dot1(acc.hi, a.hi, b.hi)}; }
#else
  static constexpr bool kDot4 = false;
  static constexpr bool kSignedDot4 = false;
#endif
};

#include "matmul_exl2_impl.inc"

}  // namespace

#ifdef LAMINATE_EXL2_DOT4
void matmul_exl2_neondot(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
#else
void matmul_exl2_neon(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
#endif
  matmul_exl2_impl<Neon>(w, a, y, ldy, n0, n1);
}

}  // namespace laminate
