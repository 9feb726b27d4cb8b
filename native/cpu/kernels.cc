#include "kernels.h"

#include <cmath>


namespace laminate {

void rmsnorm_row(const float* x, const float* weight, float eps, int n, float* y) {
  double ss = 0.0;
  for (int i = 0; i < n; i++) ss += static_cast<double>(x[i]) * x[i];
  const float r = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; i++) y[i] = x[i] * r * weight[i];
}

void rope_row(float* x, int heads, int head_dim, const float* cos_sin) {
  const int half = head_dim / 2;
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  for (int h = 0; h < heads; h++) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; i++) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void embed_row(const DenseView& table, int32_t token, float* x) {
  const int64_t n = table.cols;
  const int64_t base = static_cast<int64_t>(token) * n;
  for (int64_t i = 0; i < n; i++) x[i] = load_as_f32(table.data, table.dtype, base + i);
}

}  // namespace laminate
