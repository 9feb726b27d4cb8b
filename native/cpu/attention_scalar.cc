// Portable attention: plain C++ over sixteen-float arrays (the compiler may use the
// baseline vector instructions of the target).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/dtype.h"
#include "attention.h"

namespace laminate {
namespace {

struct Scalar {
  struct B {
    float v[16];
  };
  template <class F>
  static B map(F f) {
    B r;
    for (int i = 0; i < 16; i++) r.v[i] = f(i);
    return r;
  }
  static B zero() { return map([](int) { return 0.0f; }); }
  static B set1(float x) { return map([x](int) { return x; }); }
  static B load(const float* p) { return map([p](int i) { return p[i]; }); }
  static void store(float* p, const B& v) { std::memcpy(p, v.v, sizeof(v.v)); }
  static float scalar(uint16_t h) { return f16_to_f32(h); }
  static float scalar(int8_t q) { return q; }
  static B load_e(const uint16_t* p) { return map([p](int i) { return f16_to_f32(p[i]); }); }
  static B load_e(const int8_t* p) { return map([p](int i) { return static_cast<float>(p[i]); }); }
  static B mul(const B& a, const B& b) { return map([&](int i) { return a.v[i] * b.v[i]; }); }
  static B add(const B& a, const B& b) { return map([&](int i) { return a.v[i] + b.v[i]; }); }
  static B sub(const B& a, const B& b) { return map([&](int i) { return a.v[i] - b.v[i]; }); }
  static B fmadd(const B& a, const B& b, const B& c) { return map([&](int i) { return a.v[i] * b.v[i] + c.v[i]; }); }
  static float hmax(const B& v) {
    float m = v.v[0];
    for (int i = 1; i < 16; i++) m = v.v[i] > m ? v.v[i] : m;
    return m;
  }
  static float hsum(const B& v) {
    float s[8];
    for (int i = 0; i < 8; i++) s[i] = v.v[i] + v.v[i + 8];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  }
  // e^x as in attention_avx512.cc.
  static float exp1(float x) {
    if (!(x >= -87.3365f)) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    const float n = std::nearbyint(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + (r + 1.0f);
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    return y * scale;
  }
  static B exp(const B& x) { return map([&](int i) { return exp1(x.v[i]); }); }
};

#include "attention_impl.inc"

}  // namespace

void attention_scalar(const AttentionJob& job) { attend_any<Scalar>(job); }

}  // namespace laminate
