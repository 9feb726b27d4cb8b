// Row and elementwise operations of the decoder step on the GPU: RMSNorm, RoPE, SwiGLU,
// residual add, embedding gather, row gather.
#include "kernels.h"
#include "runtime.h"

namespace laminate::gpu {

namespace {

constexpr int kThreads = 256;

LM_DEVICE float block_sum(float v) {
  __shared__ float part[kThreads / 32];
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kThreads / 32; i++) total += part[i];
  __syncthreads();
  return total;
}

__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ weight, float eps, int n,
                               float* __restrict__ y) {
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += kThreads) ss += xr[i] * xr[i];
  const float r = rsqrtf(block_sum(ss) / n + eps);
  for (int i = threadIdx.x; i < n; i += kThreads) yr[i] = xr[i] * r * weight[i];
}

__global__ void rope_kernel(float* __restrict__ x, int heads, int head_dim, int64_t ld, const float* __restrict__ cos_sin) {
  const int half = head_dim / 2;
  float* row = x + blockIdx.x * ld;
  const float* cs = cos_sin + static_cast<int64_t>(blockIdx.x) * head_dim;
  for (int e = threadIdx.x; e < heads * half; e += kThreads) {
    const int h = e / half, i = e % half;
    float* v = row + static_cast<int64_t>(h) * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * cs[i] - b * cs[half + i];
    v[i + half] = b * cs[i] + a * cs[half + i];
  }
}

__global__ void swiglu_kernel(float* __restrict__ gate, const float* __restrict__ up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * kThreads)
    x[i] += y[i];
}

__global__ void embed_kernel(DenseWeight table, const int32_t* __restrict__ tokens, float* __restrict__ x) {
  const int64_t n = table.k, base = static_cast<int64_t>(tokens[blockIdx.x]) * n;
  float* row = x + blockIdx.x * n;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    float v;
    if (table.dtype == DType::F32) v = static_cast<const float*>(table.data)[base + i];
    else {
      const uint16_t h = static_cast<const uint16_t*>(table.data)[base + i];
      v = table.dtype == DType::F16 ? h2f(h) : bf2f(h);
    }
    row[i] = v;
  }
}

__global__ void gather_kernel(const float* __restrict__ x, int64_t n, const int* __restrict__ rows, float* __restrict__ out) {
  const float* src = x + rows[blockIdx.x] * n;
  float* dst = out + blockIdx.x * n;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) dst[i] = src[i];
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

}  // namespace

void rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y, cudaStream_t s) {
  LM_LAUNCH(rmsnorm_kernel, m, kThreads, s)(x, weight, eps, n, y);
  check_launch("rmsnorm");
}

void rope(float* x, int m, int heads, int head_dim, int64_t ld, const float* cos_sin, cudaStream_t s) {
  LM_LAUNCH(rope_kernel, m, kThreads, s)(x, heads, head_dim, ld, cos_sin);
  check_launch("rope");
}

void swiglu(float* gate, const float* up, int64_t n, cudaStream_t s) {
  LM_LAUNCH(swiglu_kernel, grid_for(n), kThreads, s)(gate, up, n);
  check_launch("swiglu");
}

void add(float* x, const float* y, int64_t n, cudaStream_t s) {
  LM_LAUNCH(add_kernel, grid_for(n), kThreads, s)(x, y, n);
  check_launch("add");
}

void embed(const DenseWeight& table, const int32_t* tokens, int m, float* x, cudaStream_t s) {
  LM_LAUNCH(embed_kernel, m, kThreads, s)(table, tokens, x);
  check_launch("embed");
}

void gather_rows(const float* x, int64_t n, const int* rows, int count, float* out, cudaStream_t s) {
  LM_LAUNCH(gather_kernel, count, kThreads, s)(x, n, rows, out);
  check_launch("gather rows");
}

}  // namespace laminate::gpu
