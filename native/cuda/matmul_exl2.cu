// EXL2 matmul on the GPU, from the packed codes. Activations are permuted and rounded to
// int8 once per call (one scale per segment of at most 32 stored rows, as on the CPU); the
// codes stay in the quad layout the CPU uses (four rows of one column per 32-bit word), so
// each word is four int8 operands of dp4a or of the int8 tensor-core instruction. The
// integer sums are the CPU kernels' exactly; only the float epilogue differs in rounding.
#include "kernels.h"
#include "runtime.h"

namespace laminate::gpu {

namespace {

// Quad P (rows 4P .. 4P + 3) of one column of a segment of width B, as four int8 operands;
// word(i) is that column's word at the segment's qrow i. See Exl2View for the layout. Codes
// of 2..6 bits are below 128 and are used as they are (the zero point comes out later as
// z * sum(x)); 8-bit codes become q - 128.
template <int B, class Word>
LM_DEVICE uint32_t exl2_operand(Word word, int P) {
  constexpr int quads_per_chunk = exl2_chunk_rows(B) / 4, wpc = exl2_chunk_words(B);
  constexpr int slots = exl2_quad_slots(B), spare = exl2_quad_spare(B), main = wpc * slots;
  constexpr uint32_t mask = 0x01010101u * ((1u << B) - 1u);
  const int p = P % quads_per_chunk, chunk = (P / quads_per_chunk) * wpc;
  uint32_t q = 0;
  if (p < main) {
    q = (word(chunk + p / slots) >> ((p % slots) * B)) & mask;
  } else if constexpr (spare > 0) {
    const int j = p - main;
#pragma unroll
    for (int i = 0; i < B; i++) {
      const int t = j * B + i;
      q |= ((word(chunk + t / spare) >> (slots * B + t % spare)) & 0x01010101u) << i;
    }
  }
  return B == 8 ? q ^ 0x80808080u : q;
}

LM_DEVICE float column_scale(const Exl2Weight& w, const Exl2Group& s, int64_t n) {
  const uint32_t code = (w.q_scale[static_cast<int64_t>(s.group) * (w.np / 8) + n / 8] >> (4 * (n % 8))) & 15u;
  return w.scale_table[s.group * 16 + code];
}

LM_DEVICE int zero_point(int bits) { return bits == 8 ? 0 : 1 << (bits - 1); }

__global__ void quantize_kernel(Exl2Weight w, const float* __restrict__ x, int m, int64_t ldx, Exl2Activations a) {
  // one warp per (segment, row); lane j holds stored row j of the segment
  const int si = blockIdx.x * blockDim.y + threadIdx.y, r = blockIdx.y, lane = threadIdx.x;
  if (si >= w.segment_count) return;
  const Exl2Group s = w.segments[si];
  const bool mine = lane < s.rows;
  const float v = mine ? x[r * ldx + w.perm[s.row_start + lane]] : 0.0f;
  const float amax = warp_max(fabsf(v));
  const bool finite = warp_sum(mine && !isfinite(v) ? 1 : 0) == 0;
  int q = 0;
  float d = amax / 127.0f;
  if (!finite) d = __int_as_float(0x7fc00000);
  else if (mine && amax > 0.0f) q = static_cast<int>(rintf(v * (127.0f / amax)));
  if (mine) a.q[r * a.ldq + s.row_start + lane] = static_cast<int8_t>(q);
  const int total = warp_sum(q);
  if (lane == 0) {
    a.scale[static_cast<int64_t>(r) * w.segment_count + si] = d;
    a.sum[static_cast<int64_t>(r) * w.segment_count + si] = total;
  }
}

// Decode: a block of 16 warps per 32 output columns (lane = column); the warps share the
// segments, two at a time (their words loaded before either is decoded, so that more loads
// are in flight), and add their partial sums at the end. M rows of activations at once.
constexpr int kGemvWarps = 16;
constexpr int kSegmentWords = 8;  // at most 32 rows of 8 bits

// The words of a segment's column (qrows * 32 apart in the repacked layout, lane = column).
LM_DEVICE void load_segment(const uint32_t* __restrict__ column, const Exl2Group& s, uint32_t words[kSegmentWords]) {
  const uint32_t* at = column + static_cast<int64_t>(s.qrow_start) * 32;
  const int count = s.rows * s.bits / 32;
#pragma unroll
  for (int i = 0; i < kSegmentWords; i++) words[i] = i < count ? at[i * 32] : 0u;
}

template <int B, int M>
LM_DEVICE void gemv_segment(const uint32_t words[kSegmentWords], const Exl2Group& s, const int8_t* __restrict__ xq,
                            int64_t ldq, int acc[M]) {
  auto word = [&](int i) { return words[i]; };
#pragma unroll
  for (int P = 0; P < 8; P++) {
    if (4 * P >= s.rows) break;
    const int q = static_cast<int>(exl2_operand<B>(word, P));
#pragma unroll
    for (int r = 0; r < M; r++)
      acc[r] = dp4a(q, *reinterpret_cast<const int*>(xq + r * ldq + s.row_start + 4 * P), acc[r]);
  }
}

// Adds segment si (its words in registers) to out.
template <int M>
LM_DEVICE void gemv_add(const Exl2Weight& w, const Exl2Activations& a, int si, const Exl2Group& s,
                        const uint32_t words[kSegmentWords], int64_t n, float out[M]) {
  int acc[M];
#pragma unroll
  for (int r = 0; r < M; r++) acc[r] = 0;
  switch (s.bits) {
    case 8: gemv_segment<8, M>(words, s, a.q, a.ldq, acc); break;
    case 6: gemv_segment<6, M>(words, s, a.q, a.ldq, acc); break;
    case 5: gemv_segment<5, M>(words, s, a.q, a.ldq, acc); break;
    case 4: gemv_segment<4, M>(words, s, a.q, a.ldq, acc); break;
    case 3: gemv_segment<3, M>(words, s, a.q, a.ldq, acc); break;
    default: gemv_segment<2, M>(words, s, a.q, a.ldq, acc); break;
  }
  const float cs = column_scale(w, s, n);
  const int z = zero_point(s.bits);
#pragma unroll
  for (int r = 0; r < M; r++) {
    const int64_t at = static_cast<int64_t>(r) * w.segment_count + si;
    out[r] += a.scale[at] * cs * static_cast<float>(acc[r] - z * a.sum[at]);
  }
}

template <int M>
__global__ void __launch_bounds__(32 * kGemvWarps) gemv_kernel(Exl2Weight w, Exl2Activations a, float* __restrict__ y, int64_t ldy,
                            const float* __restrict__ bias) {
  const int lane = threadIdx.x, warp = threadIdx.y;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  const uint32_t* base = w.q_weight + static_cast<int64_t>(blockIdx.x) * 32 * w.qrows + lane;
  float out[M];
#pragma unroll
  for (int r = 0; r < M; r++) out[r] = 0.0f;
  for (int s0 = warp; s0 < w.segment_count; s0 += 2 * kGemvWarps) {
    const int s1 = s0 + kGemvWarps;
    const bool two = s1 < w.segment_count;
    const Exl2Group g0 = w.segments[s0], g1 = w.segments[two ? s1 : s0];
    uint32_t w0[kSegmentWords], w1[kSegmentWords];
    load_segment(base, g0, w0);
    if (two) load_segment(base, g1, w1);
    gemv_add<M>(w, a, s0, g0, w0, n, out);
    if (two) gemv_add<M>(w, a, s1, g1, w1, n, out);
  }
  __shared__ float part[kGemvWarps][M][32];
#pragma unroll
  for (int r = 0; r < M; r++) part[warp][r][lane] = out[r];
  __syncthreads();
  if (warp != 0 || n >= w.n) return;
  for (int r = 0; r < M; r++) {
    float total = 0.0f;
    for (int i = 0; i < kGemvWarps; i++) total += part[i][r][lane];
    y[r * ldy + n] = total + (bias ? bias[n] : 0.0f);
  }
}

// Prefill: int8 tensor cores. A warp computes 64 rows x 32 columns (4 x 4 tiles of
// mma.m16n8k32, k = one segment of 32 stored rows, zero past a shorter segment's end).
// A fragments are four activations of one row (one word of xq); B fragments are one quad
// of codes, exactly as the quad layout stores them.
constexpr int kMmaTilesM = 4, kMmaTilesN = 4, kMmaWarps = 4;

template <int B>
LM_DEVICE void mma_codes(const uint32_t* __restrict__ block_words, const Exl2Group& s, int g, int t,
                         uint32_t b[kMmaTilesN][2]) {
#pragma unroll
  for (int nt = 0; nt < kMmaTilesN; nt++) {
    const uint32_t* col = block_words + nt * 8 + g;
    auto word = [&](int i) { return col[i * 32]; };
    b[nt][0] = 4 * t < s.rows ? exl2_operand<B>(word, t) : 0u;
    b[nt][1] = 16 + 4 * t < s.rows ? exl2_operand<B>(word, 4 + t) : 0u;
  }
}

__global__ void mma_kernel(Exl2Weight w, Exl2Activations a, int m, float* __restrict__ y, int64_t ldy,
                           const float* __restrict__ bias) {
  const int lane = threadIdx.x, warp = threadIdx.y, g = lane / 4, t = lane % 4;
  const int64_t block = static_cast<int64_t>(blockIdx.x) * kMmaWarps + warp;  // 32-column block
  if (block * 32 >= w.np) return;
  const int row0 = blockIdx.y * 16 * kMmaTilesM;
  const uint32_t* words = w.q_weight + block * 32 * w.qrows;
  float out[kMmaTilesM][kMmaTilesN][4] = {};
  for (int si = 0; si < w.segment_count; si++) {
    const Exl2Group s = w.segments[si];
    uint32_t af[kMmaTilesM][4];
#pragma unroll
    for (int mt = 0; mt < kMmaTilesM; mt++)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int row = row0 + mt * 16 + g + (i & 1) * 8, col = 4 * t + (i >> 1) * 16;
        af[mt][i] = row < m && col < s.rows ? *reinterpret_cast<const uint32_t*>(a.q + row * a.ldq + s.row_start + col) : 0u;
      }
    uint32_t bf[kMmaTilesN][2];
    const uint32_t* seg_words = words + static_cast<int64_t>(s.qrow_start) * 32;
    switch (s.bits) {
      case 8: mma_codes<8>(seg_words, s, g, t, bf); break;
      case 6: mma_codes<6>(seg_words, s, g, t, bf); break;
      case 5: mma_codes<5>(seg_words, s, g, t, bf); break;
      case 4: mma_codes<4>(seg_words, s, g, t, bf); break;
      case 3: mma_codes<3>(seg_words, s, g, t, bf); break;
      default: mma_codes<2>(seg_words, s, g, t, bf); break;
    }
    float cs[kMmaTilesN][2];
#pragma unroll
    for (int nt = 0; nt < kMmaTilesN; nt++)
#pragma unroll
      for (int e = 0; e < 2; e++) cs[nt][e] = column_scale(w, s, block * 32 + nt * 8 + 2 * t + e);
    const int z = zero_point(s.bits);
#pragma unroll
    for (int mt = 0; mt < kMmaTilesM; mt++) {
      float xs[2];
      int zs[2];
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int row = row0 + mt * 16 + g + 8 * h;
        const int64_t at = static_cast<int64_t>(row < m ? row : 0) * w.segment_count + si;
        xs[h] = row < m ? a.scale[at] : 0.0f;
        zs[h] = z * a.sum[at];
      }
#pragma unroll
      for (int nt = 0; nt < kMmaTilesN; nt++) {
        const int zero[4] = {0, 0, 0, 0};
        int acc[4];
        mma_s8_16x8x32(acc, af[mt], bf[nt], zero);
#pragma unroll
        for (int i = 0; i < 4; i++) out[mt][nt][i] += xs[i >> 1] * cs[nt][i & 1] * static_cast<float>(acc[i] - zs[i >> 1]);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < kMmaTilesM; mt++)
#pragma unroll
    for (int nt = 0; nt < kMmaTilesN; nt++) store_mma_tile(out[mt][nt], lane, row0 + mt * 16, block * 32 + nt * 8, m, w.n, y, ldy, bias);
}

template <int M>
void launch_gemv(const Exl2Weight& w, const Exl2Activations& a, float* y, int64_t ldy, const float* bias, cudaStream_t s) {
  auto kernel = gemv_kernel<M>;
  LM_LAUNCH(kernel, static_cast<unsigned>(w.np / 32), dim3(32, kGemvWarps), s)(w, a, y, ldy, bias);
}

}  // namespace

void exl2_quantize(const Exl2Weight& w, const float* x, int m, int64_t ldx, const Exl2Activations& a, cudaStream_t s) {
  const int per_block = 8;
  LM_LAUNCH(quantize_kernel, dim3((w.segment_count + per_block - 1) / per_block, m), dim3(32, per_block), s)(w, x, m, ldx, a);
  check_launch("exl2 quantize");
}

void exl2_matmul_kernel(const Exl2Weight& w, const Exl2Activations& a, int m, float* y, int64_t ldy, const float* bias,
                        bool tensor_cores, cudaStream_t s) {
  if (tensor_cores) {
    const unsigned blocks = static_cast<unsigned>((w.np / 32 + kMmaWarps - 1) / kMmaWarps);
    const unsigned row_tiles = static_cast<unsigned>((m + 16 * kMmaTilesM - 1) / (16 * kMmaTilesM));
    LM_LAUNCH(mma_kernel, dim3(blocks, row_tiles), dim3(32, kMmaWarps), s)(w, a, m, y, ldy, bias);
  } else {
    for (int r0 = 0; r0 < m; r0 += 8) {
      const int rows = m - r0 < 8 ? m - r0 : 8;
      Exl2Activations at = a;
      at.q += r0 * a.ldq;
      at.scale += static_cast<int64_t>(r0) * w.segment_count;
      at.sum += static_cast<int64_t>(r0) * w.segment_count;
      float* yr = y + r0 * ldy;
      with_rows(rows, [&](auto M) { launch_gemv<decltype(M)::value>(w, at, yr, ldy, bias, s); });
    }
  }
  check_launch("exl2 matmul");
}

void exl2_matmul(const Exl2Weight& w, const Exl2Activations& a, int m, float* y, int64_t ldy, const float* bias,
                 cudaStream_t s) {
  exl2_matmul_kernel(w, a, m, y, ldy, bias, m > 8, s);
}

}  // namespace laminate::gpu
