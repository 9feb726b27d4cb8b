// The operations a decoder step needs, implemented once per device (cpu/ now, cuda/
// later). The step in engine.cc is written against this interface only.
#pragma once
#include <cstdint>
#include <vector>

#include "kv_cache.h"
#include "weights.h"

namespace laminate {

// y = x W^T (+ bias) for m activation rows.
struct LinearCall {
  const LinearWeight* weight;
  const float* x;
  int64_t ldx;
  float* y;
  int64_t ldy;
};

// Causal attention of a batch of query tokens over the KV cache of their sequences.
struct AttentionCall {
  int tokens = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  int layer = 0;
  int sliding_window = 0;              // 0: whole context
  const float* q = nullptr;            // [tokens, heads * head_dim]
  float* out = nullptr;                // [tokens, heads * head_dim]
  const int* positions = nullptr;      // [tokens]: position of each query token
  const std::vector<int>* const* pages = nullptr;  // [tokens]: page list of its sequence
  KvCache* cache = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Runs several independent linears over the same number of rows as one parallel job.
  virtual void linear(const LinearCall* calls, int count, int m) = 0;
  virtual void rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y) = 0;
  // Rotate-half RoPE in place on [m, heads * head_dim] rows with stride ld; cos_sin holds
  // per row head_dim/2 cosines followed by head_dim/2 sines.
  virtual void rope(float* x, int m, int heads, int head_dim, int64_t ld, const float* cos_sin) = 0;
  // Stores k and v rows ([tokens, kv_heads * head_dim]) at their positions.
  virtual void write_kv(KvCache& cache, int layer, int tokens, int kv_heads, int head_dim, const float* k,
                        const float* v, const int* positions, const std::vector<int>* const* pages) = 0;
  virtual void attention(const AttentionCall& call) = 0;
  // gate = silu(gate) * up
  virtual void swiglu(float* gate, const float* up, int64_t n) = 0;
  virtual void add(float* x, const float* y, int64_t n) = 0;
  virtual void embed(const DenseView& table, const int32_t* tokens, int m, float* x) = 0;
};

}  // namespace laminate
