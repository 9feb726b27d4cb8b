// Portable dense matmul: plain C++ over small fixed-size arrays (the compiler may use
// the baseline vector instructions of the target).
#include <cstdint>
#include <cstring>

#include "matmul_dense.h"

namespace laminate {
namespace {

struct Scalar {
  static constexpr int W = 8;
  static constexpr int kRows = 4;
  static constexpr int kCols = 3;
  struct V {
    float v[W];
  };
  static V zero() {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = 0.0f;
    return r;
  }
  static V load_f32(const float* p) {
    V r;
    for (int i = 0; i < W; i++) std::memcpy(&r.v[i], p + i, 4);
    return r;
  }
  // The scalar conversion of core/dtype.h: this file is built with the baseline flags.
  static float f16_scalar(uint16_t h) { return f16_to_f32(h); }
  static V load_f16(const uint16_t* p) {
    V r;
    for (int i = 0; i < W; i++) {
      uint16_t h;
      std::memcpy(&h, p + i, 2);
      r.v[i] = f16_scalar(h);
    }
    return r;
  }
  static V load_bf16(const uint16_t* p) {
    V r;
    for (int i = 0; i < W; i++) {
      uint16_t h;
      std::memcpy(&h, p + i, 2);
      uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(&r.v[i], &bits, 4);
    }
    return r;
  }
  static V fmadd(const V& a, const V& b, const V& c) {
    V r;
    for (int i = 0; i < W; i++) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static float sum(const V& a) {
    float s = 0.0f;
    for (int i = 0; i < W; i++) s += a.v[i];
    return s;
  }
};

#include "matmul_dense_impl.inc"

}  // namespace

void matmul_dense_scalar(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  matmul_dispatch<Scalar>(w, x, m, ldx, y, ldy, n0, n1);
}

}  // namespace laminate
