// The operations a decoder step needs, implemented once per device (cpu/, cuda/). The step
// in engine.cc is written against this interface only: it asks the backend for the
// buffers it works in (host memory on the CPU, device memory on a GPU), describes the batch
// once per step, and then issues the operations.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
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

// Causal attention of the step's query tokens over the KV cache of their sequences.
struct AttentionCall {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int layer = 0;
  int sliding_window = 0;  // 0: whole context
  const float* q = nullptr;  // [tokens, heads * head_dim]
  float* out = nullptr;      // [tokens, heads * head_dim]
};

// One step's batch, as host arrays valid until end_step.
struct StepBatch {
  int tokens = 0;
  const int32_t* ids = nullptr;                     // [tokens]
  const int* positions = nullptr;                   // [tokens]
  const std::vector<int>* const* pages = nullptr;   // [tokens]: page list of its sequence
  const int* entry_tokens = nullptr;                // [entries]: tokens of each entry, in order
  int entries = 0;
  const float* cos_sin = nullptr;                   // [tokens, head_dim]: RoPE cosines, then sines
  const int* logit_rows = nullptr;                  // token rows whose logits are wanted
  int logit_count = 0;                              // of which the last top_count want
  int top_count = 0;                                // only their top_k largest
  int top_k = 0;
};

// The weights the engine holds, for a backend that keeps its own copies.
struct WeightSet {
  std::vector<const LinearWeight*> linears;
  std::vector<std::pair<const float*, int64_t>> vectors;  // norms and biases
  DenseView embedding;
};

enum class Buffer : int { X, H, Q, K, V, Attention, Gate, Up, Rows, Logits, TopValues, Count };

// How a backend has run its steps: a GPU backend records decode steps as graphs and replays
// them; graph_error says why it stopped recording, if it did.
struct StepCounts {
  uint64_t eager = 0, recorded = 0, replayed = 0;
  std::string graph_error;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Takes what the weights hold (after EXL2 codes are repacked); progress in bytes.
  virtual void upload(const WeightSet& weights, const std::function<void(uint64_t)>& progress) {}
  // Whether upload() keeps its own copy (then the host copies may be dropped).
  virtual bool owns_weights() const { return false; }

  // A buffer of at least `floats` floats, kept between steps. Ask for every buffer of a
  // step before begin_step.
  virtual float* buffer(Buffer which, size_t floats) = 0;
  virtual int32_t* id_buffer(size_t count) = 0;  // like buffer(), for top-k ids
  // Starts a step. False: the backend replays a step of this shape it recorded before, and
  // the caller goes straight to end_step.
  virtual bool begin_step(const StepBatch& batch) = 0;
  // Ends the step: copies rows x vocab logits from `logits` (a buffer) to `host`, and
  // `top` top-k values and ids (a buffer and id_buffer) to `host_values` and `host_ids`.
  // False: the work was not done after all (a recording that failed); issue it again.
  virtual bool end_step(const float* logits, int rows, int vocab, float* host, const float* values, const int32_t* ids,
                        int top, float* host_values, int32_t* host_ids) = 0;
  // Ends a step that failed or was aborted part way.
  virtual void cancel_step() {}
  // Safe to call from any thread, also while a step runs.
  virtual StepCounts step_counts() const = 0;

  // Runs several independent linears over the same number of rows as one parallel job.
  virtual void linear(const LinearCall* calls, int count, int m) = 0;
  virtual void rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y) = 0;
  // Rotate-half RoPE in place on [m, heads * head_dim] rows with stride ld, at the step's positions.
  virtual void rope(float* x, int m, int heads, int head_dim, int64_t ld) = 0;
  // Stores k and v rows ([tokens, kv_heads * head_dim]) at the step's positions.
  virtual void write_kv(KvCache& cache, int layer, int kv_heads, int head_dim, const float* k, const float* v) = 0;
  virtual void attention(KvCache& cache, const AttentionCall& call) = 0;
  // gate = silu(gate) * up
  virtual void swiglu(float* gate, const float* up, int64_t n) = 0;
  virtual void add(float* x, const float* y, int64_t n) = 0;
  // x = the embedding rows of the step's tokens.
  virtual void embed(const DenseView& table, float* x) = 0;
  // out = the rows of x (n floats each) whose logits the step wants.
  virtual void gather_rows(const float* x, int64_t n, float* out) = 0;
  // The k largest of each row of logits, largest first, lowest index first among equals,
  // NaN after every number: values and ids [rows, k].
  virtual void top_k(const float* logits, int rows, int vocab, int k, float* values, int32_t* ids) = 0;
};

}  // namespace laminate
