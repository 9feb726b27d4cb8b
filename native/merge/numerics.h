// Storage-dtype rounding as PyTorch does it for merges: float32 math, one rounding to the
// storage dtype (round to nearest even) after each operation.
#pragma once
#include <cstdint>
#include <cstring>

#include "../core/dtype.h"

namespace laminate {

inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow (rounds to inf)
  if (abs < 0x38800000u) {
    // subnormal or zero: value = abs * 2^24 rounded to an integer (ties to even)
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
    const uint32_t exp = abs >> 23;
    const uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    // man is 24 bits with value man * 2^(exp-150); in units of 2^-24: man * 2^(exp-126)
    const int s = 126 - static_cast<int>(exp);  // right shift to units of 2^-24
    const uint32_t whole = man >> s;
    const uint32_t rem = man & ((1u << s) - 1);
    const uint32_t half = 1u << (s - 1);
    uint32_t r = whole + ((rem > half || (rem == half && (whole & 1))) ? 1 : 0);
    return static_cast<uint16_t>(sign | r);
  }
  // normal: rebias exponent and round the mantissa to 10 bits
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return static_cast<uint16_t>(sign | h);
}

// x rounded to dtype t (returned as float32).
inline float round_to(DType t, float x) {
  switch (t) {
    case DType::F32: return x;
    case DType::BF16: return bf16_to_f32(f32_to_bf16_bits(x));
    case DType::F16: return f16_to_f32(f32_to_f16_bits(x));
  }
  return x;
}

inline void store_as(DType t, float x, uint8_t* out, size_t i) {
  switch (t) {
    case DType::F32: std::memcpy(out + i * 4, &x, 4); break;
    case DType::BF16: {
      uint16_t h = f32_to_bf16_bits(x);
      std::memcpy(out + i * 2, &h, 2);
      break;
    }
    case DType::F16: {
      uint16_t h = f32_to_f16_bits(x);
      std::memcpy(out + i * 2, &h, 2);
      break;
    }
  }
}

}  // namespace laminate
