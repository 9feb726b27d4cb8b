// The CUDA kernels, as host functions that enqueue them on a stream. Pointers are device
// memory; shapes are as in cpu/. One kernel family per file: matmul_exl2.cu,
// matmul_dense.cu, attention.cu, elementwise.cu, sampling.cu.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../cpu/matmul_exl2.h"
#include "compat.h"

namespace laminate::gpu {

// An EXL2 layer on the device: codes in the quad layout of a repacked Exl2View (32-column
// blocks, qrows words each), its scales, segments and permutation.
struct Exl2Weight {
  const uint32_t* q_weight = nullptr;
  int64_t qrows = 0;
  const uint32_t* q_scale = nullptr;  // [groups, np / 8]
  int64_t np = 0;
  const float* scale_table = nullptr;  // [groups * 16]
  const Exl2Group* segments = nullptr;
  int segment_count = 0;
  const int32_t* perm = nullptr;
  int64_t n = 0, k = 0;  // output and input features
};

// Activations rounded to int8 for one EXL2 layer, as the CPU kernels take them (Exl2Act):
// q [m, ldq] in stored-row order, scale and sum [m, segments].
struct Exl2Activations {
  int8_t* q = nullptr;
  int64_t ldq = 0;  // a multiple of 16
  float* scale = nullptr;
  int32_t* sum = nullptr;
};

void exl2_quantize(const Exl2Weight& w, const float* x, int m, int64_t ldx, const Exl2Activations& a, cudaStream_t s);
// y[r, n] = sum_j xq * (q - z) * scales (+ bias[n]); the decode kernel for m <= 8, tensor
// cores (int8 mma) above.
void exl2_matmul(const Exl2Weight& w, const Exl2Activations& a, int m, float* y, int64_t ldy, const float* bias,
                 cudaStream_t s);
// Which kernel exl2_matmul uses for m rows (for tests that want both).
void exl2_matmul_kernel(const Exl2Weight& w, const Exl2Activations& a, int m, float* y, int64_t ldy,
                        const float* bias, bool tensor_cores, cudaStream_t s);

// A dense weight [n, k] (row-major) in F32, F16 or BF16.
struct DenseWeight {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t n = 0, k = 0;
};
// y = x W^T (+ bias): tensor cores for F16/BF16 weights with k % 16 == 0 (f16/bf16 mma,
// activations rounded to the weight's type), else a row-parallel kernel, whatever m: a
// row's result never depends on the other rows. dense_matmul_kernel picks the kernel (for
// tests that want both).
void dense_matmul(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy, const float* bias,
                  cudaStream_t s);
void dense_matmul_kernel(const DenseWeight& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                         const float* bias, bool tensor_cores, cudaStream_t s);

#if defined(LAMINATE_CUDA_SIM)
// The device pointers of the argument structs, for the simulator's launch checks (sim.h).
using PointerVisit = std::function<void(const void*)>;
inline void device_pointers(const Exl2Weight& w, const PointerVisit& f) {
  for (const void* p : {static_cast<const void*>(w.q_weight), static_cast<const void*>(w.q_scale),
                        static_cast<const void*>(w.scale_table), static_cast<const void*>(w.segments),
                        static_cast<const void*>(w.perm)})
    f(p);
}
inline void device_pointers(const Exl2Activations& a, const PointerVisit& f) { f(a.q), f(a.scale), f(a.sum); }
inline void device_pointers(const DenseWeight& w, const PointerVisit& f) { f(w.data); }
#endif

// Elementwise and row operations.
void rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y, cudaStream_t s);
// cos_sin: [m, head_dim], per row head_dim / 2 cosines then head_dim / 2 sines.
void rope(float* x, int m, int heads, int head_dim, int64_t ld, const float* cos_sin, cudaStream_t s);
void swiglu(float* gate, const float* up, int64_t n, cudaStream_t s);
void add(float* x, const float* y, int64_t n, cudaStream_t s);
void embed(const DenseWeight& table, const int32_t* tokens, int m, float* x, cudaStream_t s);
// out[i] = x[rows[i]] for i < count, rows of n floats.
void gather_rows(const float* x, int64_t n, const int* rows, int count, float* out, cudaStream_t s);

// The KV cache on the device: pages of [layer][k, v][kv_head][slot][head_dim] fp16.
struct KvPages {
  uint16_t* base = nullptr;
  int layers = 0, kv_heads = 0, head_dim = 0, page_size = 0;
  LM_HOST_DEVICE int64_t page_elems() const { return static_cast<int64_t>(layers) * 2 * kv_heads * page_size * head_dim; }
};
// A step's tokens: position, sequence (row of the page table) of each, and the page table
// ([sequences, table_stride] page ids).
struct StepTokens {
  int tokens = 0;
  const int* positions = nullptr;
  const int* sequence = nullptr;
  const int* page_table = nullptr;
  int table_stride = 0;
};
void write_kv(const KvPages& kv, int layer, const StepTokens& t, const float* k, const float* v, cudaStream_t s);

#if defined(LAMINATE_CUDA_SIM)
inline void device_pointers(const KvPages& kv, const PointerVisit& f) { f(kv.base); }
inline void device_pointers(const StepTokens& t, const PointerVisit& f) { f(t.positions), f(t.sequence), f(t.page_table); }
#endif

// A run of consecutive query tokens of one sequence (flash attention tiles).
struct QueryTile {
  int first_token = 0, count = 0;
};
struct AttentionArgs {
  KvPages kv;
  int heads = 0, kv_heads = 0, head_dim = 0, layer = 0, sliding_window = 0;
  const float* q = nullptr;  // [tokens, heads * head_dim]
  float* out = nullptr;
  StepTokens t;
  // The split-KV kernels' queries: the tokens rows[0, row_count).
  const int* rows = nullptr;
  int row_count = 0;
};
#if defined(LAMINATE_CUDA_SIM)
inline void device_pointers(const AttentionArgs& a, const PointerVisit& f) {
  device_pointers(a.kv, f), device_pointers(a.t, f), f(a.q), f(a.out), f(a.rows);
}
#endif
constexpr int kSplitPositions = 256;  // positions per split of the decode kernel
// Split-KV decode, for the tokens a.rows: splits * kSplitPositions must cover the longest
// sequence. partial holds row_count * heads * splits * (head_dim + 2) floats. A token's
// result does not depend on splits (past the ones its positions need) or on the other rows.
void attention_decode(const AttentionArgs& a, int splits, float* partial, cudaStream_t s);
// Flash attention over query tiles (tiles of at most kFlashQueries tokens, head_dim <= 128).
// Key tiles are aligned to multiples of 32 positions, so a query's result does not depend
// on the tile it is in (on how its sequence's tokens were split into steps).
constexpr int kFlashQueries = 16;
void attention_prefill(const AttentionArgs& a, const QueryTile* tiles, int tile_count, cudaStream_t s);

// Sampling helpers over rows of logits: the k largest of each row (k <= 64), values in
// descending order with their indices (k = 1: argmax); softmax in place.
void top_k(const float* logits, int rows, int vocab, int k, float* values, int32_t* indices, cudaStream_t s);
void softmax(float* x, int rows, int n, cudaStream_t s);

}  // namespace laminate::gpu
