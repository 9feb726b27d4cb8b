// Dense matmul y = x W^T on the GPU, W [n, k] in F32, F16 or BF16. Few rows (decode): one
// warp per output column reads its weight row once for all rows. Many rows, F16/BF16:
// tensor cores (mma.m16n8k16, float accumulation), activations rounded to the weight's
// 16-bit type as they are loaded.
#include "kernels.h"
#include "runtime.h"

namespace laminate::gpu {

namespace {

LM_DEVICE uint16_t f2bf(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN stays NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <int DT>  // 0: F32, 1: F16, 2: BF16
LM_DEVICE float load_weight(const void* __restrict__ w, int64_t i) {
  if (DT == 0) return static_cast<const float*>(w)[i];
  const uint16_t h = static_cast<const uint16_t*>(w)[i];
  return DT == 1 ? h2f(h) : bf2f(h);
}

// Eight consecutive weights from a 16-byte aligned address.
template <int DT>
LM_DEVICE void load_weight8(const void* __restrict__ w, int64_t i, float out[8]) {
  if (DT == 0) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(w) + i);
    const float4 a = p[0], b = p[1];
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  } else {
    const uint4 v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w) + i);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const uint16_t lo = static_cast<uint16_t>(words[j]), hi = static_cast<uint16_t>(words[j] >> 16);
      out[2 * j] = DT == 1 ? h2f(lo) : bf2f(lo);
      out[2 * j + 1] = DT == 1 ? h2f(hi) : bf2f(hi);
    }
  }
}

constexpr int kRowWarps = 8;

template <int DT, int M>
__global__ void rows_kernel(DenseWeight w, const float* __restrict__ x, int64_t ldx, float* __restrict__ y,
                            int64_t ldy, const float* __restrict__ bias, bool vec) {
  const int lane = threadIdx.x;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.y;
  if (n >= w.n) return;
  const int64_t k = w.k, base = n * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; r++) acc[r] = 0.0f;
  if (vec) {
    // k % 8 == 0: lane l takes the 8-element chunks l, l + 32, ..., which cover the row
    for (int64_t i = lane * 8; i + 8 <= k; i += 256) {
      float wv[8];
      load_weight8<DT>(w.data, base + i, wv);
#pragma unroll
      for (int r = 0; r < M; r++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[r] += wv[j] * x[r * ldx + i + j];
    }
  } else {
    for (int64_t i = lane; i < k; i += 32) {
      const float wv = load_weight<DT>(w.data, base + i);
#pragma unroll
      for (int r = 0; r < M; r++) acc[r] += wv * x[r * ldx + i];
    }
  }
#pragma unroll
  for (int r = 0; r < M; r++) {
    const float total = warp_sum(acc[r]);
    if (lane == 0) y[r * ldy + n] = total + (bias ? bias[n] : 0.0f);
  }
}

// Tensor cores: a warp computes 32 rows x 32 columns (2 x 4 tiles of 16 x 8), k in steps of 16.
constexpr int kTilesM = 2, kTilesN = 4, kMmaWarps = 4;

template <bool Bf16>
LM_DEVICE uint32_t pack2(float lo, float hi) {
  const uint16_t a = Bf16 ? f2bf(lo) : f2h(lo), b = Bf16 ? f2bf(hi) : f2h(hi);
  return static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 16;
}

template <bool Bf16>
__global__ void mma_kernel(DenseWeight w, const float* __restrict__ x, int m, int64_t ldx, float* __restrict__ y,
                           int64_t ldy, const float* __restrict__ bias) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kMmaWarps + threadIdx.y) * 8 * kTilesN;
  if (col0 >= w.n) return;
  const int row0 = blockIdx.y * 16 * kTilesM;
  const uint16_t* wt = static_cast<const uint16_t*>(w.data);
  float acc[kTilesM][kTilesN][4] = {};
  for (int64_t k0 = 0; k0 < w.k; k0 += 16) {
    uint32_t af[kTilesM][4];
#pragma unroll
    for (int mt = 0; mt < kTilesM; mt++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int row = row0 + mt * 16 + g + (i & 1) * 8;
        const int64_t col = k0 + 2 * t + (i >> 1) * 8;
        af[mt][i] = row < m ? pack2<Bf16>(x[row * ldx + col], x[row * ldx + col + 1]) : 0u;
      }
#pragma unroll
    for (int nt = 0; nt < kTilesN; nt++) {
      const int64_t n = col0 + nt * 8 + g;
      uint32_t bf[2] = {0u, 0u};
      if (n < w.n) {
        bf[0] = *reinterpret_cast<const uint32_t*>(wt + n * w.k + k0 + 2 * t);
        bf[1] = *reinterpret_cast<const uint32_t*>(wt + n * w.k + k0 + 8 + 2 * t);
      }
#pragma unroll
      for (int mt = 0; mt < kTilesM; mt++) mma_16x8x16<Bf16>(acc[mt][nt], af[mt], bf, acc[mt][nt]);
    }
  }
#pragma unroll
  for (int mt = 0; mt < kTilesM; mt++)
#pragma unroll
    for (int nt = 0; nt < kTilesN; nt++) store_mma_tile(acc[mt][nt], lane, row0 + mt * 16, col0 + nt * 8, m, w.n, y, ldy, bias);
}

template <int DT, int M>
void launch_rows(const DenseWeight& w, const float* x, int64_t ldx, float* y, int64_t ldy, const float* bias, cudaStream_t s) {
  auto kernel = rows_kernel<DT, M>;
  LM_LAUNCH(kernel, static_cast<unsigned>((w.n + kRowWarps - 1) / kRowWarps), dim3(32, kRowWarps), s)(
      w, x, ldx, y, ldy, bias, w.k % 8 == 0);
}

template <int DT>
void rows(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy, const float* bias, cudaStream_t s) {
  for (int r0 = 0; r0 < m; r0 += 8) {
    const int n = m - r0 < 8 ? m - r0 : 8;
    const float* xr = x + r0 * ldx;
    float* yr = y + r0 * ldy;
    with_rows(n, [&](auto M) { launch_rows<DT, decltype(M)::value>(w, xr, ldx, yr, ldy, bias, s); });
  }
}

}  // namespace

void dense_matmul_kernel(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                         const float* bias, bool tensor_cores, cudaStream_t s) {
  if (tensor_cores && w.dtype != DType::F32 && w.k % 16 == 0) {
    const unsigned blocks = static_cast<unsigned>((w.n + 8 * kTilesN * kMmaWarps - 1) / (8 * kTilesN * kMmaWarps));
    const unsigned row_tiles = static_cast<unsigned>((m + 16 * kTilesM - 1) / (16 * kTilesM));
    if (w.dtype == DType::BF16) LM_LAUNCH(mma_kernel<true>, dim3(blocks, row_tiles), dim3(32, kMmaWarps), s)(w, x, m, ldx, y, ldy, bias);
    else LM_LAUNCH(mma_kernel<false>, dim3(blocks, row_tiles), dim3(32, kMmaWarps), s)(w, x, m, ldx, y, ldy, bias);
  } else if (w.dtype == DType::F32) {
    rows<0>(w, x, m, ldx, y, ldy, bias, s);
  } else if (w.dtype == DType::F16) {
    rows<1>(w, x, m, ldx, y, ldy, bias, s);
  } else {
    rows<2>(w, x, m, ldx, y, ldy, bias, s);
  }
  check_launch("dense matmul");
}

void dense_matmul(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy, const float* bias,
                  cudaStream_t s) {
  dense_matmul_kernel(w, x, m, ldx, y, ldy, bias, m > 8, s);
}

}  // namespace laminate::gpu
