// Element types of stored tensors and their scalar conversions to float32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace laminate {

// Floating-point storage types; I32 and I16 only describe raw integer tensors (EXL2 codes,
// permutations, group tables) and are never converted to float.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I16 = 4 };

inline size_t dtype_size(DType t) { return t == DType::F32 || t == DType::I32 ? 4 : 2; }

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
  }
  return "?";
}

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// IEEE binary16 to binary32, exact for every input (subnormals, infinities, NaN).
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    // subnormal: normalise the mantissa
    int e = -1;
    do {
      e++;
      man <<= 1;
    } while ((man & 0x400) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((man & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float load_as_f32(const void* base, DType t, size_t index) {
  switch (t) {
    case DType::F32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(base) + index * 4, 4);
      return f;
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(base) + index * 2, 2);
      return f16_to_f32(h);
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(base) + index * 2, 2);
      return bf16_to_f32(h);
    }
    case DType::I32:
    case DType::I16: break;
  }
  return 0.0f;
}

// Rounding float32 to the 16-bit types, to nearest even (subnormals kept).
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

// x rounded to the nearest fp16 value, as a float.
inline float round_to_f16(float x) { return f16_to_f32(f32_to_f16_bits(x)); }


}  // namespace laminate
