// A CUDA simulator for the kernels of this folder (included by compat.h when built with
// LAMINATE_CUDA_SIM): a launch runs its blocks one after another, and the threads of a
// block as fibers on the calling thread. A fiber runs until it reaches a block barrier
// (__syncthreads) or a warp collective (shuffle, __syncwarp, mma), and is resumed once
// every live thread of its block (or warp) has arrived there. Threads between two barriers
// run in a different order on alternate rounds, so that a missing barrier tends to show.
// A barrier that some threads never reach is reported as an error, not a hang.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>

#include "../core/dtype.h"

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = struct SimStream*;

namespace laminate::sim {

struct ThreadIndex {
  dim3 thread, block, block_dim, grid_dim;
};
// The thread the simulator runs now (one simulator per OS thread).
extern thread_local ThreadIndex* current;

void block_barrier();
// Warp collective: every live lane of the calling warp stores `bytes` from `mine` at its lane
// slot; once all have, `read` sees all 32 slots (slot = lane * bytes); then all continue.
void warp_exchange(const void* mine, int bytes, const std::function<void(const unsigned char* all)>& read);

// Runs kernel body `body` over grid x block threads, or records it when `stream` is capturing.
void launch(dim3 grid, dim3 block, cudaStream_t stream, std::function<void()> body);

// Whether p is null or points into an allocation of simulated device memory (runtime.cu).
bool in_device_memory(const void* p);
[[noreturn]] void host_pointer_argument(const char* kernel, int index);

// A GPU faults on a host pointer that a kernel dereferences; the simulator, whose device
// memory is host memory, would not. So every launch checks its arguments: raw pointers, and
// the pointers of argument structs that declare them with an overload of
// device_pointers(const S&, const std::function<void(const void*)>&) (see kernels.h).
template <class T, class = void>
struct DeclaresPointers : std::false_type {};
template <class T>
struct DeclaresPointers<T, std::void_t<decltype(device_pointers(std::declval<const T&>(),
                                                                std::declval<const std::function<void(const void*)>&>()))>>
    : std::true_type {};

template <class T>
void check_argument(const char* kernel, int index, const T& v) {
  if constexpr (std::is_pointer_v<T>) {
    if (!in_device_memory(v)) host_pointer_argument(kernel, index);
  } else if constexpr (DeclaresPointers<T>::value) {
    device_pointers(v, [&](const void* p) {
      if (!in_device_memory(p)) host_pointer_argument(kernel, index);
    });
  }
}

}  // namespace laminate::sim

#define __global__
#define __launch_bounds__(...)
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static thread_local
#define LM_DEVICE inline
#define LM_HOST_DEVICE
#define threadIdx (::laminate::sim::current->thread)
#define blockIdx (::laminate::sim::current->block)
#define blockDim (::laminate::sim::current->block_dim)
#define gridDim (::laminate::sim::current->grid_dim)

inline void __syncthreads() { ::laminate::sim::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) {
  ::laminate::sim::warp_exchange(nullptr, 0, [](const unsigned char*) {});
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
  T out;
  ::laminate::sim::warp_exchange(&v, sizeof(T), [&](const unsigned char* all) { std::memcpy(&out, all + (src & 31) * sizeof(T), sizeof(T)); });
  return out;
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
  const int lane = static_cast<int>((threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31);
  return __shfl_sync(0xffffffffu, v, lane ^ mask);
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <class T>
inline T atomicAdd(T* p, T v) {  // fibers never interleave between barriers
  T old = *p;
  *p = old + v;
  return old;
}

#define LM_LAUNCH(kernel, grid, block, stream) \
  ::laminate::sim::launcher(#kernel, (grid), (block), (stream), [&](auto... args) { return [=]() { kernel(args...); }; })

namespace laminate::sim {
template <class Bind>
struct Launcher {
  const char* name;
  dim3 grid, block;
  cudaStream_t stream;
  Bind bind;
  template <class... A>
  void operator()(A... args) const {
    int index = 0;
    (check_argument(name, index++, args), ...);
    launch(grid, block, stream, bind(args...));
  }
};
template <class Bind>
Launcher<Bind> launcher(const char* name, dim3 grid, dim3 block, cudaStream_t stream, Bind bind) {
  return {name, grid, block, stream, bind};
}
}  // namespace laminate::sim

namespace laminate::gpu {
inline float h2f(uint16_t h) { return f16_to_f32(h); }
inline uint16_t f2h(float f) { return f32_to_f16_bits(f); }
inline float bf2f(uint16_t h) { return bf16_to_f32(h); }
inline float fast_exp(float x) { return std::exp(x); }
inline int dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; i++) c += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  return c;
}
void mma_s8_16x8x32(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4]);
void mma_f16_16x8x16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16);
template <bool Bf16>
inline void mma_16x8x16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  mma_f16_16x8x16(d, a, b, c, Bf16);
}
}  // namespace laminate::gpu




using std::isfinite;
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __uint_as_float(unsigned i) { return __int_as_float(static_cast<int>(i)); }
inline unsigned __float_as_uint(float f) { return static_cast<unsigned>(__float_as_int(f)); }
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
using std::isnan;
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
