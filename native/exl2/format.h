// EXL2 (ExLlamaV2) quantized layers: their one home in native code. The view of a layer's
// stored tensors (per group of input rows a bit width, 8, 6, 5, 4, 3 or 2; per group and
// output column a 4-bit scale code; per group an fp16 maximum scale; an input-channel
// permutation), its validation at load (loader.h), the exact dequantization of the format,
// and the conversion of the stored codes to the quad layout the kernels read. The kernels
// themselves live with their device (cpu/matmul_exl2*, cuda/matmul_exl2.cu).
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

// Rewrites the view's codes into 32-column blocks in the quad layout (see Exl2View), in
// memory it owns.
void exl2_repack(Exl2View& w);

// The dequantized weight, exactly as the format defines it (fp16 roundings included), from
// a view in the stored layout: out[n * K + i] for output column n < N and input channel i < K.
void exl2_dequantize(const Exl2View& w, int64_t n_out, int64_t k, float* out);

}  // namespace laminate
