// The rounding of activations for the EXL2 kernels: permuted into stored-row order and
// rounded to int8 with one scale per segment.
#include <cmath>

#include "matmul_exl2.h"

namespace laminate {

void exl2_quantize_activations(const Exl2View& w, const float* x, int m, int64_t ldx, int8_t* q, float* scale,
                               int32_t* sum) {
  const int64_t k = static_cast<int64_t>(w.perm.size()), segments = static_cast<int64_t>(w.groups.size());
  for (int r = 0; r < m; r++) {
    const float* xr = x + r * ldx;
    int8_t* qr = q + r * k;
    for (int64_t s = 0; s < segments; s++) {
      const Exl2Group& seg = w.groups[s];
      const int32_t* perm = w.perm.data() + seg.row_start;
      float amax = 0.0f;
      bool finite = true;
      for (int j = 0; j < seg.rows; j++) {
        const float v = xr[perm[j]];
        finite = finite && std::isfinite(v);
        amax = std::fmax(amax, std::fabs(v));
      }
      int32_t total = 0;
      float d = amax / 127.0f;
      if (!finite) {
        d = std::nanf("");  // the outputs become NaN, as they would in floating point
        for (int j = 0; j < seg.rows; j++) qr[seg.row_start + j] = 0;
      } else {
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < seg.rows; j++) {
          // round to nearest even: adding 1.5 * 2^23 leaves the integer part in the mantissa
          const int v = static_cast<int>((xr[perm[j]] * inv + 12582912.0f) - 12582912.0f);
          qr[seg.row_start + j] = static_cast<int8_t>(v);
          total += v;
        }
      }
      scale[r * segments + s] = d;
      sum[r * segments + s] = total;
    }
  }
}

}  // namespace laminate
