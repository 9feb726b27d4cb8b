// Portable EXL2 matmul: plain C++ over small fixed-size arrays.
#include <cstdint>
#include <algorithm>
#include <utility>
#include <vector>

#include "matmul_exl2.h"

namespace laminate {
namespace {

struct Scalar {
  static constexpr bool kDot4 = false;
  static constexpr bool kSignedDot4 = false;
  static constexpr int W = 8;
  struct V {
    float v[W];
  };
  struct U {
    uint32_t v[W];
  };
  // Lane by lane: out.v[i] = f(i).
  template <class T, class F>
  static T lanes(F f) {
    T r;
    for (int i = 0; i < W; i++) r.v[i] = f(i);
    return r;
  }
  static V set1(float x) { return lanes<V>([&](int) { return x; }); }
  static V mul(const V& a, const V& b) { return lanes<V>([&](int i) { return a.v[i] * b.v[i]; }); }
  static V fmadd(const V& a, const V& b, const V& c) { return lanes<V>([&](int i) { return a.v[i] * b.v[i] + c.v[i]; }); }
  static V load_f32(const float* p) { return lanes<V>([&](int i) { return p[i]; }); }
  static void store(float* p, const V& a) {
    for (int i = 0; i < W; i++) p[i] = a.v[i];
  }
  static U set1_u(uint32_t x) { return lanes<U>([&](int) { return x; }); }
  static U zero_u() { return set1_u(0); }
  static U load_u32(const uint32_t* p) { return lanes<U>([&](int i) { return p[i]; }); }
  template <int K>
  static U srl(const U& a) { return lanes<U>([&](int i) { return a.v[i] >> K; }); }
  template <int K>
  static U sll(const U& a) { return lanes<U>([&](int i) { return a.v[i] << K; }); }
  static U and_u(const U& a, const U& b) { return lanes<U>([&](int i) { return a.v[i] & b.v[i]; }); }
  static U or_u(const U& a, const U& b) { return lanes<U>([&](int i) { return a.v[i] | b.v[i]; }); }
  static U xor_u(const U& a, const U& b) { return lanes<U>([&](int i) { return a.v[i] ^ b.v[i]; }); }
  // int32 lanes in two's complement, kept in uint32 so that wrapping is defined
  static U add_i(const U& a, const U& b) { return lanes<U>([&](int i) { return a.v[i] + b.v[i]; }); }
  static U sub_i(const U& a, const U& b) { return lanes<U>([&](int i) { return a.v[i] - b.v[i]; }); }
  static V i32_to_f32(const U& a) { return lanes<V>([&](int i) { return static_cast<float>(static_cast<int32_t>(a.v[i])); }); }

  // Byte j of a lane: (x >> 8j) & 255; half h: (x >> 16h) & 65535.
  static int byte_u(uint32_t x, int j) { return static_cast<int>((x >> (8 * j)) & 255u); }
  static int byte_s(uint32_t x, int j) { return static_cast<int8_t>(byte_u(x, j)); }
  static int half_s(uint32_t x, int h) { return static_cast<int16_t>((x >> (16 * h)) & 65535u); }
  static uint32_t halves(int lo, int hi) { return (static_cast<uint32_t>(lo) & 65535u) | static_cast<uint32_t>(hi) << 16; }
  // Byte by byte within each lane: byte j of lane i becomes f(i, j).
  template <class F>
  static U bytes(F f) {
    return lanes<U>([&](int i) {
      uint32_t r = 0;
      for (int j = 0; j < 4; j++) r |= (static_cast<uint32_t>(f(i, j)) & 255u) << (8 * j);
      return r;
    });
  }
  static int saturate16(int x) { return x > 32767 ? 32767 : x < -32768 ? -32768 : x; }
  static U maddubs(const U& a, const U& b) {
    auto pair = [&](int i, int k) {
      return saturate16(byte_u(a.v[i], 2 * k) * byte_s(b.v[i], 2 * k) + byte_u(a.v[i], 2 * k + 1) * byte_s(b.v[i], 2 * k + 1));
    };
    return lanes<U>([&](int i) { return halves(pair(i, 0), pair(i, 1)); });
  }
  static U add_i16(const U& a, const U& b) {
    return lanes<U>([&](int i) { return halves(half_s(a.v[i], 0) + half_s(b.v[i], 0), half_s(a.v[i], 1) + half_s(b.v[i], 1)); });
  }
  static U widen(const U& a) { return lanes<U>([&](int i) { return static_cast<uint32_t>(half_s(a.v[i], 0) + half_s(a.v[i], 1)); }); }
  static U abs8(const U& a) {
    return bytes([&](int i, int j) { return byte_s(a.v[i], j) < 0 ? -byte_s(a.v[i], j) : byte_s(a.v[i], j); });
  }
  static U sign8(const U& a, const U& b) {
    return bytes([&](int i, int j) {
      const int s = byte_s(b.v[i], j);
      return s < 0 ? -byte_s(a.v[i], j) : s == 0 ? 0 : byte_s(a.v[i], j);
    });
  }
  static V scales(const uint32_t* words, const float* table) {
    return lanes<V>([&](int i) { return table[(words[i / 8] >> (4 * (i % 8))) & 15u]; });
  }
};

#include "matmul_exl2_impl.inc"

}  // namespace

void matmul_exl2_scalar(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  matmul_exl2_impl<Scalar>(w, a, y, ldy, n0, n1);
}

}  // namespace laminate
