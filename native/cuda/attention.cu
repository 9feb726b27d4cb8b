// Causal attention over the paged KV cache on the GPU (grouped KV heads, optional sliding
// window). The cache holds fp16 keys and values; scores, softmax and sums are float.
//  - write_kv stores a step's keys and values at their positions.
//  - Decode (split-KV): a block per (query, head, split of kSplitPositions positions); its
//    four warps take every fourth position with an online softmax, then merge; a second
//    kernel merges the splits. Single-token entries of every step (decode tokens) go here,
//    whatever else the step holds, and so does every token where head_dim is 256.
//  - Prefill (flash attention): a block per (tile of up to 16 consecutive queries of one
//    sequence, head); keys and values pass through shared memory 32 positions at a time
//    (from a multiple of 32), each warp keeps the running maximum, sum and output of four
//    queries.
// A query's result depends on its sequence's cache and on which of the two kernels runs
// it, never on the other tokens of the step.
#include "kernels.h"
#include "runtime.h"

#include <string>

#include "../core/error.h"

namespace laminate::gpu {

namespace {

LM_DEVICE uint16_t* kv_row(const KvPages& kv, const int* pages, int layer, int which, int kv_head, int pos) {
  const int page = pages[pos / kv.page_size];
  return kv.base + page * kv.page_elems() +
         ((static_cast<int64_t>(layer) * 2 + which) * kv.kv_heads + kv_head) * kv.page_size * kv.head_dim +
         static_cast<int64_t>(pos % kv.page_size) * kv.head_dim;
}

__global__ void write_kv_kernel(KvPages kv, int layer, StepTokens t, const float* __restrict__ k, const float* __restrict__ v) {
  const int token = blockIdx.x, pos = t.positions[token];
  const int* pages = t.page_table + static_cast<int64_t>(t.sequence[token]) * t.table_stride;
  const int width = kv.kv_heads * kv.head_dim;
  for (int e = threadIdx.x; e < width; e += blockDim.x) {
    const int h = e / kv.head_dim, d = e % kv.head_dim;
    kv_row(kv, pages, layer, 0, h, pos)[d] = f2h(k[static_cast<int64_t>(token) * width + e]);
    kv_row(kv, pages, layer, 1, h, pos)[d] = f2h(v[static_cast<int64_t>(token) * width + e]);
  }
}

LM_DEVICE int window_start(int pos, int window) { return window > 0 && pos + 1 > window ? pos + 1 - window : 0; }

constexpr int kDecodeWarps = 4;

template <int DPL>  // head_dim / 32 values per lane
__global__ void decode_kernel(AttentionArgs a, float* __restrict__ partial) {
  const KvPages& kv = a.kv;
  const int h = blockIdx.x, row = blockIdx.y, token = a.rows[row], split = blockIdx.z, splits = gridDim.z;
  const int lane = threadIdx.x, warp = threadIdx.y, D = a.head_dim;
  const int pos = a.t.positions[token];
  const int begin = window_start(pos, a.sliding_window) + split * kSplitPositions;
  const int end = min(pos + 1, begin + kSplitPositions);
  const int kv_head = h / (a.heads / a.kv_heads);
  const int* pages = a.t.page_table + static_cast<int64_t>(a.t.sequence[token]) * a.t.table_stride;
  const float scale = rsqrtf(static_cast<float>(D));
  const float* q = a.q + (static_cast<int64_t>(token) * a.heads + h) * D;
  float qv[DPL], acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; i++) qv[i] = q[lane + 32 * i] * scale, acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int j = begin + warp; j < end; j += kDecodeWarps) {
    const uint16_t* kr = kv_row(kv, pages, a.layer, 0, kv_head, j);
    const uint16_t* vr = kv_row(kv, pages, a.layer, 1, kv_head, j);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; i++) s += qv[i] * h2f(kr[lane + 32 * i]);
    s = warp_sum(s);
    const float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = acc[i] * corr + p * h2f(vr[lane + 32 * i]);
    m = m_new;
  }
  __shared__ float wm[kDecodeWarps], wl[kDecodeWarps], wacc[kDecodeWarps][32 * DPL];
  if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
  for (int i = 0; i < DPL; i++) wacc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  if (warp != 0) return;
  float M = -INFINITY;
  for (int w = 0; w < kDecodeWarps; w++) M = fmaxf(M, wm[w]);
  float* out = partial + ((static_cast<int64_t>(row) * a.heads + h) * splits + split) * (D + 2);
  float L = 0.0f, o[DPL] = {};
  for (int w = 0; w < kDecodeWarps; w++) {
    const float f = wm[w] == -INFINITY ? 0.0f : expf(wm[w] - M);
    L += wl[w] * f;
#pragma unroll
    for (int i = 0; i < DPL; i++) o[i] += wacc[w][lane + 32 * i] * f;
  }
  if (lane == 0) out[0] = M, out[1] = L;
#pragma unroll
  for (int i = 0; i < DPL; i++) out[2 + lane + 32 * i] = o[i];
}

__global__ void combine_kernel(AttentionArgs a, int splits, const float* __restrict__ partial) {
  const int h = blockIdx.x, row = blockIdx.y, token = a.rows[row], D = a.head_dim;
  const float* p = partial + (static_cast<int64_t>(row) * a.heads + h) * splits * (D + 2);
  float M = -INFINITY;
  for (int s = 0; s < splits; s++) M = fmaxf(M, p[s * (D + 2)]);
  float L = 0.0f;
  for (int s = 0; s < splits; s++)
    if (p[s * (D + 2)] != -INFINITY) L += p[s * (D + 2) + 1] * expf(p[s * (D + 2)] - M);
  float* out = a.out + (static_cast<int64_t>(token) * a.heads + h) * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < splits; s++)
      if (p[s * (D + 2)] != -INFINITY) o += p[s * (D + 2) + 2 + d] * expf(p[s * (D + 2)] - M);
    out[d] = o / L;
  }
}

constexpr int kFlashKeys = 32, kFlashWarps = 4, kQueriesPerWarp = kFlashQueries / kFlashWarps, kMaxDim = 128;

template <int DPL>
__global__ void prefill_kernel(AttentionArgs a, const QueryTile* __restrict__ tiles) {
  const KvPages& kv = a.kv;
  const QueryTile tile = tiles[blockIdx.x];
  const int h = blockIdx.y, lane = threadIdx.x, warp = threadIdx.y, tid = warp * 32 + lane, D = a.head_dim;
  const int kv_head = h / (a.heads / a.kv_heads);
  const int* pages = a.t.page_table + static_cast<int64_t>(a.t.sequence[tile.first_token]) * a.t.table_stride;
  const int first_pos = a.t.positions[tile.first_token];
  const int lo = window_start(first_pos, a.sliding_window), hi = a.t.positions[tile.first_token + tile.count - 1] + 1;
  const float scale = rsqrtf(static_cast<float>(D));
  __shared__ float qs[kFlashQueries][kMaxDim];
  __shared__ float ks[kFlashKeys][kMaxDim + 1];
  __shared__ float vs[kFlashKeys][kMaxDim];
  for (int e = tid; e < kFlashQueries * D; e += kFlashWarps * 32) {
    const int qi = e / D, d = e % D;
    qs[qi][d] = qi < tile.count ? a.q[(static_cast<int64_t>(tile.first_token + qi) * a.heads + h) * D + d] * scale : 0.0f;
  }
  float m[kQueriesPerWarp], l[kQueriesPerWarp], acc[kQueriesPerWarp][DPL];
#pragma unroll
  for (int qq = 0; qq < kQueriesPerWarp; qq++) {
    m[qq] = -INFINITY, l[qq] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[qq][i] = 0.0f;
  }
  for (int k0 = lo / kFlashKeys * kFlashKeys; k0 < hi; k0 += kFlashKeys) {
    __syncthreads();  // the previous tile is used up (and the queries are in place)
    for (int e = tid; e < kFlashKeys * D; e += kFlashWarps * 32) {
      const int r = e / D, d = e % D, j = k0 + r;
      const bool in = j >= lo && j < hi;  // (no query of the tile sees a key before lo)
      ks[r][d] = in ? h2f(kv_row(kv, pages, a.layer, 0, kv_head, j)[d]) : 0.0f;
      vs[r][d] = in ? h2f(kv_row(kv, pages, a.layer, 1, kv_head, j)[d]) : 0.0f;
    }
    __syncthreads();
    const int j = k0 + lane;  // this lane's key
#pragma unroll
    for (int qq = 0; qq < kQueriesPerWarp; qq++) {
      const int qi = warp * kQueriesPerWarp + qq;
      if (qi >= tile.count) break;  // the same for the whole warp
      const int pos = first_pos + qi;
      float s = 0.0f;
      for (int d = 0; d < D; d++) s += qs[qi][d] * ks[lane][d];
      const bool valid = j < hi && j <= pos && j >= window_start(pos, a.sliding_window);
      s = valid ? s : -INFINITY;
      const float m_new = fmaxf(m[qq], warp_max(s));
      if (m_new == -INFINITY) continue;  // no key of this tile for this query (whole warp)
      const float p = valid ? expf(s - m_new) : 0.0f, corr = expf(m[qq] - m_new);
      l[qq] = l[qq] * corr + warp_sum(p);
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[qq][i] *= corr;
      for (int r = 0; r < kFlashKeys; r++) {
        const float pr = __shfl_sync(0xffffffffu, p, r);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[qq][i] += pr * vs[r][lane + 32 * i];
      }
      m[qq] = m_new;
    }
  }
#pragma unroll
  for (int qq = 0; qq < kQueriesPerWarp; qq++) {
    const int qi = warp * kQueriesPerWarp + qq;
    if (qi >= tile.count) break;
    float* out = a.out + (static_cast<int64_t>(tile.first_token + qi) * a.heads + h) * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) out[lane + 32 * i] = acc[qq][i] / l[qq];
  }
}

}  // namespace

void write_kv(const KvPages& kv, int layer, const StepTokens& t, const float* k, const float* v, cudaStream_t s) {
  LM_LAUNCH(write_kv_kernel, t.tokens, 256, s)(kv, layer, t, k, v);
  check_launch("write kv");
}

void attention_decode(const AttentionArgs& a, int splits, float* partial, cudaStream_t s) {
  const dim3 grid(a.heads, a.row_count, splits), block(32, kDecodeWarps);
  switch (a.head_dim / 32) {
    case 1: LM_LAUNCH(decode_kernel<1>, grid, block, s)(a, partial); break;
    case 2: LM_LAUNCH(decode_kernel<2>, grid, block, s)(a, partial); break;
    case 4: LM_LAUNCH(decode_kernel<4>, grid, block, s)(a, partial); break;
    case 8: LM_LAUNCH(decode_kernel<8>, grid, block, s)(a, partial); break;
    default: throw Error("CUDA attention: head_dim " + std::to_string(a.head_dim) + " is not 32, 64, 128 or 256");
  }
  LM_LAUNCH(combine_kernel, dim3(a.heads, a.row_count), 128, s)(a, splits, partial);
  check_launch("attention (decode)");
}

void attention_prefill(const AttentionArgs& a, const QueryTile* tiles, int tile_count, cudaStream_t s) {
  const dim3 grid(tile_count, a.heads), block(32, kFlashWarps);
  switch (a.head_dim / 32) {
    case 1: LM_LAUNCH(prefill_kernel<1>, grid, block, s)(a, tiles); break;
    case 2: LM_LAUNCH(prefill_kernel<2>, grid, block, s)(a, tiles); break;
    case 4: LM_LAUNCH(prefill_kernel<4>, grid, block, s)(a, tiles); break;
    default: throw Error("CUDA attention: flash attention takes head_dim 32, 64 or 128, not " + std::to_string(a.head_dim));
  }
  check_launch("attention (prefill)");
}

}  // namespace laminate::gpu
