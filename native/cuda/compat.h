// What the kernels in this folder use of CUDA, in one place, so that the same source
// builds two ways:
//  - with nvcc: the real thing (cuda_runtime.h, intrinsics, inline PTX);
//  - with a C++ compiler and LAMINATE_CUDA_SIM: a simulator (sim.h) that runs every thread
//    of a block as a fiber, with __syncthreads, warp shuffles and the int8 tensor-core
//    instruction done as CUDA defines them. Tests run the kernels, and the whole CUDA
//    engine, through it on machines without a GPU.
// Kernels write fp16/bf16 as uint16_t bits and convert with the helpers below; they launch
// with LM_LAUNCH(kernel, grid, block, stream)(arguments...).
#pragma once
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define LM_DEVICE __device__ __forceinline__
#define LM_HOST_DEVICE __host__ __device__
#define LM_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, (stream)>>>

namespace laminate::gpu {
LM_DEVICE float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
LM_DEVICE uint16_t f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
LM_DEVICE float bf2f(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
LM_DEVICE float fast_exp(float x) { return __expf(x); }
LM_DEVICE int dp4a(int a, int b, int c) { return __dp4a(a, b, c); }

// D = A B + C for one warp, A 16x32 s8 (row), B 32x8 s8 (column), C and D 16x8 s32, in
// the fragment layout of PTX mma.m16n8k32 (see sim.cc for the element of each register).
LM_DEVICE void mma_s8_16x8x32(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
  __trap();
#endif
}

// D = A B + C for one warp, A 16x16 f16 or bf16 (row), B 16x8 (column), C and D 16x8 f32
// (PTX mma.m16n8k16).
template <bool Bf16>
LM_DEVICE void mma_16x8x16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if __CUDA_ARCH__ >= 800
  if constexpr (Bf16)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
  __trap();
#endif
}
}  // namespace laminate::gpu

#elif defined(LAMINATE_CUDA_SIM)
#include "sim.h"
#else
#error "native/cuda is built with nvcc, or with LAMINATE_CUDA_SIM"
#endif

namespace laminate::gpu {

// Stores a 16 x 8 tile of mma accumulators, plus bias, at rows row0.. and columns col0.. of
// y, inside m rows and n columns. The C/D fragment layout: element i of lane 4 group + t is
// row group (+8 for i >= 2), column 2 t + (i & 1).
LM_DEVICE void store_mma_tile(const float c[4], int lane, int row0, int64_t col0, int m, int64_t n, float* y, int64_t ldy,
                              const float* bias) {
  for (int i = 0; i < 4; i++) {
    const int row = row0 + lane / 4 + (i >> 1) * 8;
    const int64_t col = col0 + 2 * (lane % 4) + (i & 1);
    if (row < m && col < n) y[row * ldy + col] = c[i] + (bias ? bias[col] : 0.0f);
  }
}

// Calls f(std::integral_constant<int, M>()) for M = rows, 1 to 8: the row count that the
// few-row (decode) kernels take as a template argument.
template <class F>
void with_rows(int rows, F&& f) {
  switch (rows) {
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    case 4: f(std::integral_constant<int, 4>()); break;
    case 5: f(std::integral_constant<int, 5>()); break;
    case 6: f(std::integral_constant<int, 6>()); break;
    case 7: f(std::integral_constant<int, 7>()); break;
    default: f(std::integral_constant<int, 8>()); break;
  }
}

#if defined(LAMINATE_CUDA_SIM)
// The same butterfly as below, lane by lane, from one exchange (far fewer fiber switches).
template <class T, class Op>
inline T warp_butterfly(T v, Op op) {
  T out = v;
  const int lane = static_cast<int>((threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31);
  sim::warp_exchange(&v, sizeof(T), [&](const unsigned char* all) {
    T vals[32], next[32];
    std::memcpy(vals, all, sizeof vals);
    for (int o = 16; o > 0; o >>= 1) {
      for (int i = 0; i < 32; i++) next[i] = op(vals[i], vals[i ^ o]);
      std::memcpy(vals, next, sizeof vals);
    }
    out = vals[lane];
  });
  return out;
}
inline float warp_sum(float v) { return warp_butterfly(v, [](float a, float b) { return a + b; }); }
inline int warp_sum(int v) { return warp_butterfly(v, [](int a, int b) { return a + b; }); }
inline float warp_max(float v) { return warp_butterfly(v, [](float a, float b) { return fmaxf(a, b); }); }
#else
LM_DEVICE float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
LM_DEVICE int warp_sum(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
LM_DEVICE float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
#endif
}  // namespace laminate::gpu
