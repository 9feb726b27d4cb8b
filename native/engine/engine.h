// The decoder engine: owns the mapped files, the weights, the KV cache and a backend,
// and runs one forward step over a batch of sequences.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/mapped_file.h"
#include "backend.h"
#include "kv_cache.h"
#include "model_spec.h"
#include "weights.h"

namespace laminate {

// Top: only the top_k largest logits of the last position and their ids, found where the
// logits are (largest first, lowest id first among equals): greedy and top-k decoding.
enum class LogitsWanted : int { None = 0, Last = 1, All = 2, Top = 3 };
constexpr int kMaxTopK = 64;

struct StepEntry {
  int sequence = 0;
  std::vector<int32_t> tokens;
  LogitsWanted logits = LogitsWanted::Last;
  int top_k = 1;  // with LogitsWanted::Top, 1 .. kMaxTopK
};

// Which halves of a decoder layer run_layer runs.
enum LayerParts : int { kAttentionPart = 1, kMlpPart = 2, kWholeLayer = 3 };

// The inputs of a decoder layer's linears, one per group of linears that read the same
// rows: q/k/v, o, gate/up, down.
enum class LinearInput : int { Qkv = 0, O = 1, GateUp = 2, Down = 3 };

// Sees each linear input as a layer runs (host memory, rows x cols, ld apart): where the
// quantizer collects its Hessians.
struct LinearTap {
  virtual ~LinearTap() = default;
  virtual void input(LinearInput which, const float* x, int rows, int64_t cols, int64_t ld) = 0;
};

struct StepResult {
  std::vector<float> logits;      // [rows, vocab], rows in entry order
  std::vector<int> rows;          // logit rows per entry
  // The entries that asked for LogitsWanted::Top, in order: top_k (the largest k asked for,
  // at most the vocabulary) values and ids each.
  int top_k = 0;
  std::vector<float> top_values;
  std::vector<int32_t> top_ids;
};

class Engine {
 public:
  // Maps the files, checks every tensor against them and against the shape, and builds
  // the layer plan. Throws Error naming the file and tensor on any inconsistency.
  explicit Engine(const ModelSpec& spec);
  ~Engine();

  const ModelShape& shape() const { return shape_; }
  const std::string& isa() const { return isa_; }
  const std::string& device() const { return device_; }            // "cpu" or "cuda"
  const std::string& device_name() const { return device_name_; }  // the GPU's name
  uint64_t device_bytes() const { return device_bytes_; }          // device memory held
  int threads() const { return threads_; }
  int layers() const { return static_cast<int>(layers_.size()); }
  uint64_t mapped_bytes() const;

  // Touches every page of the weights (progress in bytes, abort flag checked in between).
  void prefault(const std::atomic<int32_t>* abort, const std::function<void(uint64_t, uint64_t)>& progress);

  // shared: the sequence takes part in the prefix cache (see KvCache).
  int create_sequence(bool shared = false);
  // Gives an empty shared sequence the cached pages that `tokens` begins with, leaving at
  // least one token to compute; returns how many positions it now holds.
  int attach_prefix(int id, const std::vector<int32_t>& tokens);
  void free_sequence(int id);
  int sequence_length(int id);
  void truncate_sequence(int id, int length);
  struct CacheStats {
    int page_size, pages_in_use, max_pages, cached_pages;
    int64_t bytes_allocated;
  };
  CacheStats cache_stats();
  // How the steps ran so far (any thread, also while a step runs).
  StepCounts step_counts() const { return backend_->step_counts(); }

  // One forward pass over every entry; appends the tokens to their sequences. On error or
  // abort the sequences are left as they were.
  void step(const std::vector<StepEntry>& entries, StepResult& result, const std::atomic<int32_t>* abort);

  // One decoder layer at a time (the quantizer's seam; the CPU engine only). Runs the halves
  // `parts` of layer `layer` with the weights `w` (the loaded ones, or replacements) over
  // hidden states x ([tokens, hidden], updated in place) of independent sequences of the
  // given lengths, each from position 0; `tap` (may be null) sees every linear's input.
  void run_layer(int layer, const DecoderLayerWeights& w, float* x, const std::vector<int>& lengths, int parts,
                 LinearTap* tap);
  const DecoderLayerWeights& layer_weights(int layer) const { return layers_.at(layer); }
  const LinearWeight& lm_head() const { return *lm_head_; }
  // x = the embeddings of `ids` ([n, hidden]).
  void embed(const int32_t* ids, int n, float* x) const;
  // out = the final norm of x ([n, hidden]): the head's input.
  void head_input(const float* x, int n, float* out);

 private:
  // The activation buffers of a step of `tokens` rows.
  struct LayerBuffers {
    float *x, *h, *q, *k, *v, *att, *gate, *up;
  };
  LayerBuffers layer_buffers(int tokens);
  // Issues one decoder layer's operations (the halves in `parts`) on the backend.
  void decoder_layer(const DecoderLayerWeights& w, int layer, int tokens, const LayerBuffers& b, int parts,
                     LinearTap* tap);
  // The step's rows: ids, positions, page lists; RoPE angles in cos_sin_.
  struct StepRows {
    std::vector<int32_t> tokens;
    std::vector<int> positions, entry_tokens;
    std::vector<const std::vector<int>*> pages;
  };
  void step_rows(const std::vector<StepEntry>& entries, StepRows& rows);
  StepBatch step_batch(const StepRows& rows) const;
  uint64_t weight_bytes() const;  // what the weights take on a device
  WeightSet weight_set() const;
  void forward(const std::vector<StepEntry>& entries, StepResult& result, const std::atomic<int32_t>* abort);

  ModelShape shape_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<std::unique_ptr<LinearWeight>> linear_storage_;
  std::vector<std::vector<float>> vector_storage_;
  std::vector<DecoderLayerWeights> layers_;
  DenseView embedding_;
  const float* final_norm_ = nullptr;
  const LinearWeight* lm_head_ = nullptr;
  struct Repack {
    Exl2View* view;
    int file;
    uint64_t offset, bytes;
  };
  std::vector<Repack> repack_;  // EXL2 layers to repack in prefault
  std::unique_ptr<Backend> backend_;
  std::string isa_;
  std::string device_ = "cpu", device_name_;
  uint64_t device_bytes_ = 0, kv_device_bytes_ = 0;
  int threads_ = 1;
  std::unique_ptr<KvCache> cache_;
  std::mutex mutex_;  // one step (or cache change) at a time

  std::vector<float> cos_sin_;  // reused between steps
};

}  // namespace laminate
