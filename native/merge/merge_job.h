// A merge to disk as the native side runs it: shards to write (header bytes prepared by
// the caller), each output tensor computed from memory-mapped inputs by one method and
// written straight to its shard, one tensor at a time.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../core/dtype.h"

namespace laminate {

enum class MergeMethod : int {
  Passthrough = 0,
  Linear = 1,
  Slerp = 2,
  TaskArithmetic = 3,  // the task-vector family: sparsify + optional sign consensus
  ModelStock = 4,
  Exl2Dequantize = 5,  // inputs: q_weight, q_invperm, q_scale, q_scale_max, q_groups
};

enum class Sparsify : int { None = 0, Magnitude = 1, Random = 2, MagnitudeOutliers = 3 };

struct MergeInput {
  int file = -1;
  uint64_t offset = 0;
  DType dtype = DType::BF16;
  std::vector<int64_t> shape;
  // per-model parameters
  double weight = 1.0;
  double density = 1.0;
  double gamma = 0.01;
  bool has_scale = false;
  double scale = 1.0;
};

struct MergeTensor {
  std::string name;
  MergeMethod method = MergeMethod::Passthrough;
  DType out_dtype = DType::BF16;
  std::vector<int64_t> shape;
  std::vector<MergeInput> inputs;
  int base = -1;             // index into inputs
  bool has_work_dtype = false;
  DType work_dtype = DType::BF16;  // `dtype:` of the config: inputs are cast to it
  // global parameters
  double t = 0.5;            // slerp
  bool normalize = false;
  bool rescale = false;
  double lambda = 1.0;
  Sparsify sparsify = Sparsify::None;
  bool consensus = false;
  bool filter_wise = false;  // model_stock
};

struct MergeShard {
  std::string path;
  std::vector<uint8_t> header;   // 8-byte length + JSON, as it goes on disk
  std::vector<int> tensors;      // indices into MergeJob::tensors, in data order
};

struct MergeJob {
  std::vector<std::string> files;
  std::vector<MergeTensor> tensors;
  std::vector<MergeShard> shards;
  uint64_t seed = 0;
};

// Runs the job. progress(done_bytes, total_bytes) is called after each tensor; abort is
// polled between tensors and inside long copies. Throws Error (or Aborted).
void run_merge(const MergeJob& job, const std::atomic<int32_t>* abort,
               const std::function<void(uint64_t, uint64_t)>& progress);

}  // namespace laminate
