// Portable EXL2 matmul: plain C++ over small fixed-size arrays.
#include <cstdint>
#include <algorithm>
#include <utility>
#include <vector>

#include "../core/dtype.h"
#include "matmul_exl2.h"

namespace laminate {
namespace {

struct Scalar {
  static constexpr int W = 8;
  struct V {
    float v[W];
  };
  struct U {
    uint32_t v[W];
  };
  static V set1(float x) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = x;
    return r;
  }
  static V mul(const V& a, const V& b) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
  static V fmadd(const V& a, const V& b, const V& c) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static V load_f32(const float* p) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, const V& a) {
    for (int i = 0; i < W; i++) p[i] = a.v[i];
  }
  static U zero_u() { return set1_u(0); }
  static U load_u32(const uint32_t* p) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = p[i];
    return r;
  }
  template <int K>
  static U srl(const U& a) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] >> K;
    return r;
  }
  template <int K>
  static U sll(const U& a) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] << K;
    return r;
  }
  static U and_u(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] & b.v[i];
    return r;
  }
  static U or_u(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] | b.v[i];
    return r;
  }
  static U set1_u(uint32_t x) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = x;
    return r;
  }
  // int32 lanes in two's complement, kept in uint32 so that wrapping is defined
  static U add_i(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
  static U sub_i(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] - b.v[i];
    return r;
  }
  static U madd(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) {
      const int32_t lo = static_cast<int16_t>(a.v[i] & 0xffffu) * static_cast<int16_t>(b.v[i] & 0xffffu);
      const int32_t hi = static_cast<int16_t>(a.v[i] >> 16) * static_cast<int16_t>(b.v[i] >> 16);
      r.v[i] = static_cast<uint32_t>(lo) + static_cast<uint32_t>(hi);
    }
    return r;
  }
  static V i32_to_f32(const U& a) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = static_cast<float>(static_cast<int32_t>(a.v[i]));
    return r;
  }
  // This file is built with the baseline flags, so the shared conversions are safe here.
  static V scales(const uint32_t* words, float m) {
    V r;
    for (int i = 0; i < W; i++) {
      const uint32_t s = (words[i / 8] >> (4 * (i % 8))) & 15u;
      r.v[i] = f16_to_f32(f32_to_f16_bits(static_cast<float>((s + 1) * (s + 1)) * m));
    }
    return r;
  }
};

#include "matmul_exl2_impl.inc"

}  // namespace

void matmul_exl2_scalar(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  matmul_exl2_impl<Scalar>(w, a, y, ldy, n0, n1);
}

}  // namespace laminate
