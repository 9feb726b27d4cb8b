// Weights as the engine sees them. A LinearWeight is one variant per storage format
// (dense F32/F16/BF16 today); layers refer to weights by pointer, so several layers may
// share one weight (virtual merges) and nothing is copied.
#pragma once
#include <cstdint>
#include <vector>

#include "../cpu/matmul_dense.h"
#include "../exl2/format.h"

namespace laminate {

enum class WeightFormat : int { Dense = 0, Exl2 = 1 };

struct LinearWeight {
  WeightFormat format = WeightFormat::Dense;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
  DenseView dense;   // valid when format == Dense
  Exl2View exl2;     // valid when format == Exl2
  const float* bias = nullptr;  // [rows] or null
};

struct DecoderLayerWeights {
  const float* input_norm = nullptr;  // [hidden]
  const float* post_attention_norm = nullptr;
  const LinearWeight* q = nullptr;
  const LinearWeight* k = nullptr;
  const LinearWeight* v = nullptr;
  const LinearWeight* o = nullptr;
  const LinearWeight* gate = nullptr;
  const LinearWeight* up = nullptr;
  const LinearWeight* down = nullptr;
};

struct ModelShape {
  int hidden = 0;
  int intermediate = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  float rms_norm_eps = 1e-5f;
  int sliding_window = 0;  // 0: attend to the whole context
  int context = 0;         // longest sequence the engine accepts
  std::vector<double> rope_inv_freq;  // [head_dim / 2]
};

}  // namespace laminate
