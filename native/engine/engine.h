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

  int create_sequence();
  void free_sequence(int id);
  int sequence_length(int id);
  void truncate_sequence(int id, int length);
  struct CacheStats {
    int page_size, pages_in_use, max_pages;
    int64_t bytes_allocated;
  };
  CacheStats cache_stats();
  // How the steps ran so far (any thread, also while a step runs).
  StepCounts step_counts() const { return backend_->step_counts(); }

  // One forward pass over every entry; appends the tokens to their sequences. On error or
  // abort the sequences are left as they were.
  void step(const std::vector<StepEntry>& entries, StepResult& result, const std::atomic<int32_t>* abort);

 private:
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
