// The CPU's small kernels: plain functions over pointers and shapes. They are small next
// to the matmuls and attention, so they are written once in portable C++.
#pragma once
#include <cstdint>

#include "matmul_dense.h"

namespace laminate {

// y = x / sqrt(mean(x^2) + eps) * weight, one row of n.
void rmsnorm_row(const float* x, const float* weight, float eps, int n, float* y);

// Rotate-half RoPE on the heads of one row.
void rope_row(float* x, int heads, int head_dim, const float* cos_sin);

void swiglu(float* gate, const float* up, int64_t n);
void add(float* x, const float* y, int64_t n);
void embed_row(const DenseView& table, int32_t token, float* x);

}  // namespace laminate
