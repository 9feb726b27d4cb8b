// Turning the five stored tensors of an EXL2 layer into the view the kernels use, after
// checking everything the kernels rely on: dtypes, shapes, the group table (widths 8, 6,
// 5, 4, 3, 2 in that order, increasing qrows, whole chunks, rows adding up to in_features),
// the permutation and the groups' maximum scales (finite, not negative).
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

// The stored tensors of an EXL2 layer `<key>.<name>`, in the order load_exl2 takes them.
constexpr const char* kExl2TensorNames[5] = {"q_weight", "q_invperm", "q_scale", "q_scale_max", "q_groups"};

// n: out_features, k: in_features. Throws Error naming the tensor and the problem.
Exl2View load_exl2(const RawTensor& q_weight, const RawTensor& q_invperm, const RawTensor& q_scale,
                   const RawTensor& q_scale_max, const RawTensor& q_groups, int64_t n, int64_t k);

}  // namespace laminate
