// EXL2 (ExLlamaV2) quantized weights, kept packed as stored: per group of input rows a bit
// width (8, 6, 5, 4, 3 or 2), per group and output column a 4-bit scale code, per group an
// fp16 maximum scale, and an input-channel permutation.
//
// The matmul works on the packed codes directly: within a group, sum x_perm[j] * (q - z)
// per output column, then multiply by the column's scale; activations are permuted once
// per call. One implementation per instruction set, from matmul_exl2_impl.inc.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace laminate {

struct Exl2Group {
  int bits = 0;
  int row_start = 0;   // first stored row
  int rows = 0;
  int qrow_start = 0;  // first row of q_weight words
};

struct Exl2View {
  // The word of qrow r for output column n is q_weight[(n / 32) * block_stride + r * row_stride + n % 32].
  // As stored: row_stride = np, block_stride = 32. The engine repacks to row_stride = 32,
  // block_stride = 32 * qrows, so that the qrows of 32 columns are one sequential stream.
  const uint32_t* q_weight = nullptr;
  int64_t row_stride = 0;
  int64_t block_stride = 32;
  std::shared_ptr<std::vector<uint32_t>> repacked;  // owns q_weight when repacked
  const uint32_t* q_scale = nullptr;   // [G, np / 8]
  int64_t np = 0;                      // stored output columns (a multiple of 32)
  int64_t qrows = 0;                   // rows of q_weight
  std::vector<Exl2Group> groups;
  std::vector<float> group_m;          // fp16(q_scale_max[g] / 256), as float
  std::vector<int32_t> perm;           // stored row j holds input channel perm[j]
};

// Y[r, n] = sum_j xp[r, j] * w(j, n) for n in [n0, n1) and r < m, where xp holds the
// activations already in stored-row order (xp[r, j] = x[r, perm[j]]).
using MatmulExl2Fn = void (*)(const Exl2View& w, const float* xp, int m, int64_t ldx, float* y, int64_t ldy,
                              int64_t n0, int64_t n1);

void matmul_exl2_scalar(const Exl2View& w, const float* xp, int m, int64_t ldx, float* y, int64_t ldy, int64_t n0,
                        int64_t n1);
void matmul_exl2_avx2(const Exl2View& w, const float* xp, int m, int64_t ldx, float* y, int64_t ldy, int64_t n0,
                      int64_t n1);
void matmul_exl2_avx512(const Exl2View& w, const float* xp, int m, int64_t ldx, float* y, int64_t ldy, int64_t n0,
                        int64_t n1);

// Rewrites the view's codes into 32-column blocks (see Exl2View), in memory it owns.
void exl2_repack(Exl2View& w);

// The dequantized weight, exactly as the format defines it (fp16 roundings included):
// out[n * K + i] for output column n < N and input channel i < K.
void exl2_dequantize(const Exl2View& w, int64_t n_out, int64_t k, float* out);

}  // namespace laminate
