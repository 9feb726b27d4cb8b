// Dense matrix multiply over stored weights: Y[m, n] = sum_k X[m, k] * W[n, k] for the
// output rows n in [n0, n1). W is row-major [rows, cols] in F32, F16 or BF16 and is
// converted to float32 in registers; X and Y are float32; sums accumulate in float32.
// One implementation per instruction set, all instantiated from matmul_dense_impl.inc.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../core/dtype.h"

namespace laminate {

struct DenseView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
};

using MatmulDenseFn = void (*)(const DenseView& w, const float* x, int m, int64_t ldx, float* y,
                               int64_t ldy, int64_t n0, int64_t n1);

void matmul_dense_scalar(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                         int64_t n0, int64_t n1);
void matmul_dense_avx2(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                       int64_t n0, int64_t n1);
void matmul_dense_avx512(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                         int64_t n0, int64_t n1);
void matmul_dense_neon(const DenseView& w, const float* x, int m, int64_t ldx, float* y, int64_t ldy,
                       int64_t n0, int64_t n1);

}  // namespace laminate
