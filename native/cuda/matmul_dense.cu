// Dense matmul y = x W^T on the GPU, W [n, k] in F32, F16 or BF16. F16/BF16 (k a multiple
// of 16): tensor cores (mma.m16n8k16, float accumulation) for any number of rows,
// activations rounded to the weight's 16-bit type as they are loaded. F32 (or k not a
// multiple of 16): a row kernel, one warp per output column reading its weight row once
// for up to 8 rows, in float32.
// Either way a row's result does not depend on the other rows or on how many there are.
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

// Tensor cores (mma.m16n8k16, float accumulation), activations rounded to the weight's
// 16-bit type as they are loaded. A block computes a tile of 16 TM rows x 8 TN columns with
// one warp per slice of k; a warp chains its mma over its slice, 32 inputs at a time, and
// warp 0 adds the slices' partial sums in slice order. The slices depend on k alone and a
// row's sums never meet another row's, so every output is the same whatever the number of
// rows and the tile shape: few rows (decode) take small tiles, for enough blocks to stream
// the weights at full bandwidth; many rows take large ones, for reuse.
//
// Within 32 inputs at c, lane 4 g + t reads inputs c + 8 t .. c + 8 t + 7 of weight row g
// in one 16-byte load; the first mma takes the first four of them, the second the last
// four (as the k indices 2 t, 2 t + 1 and 8 + 2 t, 8 + 2 t + 1 of its fragments), and the
// activations are read at the same inputs. A last 16 inputs (k % 32 == 16) are read four
// per lane, at c + 4 t.
constexpr int kMaxSlices = 8, kSliceMin = 512;

template <bool Bf16>
LM_DEVICE uint32_t pack2(float lo, float hi) {
  const uint16_t a = Bf16 ? f2bf(lo) : f2h(lo), b = Bf16 ? f2bf(hi) : f2h(hi);
  return static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 16;
}

// One mma step: the A fragments of TM row tiles from inputs at in (in + 2 for the second
// half of k), the B fragments of TN column tiles given.
template <bool Bf16, int TM, int TN>
LM_DEVICE void mma_step(float (&acc)[TM][TN][4], const float* __restrict__ x, int m, int64_t ldx, int row0, int g,
                        int64_t in, const uint32_t (&bf)[TN][2]) {
  uint32_t af[TM][4];
#pragma unroll
  for (int mt = 0; mt < TM; mt++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int row = row0 + mt * 16 + g + (i & 1) * 8;
      const int64_t at = in + (i >> 1) * 2;
      af[mt][i] = row < m ? pack2<Bf16>(x[row * ldx + at], x[row * ldx + at + 1]) : 0u;
    }
#pragma unroll
  for (int nt = 0; nt < TN; nt++)
#pragma unroll
    for (int mt = 0; mt < TM; mt++) mma_16x8x16<Bf16>(acc[mt][nt], af[mt], bf[nt], acc[mt][nt]);
}

template <bool Bf16, int TM, int TN>
__global__ void mma_kernel(DenseWeight w, const float* __restrict__ x, int m, int64_t ldx, float* __restrict__ y,
                           int64_t ldy, const float* __restrict__ bias, int64_t slice) {
  const int lane = threadIdx.x, warp = threadIdx.y, g = lane / 4, t = lane % 4;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * 8 * TN;
  const int row0 = blockIdx.y * 16 * TM;
  const uint16_t* wt = static_cast<const uint16_t*>(w.data);
  const int64_t k0 = warp * slice, k1 = k0 + slice < w.k ? k0 + slice : w.k;
  float acc[TM][TN][4] = {};
  int64_t c = k0;
#pragma unroll 2
  for (; c + 32 <= k1; c += 32) {
    uint4 wv[TN];
#pragma unroll
    for (int nt = 0; nt < TN; nt++) {
      const int64_t n = col0 + nt * 8 + g;
      wv[nt] = {0u, 0u, 0u, 0u};
      if (n < w.n) wv[nt] = *reinterpret_cast<const uint4*>(wt + n * w.k + c + 8 * t);
    }
    uint32_t bf[TN][2];
#pragma unroll
    for (int nt = 0; nt < TN; nt++) bf[nt][0] = wv[nt].x, bf[nt][1] = wv[nt].y;
    mma_step<Bf16>(acc, x, m, ldx, row0, g, c + 8 * t, bf);
#pragma unroll
    for (int nt = 0; nt < TN; nt++) bf[nt][0] = wv[nt].z, bf[nt][1] = wv[nt].w;
    mma_step<Bf16>(acc, x, m, ldx, row0, g, c + 8 * t + 4, bf);
  }
  if (c < k1) {  // the last 16 inputs
    uint32_t bf[TN][2];
#pragma unroll
    for (int nt = 0; nt < TN; nt++) {
      const int64_t n = col0 + nt * 8 + g;
      bf[nt][0] = bf[nt][1] = 0u;
      if (n < w.n) {
        const uint32_t* p = reinterpret_cast<const uint32_t*>(wt + n * w.k + c + 4 * t);
        bf[nt][0] = p[0], bf[nt][1] = p[1];
      }
    }
    mma_step<Bf16>(acc, x, m, ldx, row0, g, c + 4 * t, bf);
  }
  // The slices' partial sums, added in slice order by warp 0.
  constexpr int kAcc = TM * TN * 4;
  __shared__ float partial[kMaxSlices - 1][kAcc][32];
  if (blockDim.y > 1) {
    if (warp > 0)
#pragma unroll
      for (int mt = 0; mt < TM; mt++)
#pragma unroll
        for (int nt = 0; nt < TN; nt++)
#pragma unroll
          for (int i = 0; i < 4; i++) partial[warp - 1][(mt * TN + nt) * 4 + i][lane] = acc[mt][nt][i];
    __syncthreads();
    if (warp > 0) return;
    for (int s = 1; s < static_cast<int>(blockDim.y); s++)
#pragma unroll
      for (int mt = 0; mt < TM; mt++)
#pragma unroll
        for (int nt = 0; nt < TN; nt++)
#pragma unroll
          for (int i = 0; i < 4; i++) acc[mt][nt][i] += partial[s - 1][(mt * TN + nt) * 4 + i][lane];
  }
#pragma unroll
  for (int mt = 0; mt < TM; mt++)
#pragma unroll
    for (int nt = 0; nt < TN; nt++) store_mma_tile(acc[mt][nt], lane, row0 + mt * 16, col0 + nt * 8, m, w.n, y, ldy, bias);
}

template <bool Bf16, int TM, int TN>
void launch_mma(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy, const float* bias,
                cudaStream_t s) {
  // Slices of k: a multiple of 32 inputs each, at least kSliceMin, at most kMaxSlices of them.
  int64_t slices = w.k / kSliceMin;
  slices = slices < 1 ? 1 : slices > kMaxSlices ? kMaxSlices : slices;
  const int64_t slice = ((w.k + slices - 1) / slices + 31) / 32 * 32;
  slices = (w.k + slice - 1) / slice;
  const dim3 grid(static_cast<unsigned>((w.n + 8 * TN - 1) / (8 * TN)), static_cast<unsigned>((m + 16 * TM - 1) / (16 * TM)));
  auto kernel = mma_kernel<Bf16, TM, TN>;
  LM_LAUNCH(kernel, grid, dim3(32, static_cast<unsigned>(slices)), s)(w, x, m, ldx, y, ldy, bias, slice);
}

template <bool Bf16>
void mma(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy, const float* bias, cudaStream_t s) {
  if (m <= 16) launch_mma<Bf16, 1, 1>(w, x, m, ldx, y, ldy, bias, s);
  else launch_mma<Bf16, 2, 4>(w, x, m, ldx, y, ldy, bias, s);
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
    if (w.dtype == DType::BF16) mma<true>(w, x, m, ldx, y, ldy, bias, s);
    else mma<false>(w, x, m, ldx, y, ldy, bias, s);
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
  // One kernel per weight whatever the number of rows, so that a row's result does not
  // depend on the batch: tensor cores for F16/BF16 (k a multiple of 16), else the row kernel.
  dense_matmul_kernel(w, x, m, ldx, y, ldy, bias, true, s);
}

}  // namespace laminate::gpu
