// Single CUDA kernels on host data, for tests that compare them with plain references
// (the addon exposes them in the CUDA build only). Plain C++: no CUDA headers.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "../exl2/format.h"

namespace laminate {

// The EXL2 kernels on a repacked view: activation rounding, then the decode kernel or the
// tensor-core kernel. Fills y [m, n], xq [m, k] and scale [m, segments].
void cuda_exl2_matmul_check(const Exl2View& w, int64_t n, int64_t k, const float* x, int m, bool tensor_cores, float* y,
                            int8_t* xq, float* scale);
// y [m, n] = x [m, k] W^T, W [n, k] of dtype F32, F16 or BF16.
void cuda_dense_matmul_check(const void* w, DType dtype, int64_t n, int64_t k, const float* x, int m, bool tensor_cores,
                             float* y);
void cuda_top_k_check(const float* logits, int rows, int vocab, int k, float* values, int32_t* indices);
void cuda_softmax_check(float* x, int rows, int n);
// Device-to-device copy bandwidth in bytes per second (read plus written), over `repeats`
// copies of `bytes` on device `device`: the memory limit the benchmarks compare with.
double cuda_copy_bandwidth(int device, size_t bytes, int repeats);

}  // namespace laminate
