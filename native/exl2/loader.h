// Turning the five stored tensors of an EXL2 layer into the view the kernels use, after
// checking everything the kernels rely on: dtypes, shapes, the group table (widths 8, 6,
// 5, 4, 3, 2 in that order, increasing qrows, whole chunks, rows adding up to in_features)
// and the permutation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/dtype.h"
#include "format.h"

namespace laminate {

struct RawTensor {
  const void* data;
  DType dtype;
  std::vector<int64_t> shape;
  std::string where;  // "file: tensor 'name'", for errors
};

// n: out_features, k: in_features. Throws Error naming the tensor and the problem.
Exl2View load_exl2(const RawTensor& q_weight, const RawTensor& q_invperm, const RawTensor& q_scale,
                   const RawTensor& q_scale_max, const RawTensor& q_groups, int64_t n, int64_t k);

}  // namespace laminate
