// What the loader receives: files, the tensors in them, the model's shape and the layer
// plan (which tensors serve which decoder layer). Everything here comes from outside
// (files, JavaScript) and is checked by build_engine before use.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "weights.h"

namespace laminate {

struct TensorSpec {
  std::string name;
  int file = -1;
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t bytes = 0;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

// A linear layer's tensors (indices into ModelSpec::tensors; -1 where absent): one dense
// weight, or the five tensors of an EXL2 layer; and an optional bias.
struct LinearSpec {
  int dense = -1;
  int q_weight = -1, q_invperm = -1, q_scale = -1, q_scale_max = -1, q_groups = -1;
  int bias = -1;
  bool exl2() const { return q_weight >= 0; }
};

struct LayerSpec {
  int input_norm = -1, post_attention_norm = -1;
  LinearSpec q, k, v, o, gate, up, down;
};

struct ModelSpec {
  std::vector<std::string> files;
  std::vector<TensorSpec> tensors;
  ModelShape shape;
  int embedding = -1, final_norm = -1;
  LinearSpec lm_head;
  std::vector<LayerSpec> layers;
  std::string device = "cpu";  // "cpu" or "cuda" (the CUDA build only)
  int device_index = 0;        // which GPU
  std::string isa = "auto";
  int threads = 0;        // 0: physical cores
  int kv_page_size = 16;
  int kv_max_tokens = 0;  // KV cache capacity in positions over all sequences
  std::string kv_type = "f16";  // the CPU cache's format: "f16" or "q8" (kv_cache.h)
};

}  // namespace laminate
