// GPTQ for EXL2 layers (the converter's per-layer quantizer): act-order from a Hessian's
// diagonal, the per-group scale search, and the column loop with error feedback, over an
// EXL2 group layout. Everything runs on the CPU over a thread pool; the result does not
// depend on the number of threads.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "../core/thread_pool.h"
#include "../cpu/matmul_dense.h"

namespace laminate {

// A run of consecutive stored rows of one width (8, 6, 5, 4, 3 or 2 bits), one scale
// group. Layouts come in stored order.
struct QuantGroup {
  int bits = 0;
  int rows = 0;
};

// A Hessian made ready for GPTQ: the act-order permutation (stored row j holds input channel
// perm[j], channels by decreasing diagonal) and u, the upper Cholesky factor of the damped
// inverse in permuted order ([k, k] row-major; only the upper triangle is meaningful).
struct PreparedHessian {
  int64_t k = 0;
  std::vector<int32_t> perm;
  std::vector<float> u;
  double damp = 0;  // what was added to the diagonal
};

// h: [k, k] row-major, symmetric (sums of x^T x). Throws Error if no damping up to ten
// times the first makes it positive definite; Aborted when *abort is set.
PreparedHessian prepare_hessian(const double* h, int64_t k, ThreadPool& pool, const std::atomic<int32_t>* abort = nullptr);

// One quantized layer: codes in stored-row order, per group and column scale codes, per
// group fp16 maximum scales, and the dequantized weight exactly as a loader computes it.
struct QuantizedLinear {
  int64_t k = 0, n = 0;
  std::vector<QuantGroup> groups;
  std::vector<int32_t> perm;
  std::vector<uint8_t> codes;        // [k, n]: stored row j, output column n
  std::vector<uint8_t> scale_codes;  // [groups, n]: 0..15
  std::vector<uint16_t> scale_max;   // [groups]: fp16 bits
  std::vector<uint16_t> weight;      // [n, k]: fp16 bits of the dequantized weight, channels in input order
};

// Quantizes w ([n, k], output rows) with the layout `groups` (rows adding up to k). With
// error_feedback false, each group is rounded to nearest after its scale search (the
// converter's path for very large heads).
QuantizedLinear gptq_quantize(const DenseView& w, const PreparedHessian& h, const std::vector<QuantGroup>& groups,
                              bool error_feedback, ThreadPool& pool, const std::atomic<int32_t>* abort = nullptr);

// Checks a layout: widths in the stored order 8, 6, 5, 4, 3, 2, rows positive multiples of 32
// adding up to k. Throws Error saying what is wrong.
void check_layout(const std::vector<QuantGroup>& groups, int64_t k);

}  // namespace laminate
