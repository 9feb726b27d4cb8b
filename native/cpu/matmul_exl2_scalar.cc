// Portable EXL2 matmul: plain C++ over small fixed-size arrays.
#include <cstdint>
#include <algorithm>
#include <utility>
#include <vector>

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
  static U xor_u(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] ^ b.v[i];
    return r;
  }
  // Byte j of a lane: (x >> 8j) & 255; half h: (x >> 16h) & 65535.
  static int byte_u(uint32_t x, int j) { return static_cast<int>((x >> (8 * j)) & 255u); }
  static int byte_s(uint32_t x, int j) { return static_cast<int8_t>(byte_u(x, j)); }
  static int half_s(uint32_t x, int h) { return static_cast<int16_t>((x >> (16 * h)) & 65535u); }
  static uint32_t halves(int lo, int hi) { return (static_cast<uint32_t>(lo) & 65535u) | static_cast<uint32_t>(hi) << 16; }
  static uint32_t bytes(const int (&b)[4]) {
    uint32_t r = 0;
    for (int j = 0; j < 4; j++) r |= (static_cast<uint32_t>(b[j]) & 255u) << (8 * j);
    return r;
  }
  static int saturate16(int x) { return x > 32767 ? 32767 : x < -32768 ? -32768 : x; }
  static U maddubs(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) {
      int h[2];
      for (int k = 0; k < 2; k++)
        h[k] = saturate16(byte_u(a.v[i], 2 * k) * byte_s(b.v[i], 2 * k) + byte_u(a.v[i], 2 * k + 1) * byte_s(b.v[i], 2 * k + 1));
      r.v[i] = halves(h[0], h[1]);
    }
    return r;
  }
  static U add_i16(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = halves(half_s(a.v[i], 0) + half_s(b.v[i], 0), half_s(a.v[i], 1) + half_s(b.v[i], 1));
    return r;
  }
  static U widen(const U& a) {
    U r;
    for (int i = 0; i < W; i++) r.v[i] = static_cast<uint32_t>(half_s(a.v[i], 0) + half_s(a.v[i], 1));
    return r;
  }
  static U abs8(const U& a) {
    U r;
    for (int i = 0; i < W; i++) {
      int b[4];
      for (int j = 0; j < 4; j++) b[j] = byte_s(a.v[i], j) < 0 ? -byte_s(a.v[i], j) : byte_s(a.v[i], j);
      r.v[i] = bytes(b);
    }
    return r;
  }
  static U sign8(const U& a, const U& b) {
    U r;
    for (int i = 0; i < W; i++) {
      int c[4];
      for (int j = 0; j < 4; j++) {
        const int s = byte_s(b.v[i], j);
        c[j] = s < 0 ? -byte_s(a.v[i], j) : s == 0 ? 0 : byte_s(a.v[i], j);
      }
      r.v[i] = bytes(c);
    }
    return r;
  }
  static V i32_to_f32(const U& a) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = static_cast<float>(static_cast<int32_t>(a.v[i]));
    return r;
  }
  static V scales(const uint32_t* words, const float* table) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = table[(words[i / 8] >> (4 * (i % 8))) & 15u];
    return r;
  }

};

#include "matmul_exl2_impl.inc"

}  // namespace

void matmul_exl2_scalar(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  matmul_exl2_impl<Scalar>(w, a, y, ldy, n0, n1);
}

}  // namespace laminate
