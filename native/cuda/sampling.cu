// Sampling helpers on the GPU, so that greedy and top-k decoding need not copy whole rows
// of logits to the host: the k largest entries of each row (ties: lower index first; NaN
// never chosen before a number) and softmax.
#include "kernels.h"
#include "runtime.h"

namespace laminate::gpu {

namespace {

constexpr int kThreads = 256;

// (v, i) comes before (w, j): larger value first, then lower index; NaN after everything.
LM_DEVICE bool before(float v, int i, float w, int j) {
  if (isnan(v)) return isnan(w) && i < j;
  if (isnan(w)) return true;
  return v > w || (v == w && i < j);
}

__global__ void top_k_kernel(const float* __restrict__ logits, int vocab, int k, float* __restrict__ values,
                             int32_t* __restrict__ indices) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  __shared__ float best_v[kThreads / 32];
  __shared__ int best_i[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float prev_v = INFINITY;
  int prev_i = -1;
  for (int r = 0; r < k; r++) {
    // the first entry after (prev_v, prev_i) in the order
    float bv = NAN;
    int bi = -1;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = row[i];
      if (r > 0 && !before(prev_v, prev_i, v, i)) continue;
      if (bi < 0 || before(v, i, bv, bi)) bv = v, bi = i;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && (bi < 0 || before(ov, oi, bv, bi))) bv = ov, bi = oi;
    }
    if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
    __syncthreads();
    bv = best_v[0], bi = best_i[0];
    for (int w = 1; w < kThreads / 32; w++)
      if (best_i[w] >= 0 && (bi < 0 || before(best_v[w], best_i[w], bv, bi))) bv = best_v[w], bi = best_i[w];
    __syncthreads();
    if (threadIdx.x == 0) {
      values[static_cast<int64_t>(blockIdx.x) * k + r] = bv;
      indices[static_cast<int64_t>(blockIdx.x) * k + r] = bi;
    }
    prev_v = bv, prev_i = bi;
  }
}

LM_DEVICE float block_reduce(float v, bool max) {
  __shared__ float part[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = max ? fmaxf(v, other) : v + other;
  }
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  float r = part[0];
  for (int w = 1; w < kThreads / 32; w++) r = max ? fmaxf(r, part[w]) : r + part[w];
  __syncthreads();
  return r;
}

__global__ void softmax_kernel(float* __restrict__ x, int n) {
  float* row = x + static_cast<int64_t>(blockIdx.x) * n;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) m = fmaxf(m, row[i]);
  m = block_reduce(m, true);
  float total = 0.0f;
  for (int i = threadIdx.x; i < n; i += kThreads) total += expf(row[i] - m);
  const float inv = 1.0f / block_reduce(total, false);
  for (int i = threadIdx.x; i < n; i += kThreads) row[i] = expf(row[i] - m) * inv;
}

}  // namespace

void top_k(const float* logits, int rows, int vocab, int k, float* values, int32_t* indices, cudaStream_t s) {
  LM_LAUNCH(top_k_kernel, rows, kThreads, s)(logits, vocab, k, values, indices);
  check_launch("top-k");
}

void softmax(float* x, int rows, int n, cudaStream_t s) {
  LM_LAUNCH(softmax_kernel, rows, kThreads, s)(x, n);
  check_launch("softmax");
}

}  // namespace laminate::gpu
