// Dense matmul with AArch64 Advanced SIMD (NEON, part of every ARMv8-A CPU; built for arm64
// only). A vector is two 128-bit registers, eight floats, as in the AVX2 kernel: AArch64 has
// 32 vector registers, so the same tiles fit. Half floats widen with the FCVTL instruction,
// bfloat16 with a 16-bit left shift; both are exact.
#include <arm_neon.h>

#include <cstdint>

#include "matmul_dense.h"

namespace laminate {
namespace {

struct Neon {
  static constexpr int W = 8;
  static constexpr int kRows = 4;
  static constexpr int kCols = 4;
  struct V {
    float32x4_t lo, hi;
  };
  static V zero() { return {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}; }
  static V load_f32(const float* p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
  static V load_f16(const uint16_t* p) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(p));
    return {vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)};
  }
  static V load_bf16(const uint16_t* p) {
    const uint16x8_t h = vld1q_u16(p);
    return {vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)), vreinterpretq_f32_u32(vshll_high_n_u16(h, 16))};
  }
  static V fmadd(const V& a, const V& b, const V& c) { return {vfmaq_f32(c.lo, a.lo, b.lo), vfmaq_f32(c.hi, a.hi, b.hi)}; }
  static float sum(const V& a) { return vaddvq_f32(vaddq_f32(a.lo, a.hi)); }
  static float f16_scalar(uint16_t h) { return f16_to_f32(h); }
};

#include "matmul_dense_impl.inc"

}  // namespace

void matmul_dense_neon(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                       int64_t n0, int64_t n1) {
  matmul_dispatch<Neon>(w, x, m, ldx, y, ldy, n0, n1);
}

}  // namespace laminate
