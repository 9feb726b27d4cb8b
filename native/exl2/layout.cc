// Exact EXL2 dequantization (for export and checks): every product rounded to fp16 as the
// format defines. Also the stored layout's conversion to the kernels' quad layout.
#include <cmath>

#include "../core/dtype.h"
#include "format.h"

namespace laminate {

// Row r of a segment of the stored layout, column n: bits [b * r, b * r + b) of the
// column's stream, which starts at the segment's first qrow.
static uint32_t stored_code(const Exl2View& w, const Exl2Group& seg, int64_t n, int r) {
  const int b = seg.bits;
  const int64_t bit = static_cast<int64_t>(b) * r;
  const uint32_t* word = w.q_weight + (n / 32) * w.block_stride + (seg.qrow_start + bit / 32) * w.row_stride + n % 32;
  const int shift = static_cast<int>(bit % 32);
  uint32_t code = word[0] >> shift;
  if (shift + b > 32) code |= word[w.row_stride] << (32 - shift);
  return code & ((1u << b) - 1u);
}

void exl2_dequantize(const Exl2View& w, int64_t n_out, int64_t k, float* out) {
  for (const Exl2Group& seg : w.groups) {
    const int z = 1 << (seg.bits - 1);
    for (int64_t n = 0; n < n_out; n++) {
      const uint32_t s = (w.q_scale[static_cast<int64_t>(seg.group) * (w.np / 8) + n / 8] >> (4 * (n % 8))) & 15u;
      const float sc = w.scale_table[seg.group * 16 + s];
      for (int r = 0; r < seg.rows; r++) {
        const uint32_t code = stored_code(w, seg, n, r);
        out[n * k + w.perm[seg.row_start + r]] = round_to_f16(static_cast<float>(static_cast<int>(code) - z) * sc);
      }
    }
  }
}

void exl2_repack(Exl2View& w) {
  auto blocked = std::make_shared<std::vector<uint32_t>>(static_cast<size_t>(w.qrows * w.np), 0u);
  uint32_t codes[32];
  for (const Exl2Group& seg : w.groups) {
    const int b = seg.bits, rpc = exl2_chunk_rows(b), wpc = exl2_chunk_words(b);
    const int slots = exl2_quad_slots(b), spare = exl2_quad_spare(b), main = wpc * slots;
    const uint32_t mask = (1u << b) - 1u;
    for (int64_t qrow = seg.qrow_start; qrow < seg.qrow_start + static_cast<int64_t>(seg.rows) * b / 32; qrow += wpc)
      for (int64_t n = 0; n < w.np; n++) {
        // the chunk's codes: a bit stream over wpc words of the stored layout
        const uint32_t* in = w.q_weight + (n / 32) * w.block_stride + qrow * w.row_stride + n % 32;
        uint64_t buffer = 0;
        int have = 0, next = 0;
        for (int r = 0; r < rpc; r++) {
          if (have < b) {
            buffer |= static_cast<uint64_t>(in[next++ * w.row_stride]) << have;
            have += 32;
          }
          codes[r] = static_cast<uint32_t>(buffer) & mask;
          buffer >>= b;
          have -= b;
        }
        uint32_t* out = blocked->data() + (n / 32) * w.qrows * 32 + qrow * 32 + n % 32;
        for (int p = 0; p < rpc / 4; p++) {
          const uint32_t* quad = codes + 4 * p;
          if (p < main) {
            const uint32_t bytes = quad[0] | quad[1] << 8 | quad[2] << 16 | quad[3] << 24;
            out[(p / slots) * 32] |= bytes << ((p % slots) * b);
            continue;
          }
          for (int i = 0; i < b; i++) {
            const int t = (p - main) * b + i;
            uint32_t bits = 0;
            for (int k = 0; k < 4; k++) bits |= ((quad[k] >> i) & 1u) << (8 * k);
            out[(t / spare) * 32] |= bits << (slots * b + t % spare);
          }
        }
      }
  }
  w.repacked = blocked;
  w.q_weight = blocked->data();
  w.row_stride = 32;
  w.block_stride = 32 * w.qrows;
}

}  // namespace laminate
