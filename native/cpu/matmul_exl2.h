// EXL2 (ExLlamaV2) quantized weights, kept packed as stored: per group of input rows a bit
// width (8, 6, 5, 4, 3 or 2), per group and output column a 4-bit scale code, per group an
// fp16 maximum scale, and an input-channel permutation.
//
// The matmul works on the packed codes directly, in integers: activations are permuted once
// per call and rounded to int8 with one scale per segment (at most 32 rows of one group);
// within a segment, sum xq[j] * q_j per output column with 8-bit multiply-adds (four codes
// per 32-bit lane), take out the zero point, then multiply by the column's scale and the
// activation scale. One implementation per instruction set, from matmul_exl2_impl.inc.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace laminate {

// A segment of a group: at most kExl2SegmentRows rows share one activation scale.
constexpr int kExl2SegmentRows = 32;
struct Exl2Group {
  int bits = 0;
  int row_start = 0;   // first stored row
  int rows = 0;
  int qrow_start = 0;  // first row of q_weight words
  int group = 0;       // row of q_scale and q_scale_max
};

// Rows per chunk of codes of width b: the fewest rows that fill whole 32-bit words.
constexpr int exl2_chunk_rows(int b) { return b == 8 ? 4 : b == 4 ? 8 : b == 2 || b == 6 ? 16 : 32; }
constexpr int exl2_chunk_words(int b) { return exl2_chunk_rows(b) * b / 32; }

// The quad layout of one column's chunk of b-bit codes (same words, same bits as stored):
// quad p holds the chunk's rows 4p .. 4p + 3, one in each byte of a word. Each byte holds
// quad_slots(b) codes side by side; the quads that do not fit there use the quad_spare(b)
// bits left at the top of every byte, read as one bit stream.
//   p < words * slots: word p / slots, bits [(p % slots) * b, + b) of each byte;
//   else, j = p - words * slots: stream bits [j * b, + b), where stream bit t lies in word
//   t / spare at bit slots * b + t % spare of each byte.
constexpr int exl2_quad_slots(int b) { return 8 / b; }
constexpr int exl2_quad_spare(int b) { return 8 - exl2_quad_slots(b) * b; }

struct Exl2View {
  // The word of qrow r for output column n is q_weight[(n / 32) * block_stride + r * row_stride + n % 32].
  // As stored: row_stride = np, block_stride = 32, and a column's codes are a bit stream,
  // row after row. exl2_repack rewrites them with row_stride = 32 and
  // block_stride = 32 * qrows, so that the qrows of 32 columns are one sequential stream,
  // and each chunk's words in the quad layout below.
  const uint32_t* q_weight = nullptr;
  int64_t row_stride = 0;
  int64_t block_stride = 32;
  std::shared_ptr<std::vector<uint32_t>> repacked;  // owns q_weight when repacked
  const uint32_t* q_scale = nullptr;   // [G, np / 8]
  int64_t np = 0;                      // stored output columns (a multiple of 32)
  int64_t qrows = 0;                   // rows of q_weight
  std::vector<Exl2Group> groups;       // segments, in stored-row order
  // [g * 16 + s]: the column scale of 4-bit code s in group g, fp16((s + 1)^2 * m) with
  // m = fp16(q_scale_max[g] / 256)
  std::vector<float> scale_table;
  std::vector<int32_t> perm;           // stored row j holds input channel perm[j]
};

// Activations for one call, in stored-row order, rounded to int8: row r's stored row j is
// x[r, perm[j]] ~ q[r * ldq + j] * scale[r * segments + s] for j in segment s, and
// sum[r * segments + s] is the sum of the segment's q.
struct Exl2Act {
  const int8_t* q = nullptr;
  int64_t ldq = 0;
  const float* scale = nullptr;
  const int32_t* sum = nullptr;
  int m = 0;
};

// Fills q (m * k), scale and sum (m * segments) from x (m rows, ldx apart).
void exl2_quantize_activations(const Exl2View& w, const float* x, int m, int64_t ldx, int8_t* q, float* scale,
                               int32_t* sum);

// Y[r, n] = sum_j xp[r, j] * w(j, n) for n in [n0, n1) and r < a.m, on a view in the quad layout.
using MatmulExl2Fn = void (*)(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);

void matmul_exl2_scalar(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_avx2(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);
void matmul_exl2_avx512(const Exl2View& w, const Exl2Act& a, float* y, int64_t ldy, int64_t n0, int64_t n1);

// Rewrites the view's codes into 32-column blocks in the quad layout (see Exl2View), in
// memory it owns.
void exl2_repack(Exl2View& w);

// The dequantized weight, exactly as the format defines it (fp16 roundings included), from
// a view in the stored layout: out[n * K + i] for output column n < N and input channel i < K.
void exl2_dequantize(const Exl2View& w, int64_t n_out, int64_t k, float* out);

}  // namespace laminate
