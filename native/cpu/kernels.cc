#include "kernels.h"

#include <cmath>

#include "../core/vector_clones.h"

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

// q . k in eight running sums (a fixed order, so that the compiler may vectorize it and
// every machine sums alike).
static inline float dot8(const float* q, const float* k, int n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int d = 0;
  for (; d + 8 <= n; d += 8)
    for (int i = 0; i < 8; i++) s[i] += q[d + i] * k[d + i];
  for (; d < n; d++) s[d % 8] += q[d] * k[d];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

LAMINATE_VECTOR_CLONES
void attention_head(const float* q, int head_dim, float scale, KvCache& cache, const std::vector<int>& pages,
                    int layer, int kv_head, int lo, int hi, float* scores, float* out) {
  const int ps = cache.page_size();
  // scores = q . k_j * scale, with the running maximum
  float max_score = -INFINITY;
  for (int j = lo; j < hi; j++) {
    const float* k = cache.keys(pages[j / ps], layer, kv_head) + static_cast<int64_t>(j % ps) * head_dim;
    float s = dot8(q, k, head_dim);
    s *= scale;
    scores[j - lo] = s;
    if (s > max_score) max_score = s;
  }
  // softmax
  float total = 0.0f;
  for (int j = lo; j < hi; j++) {
    const float e = std::exp(scores[j - lo] - max_score);
    scores[j - lo] = e;
    total += e;
  }
  const float inv = 1.0f / total;
  // out = sum_j p_j v_j
  for (int d = 0; d < head_dim; d++) out[d] = 0.0f;
  for (int j = lo; j < hi; j++) {
    const float p = scores[j - lo] * inv;
    const float* v = cache.values(pages[j / ps], layer, kv_head) + static_cast<int64_t>(j % ps) * head_dim;
    for (int d = 0; d < head_dim; d++) out[d] += p * v[d];
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
