// Exact EXL2 dequantization (for export and checks): every product rounded to fp16 as the
// format defines.
#include "../core/dtype.h"
#include "matmul_exl2.h"

namespace laminate {

static float fp16(float x) { return f16_to_f32(f32_to_f16_bits(x)); }

void exl2_dequantize(const Exl2View& w, int64_t n_out, int64_t k, float* out) {
  for (size_t g = 0; g < w.groups.size(); g++) {
    const Exl2Group& grp = w.groups[g];
    const int b = grp.bits;
    const uint32_t mask = (1u << b) - 1u;
    const int z = 1 << (b - 1);
    for (int64_t n = 0; n < n_out; n++) {
      const uint32_t s = (w.q_scale[static_cast<int64_t>(g) * (w.np / 8) + n / 8] >> (4 * (n % 8))) & 15u;
      const float sc = fp16(static_cast<float>((s + 1) * (s + 1)) * w.group_m[g]);
      for (int r = 0; r < grp.rows; r++) {
        // bits [b * r, b * r + b) of this column's stream, which starts at the group's first qrow
        const int64_t bit = static_cast<int64_t>(b) * r;
        const uint32_t* word = w.q_weight + (n / 32) * w.block_stride + (grp.qrow_start + bit / 32) * w.row_stride + n % 32;
        const int shift = static_cast<int>(bit % 32);
        uint32_t code = word[0] >> shift;
        if (shift + b > 32) code |= word[w.row_stride] << (32 - shift);
        code &= mask;
        const int j = grp.row_start + r;
        out[n * k + w.perm[j]] = fp16(static_cast<float>(static_cast<int>(code) - z) * sc);
      }
    }
  }
}

void exl2_repack(Exl2View& w) {
  auto blocked = std::make_shared<std::vector<uint32_t>>(static_cast<size_t>(w.qrows * w.np));
  for (int64_t b = 0; b < w.np / 32; b++)
    for (int64_t r = 0; r < w.qrows; r++)
      for (int64_t c = 0; c < 32; c++)
        (*blocked)[b * w.qrows * 32 + r * 32 + c] = w.q_weight[b * w.block_stride + r * w.row_stride + c];
  w.repacked = blocked;
  w.q_weight = blocked->data();
  w.row_stride = 32;
  w.block_stride = 32 * w.qrows;
}

}  // namespace laminate
