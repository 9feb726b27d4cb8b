// Storage-dtype rounding as PyTorch does it for merges: float32 math, one rounding to the
// storage dtype (round to nearest even) after each operation.
#pragma once
#include <cstdint>
#include <cstring>

#include "../core/dtype.h"

namespace laminate {

// x rounded to dtype t (returned as float32).
inline float round_to(DType t, float x) {
  switch (t) {
    case DType::F32: return x;
    case DType::BF16: return bf16_to_f32(f32_to_bf16_bits(x));
    case DType::F16: return f16_to_f32(f32_to_f16_bits(x));
    case DType::I32:
    case DType::I16: break;
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
    case DType::I32:
    case DType::I16: break;
  }
}

}  // namespace laminate
