#include "gptq.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <string>

#include "../core/dtype.h"
#include "../core/error.h"
#include "../core/vector_clones.h"

namespace laminate {

namespace {

constexpr int64_t kColumnChunk = 64;  // output columns per task
constexpr int kScaleSteps = 97;       // scale factors 0.70 .. 1.20 tried per group

// Round half to even for |x| < 2^22, as nearbyint in the default rounding mode, without a
// library call (so that loops over it vectorize).
inline float round_even(float x) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
  return (x + magic) - magic;
}

// |e|^3.5, the converter's error norm.
inline float norm35(float e) {
  e = std::fabs(e);
  return e * e * e * std::sqrt(e);
}

// The two loops that take GPTQ's time.

// Rows [r0, r1) of wt (n columns), columns [c0, c1): wt[r2] -= sum over r in [a, b) of
// u[r, r2] * err[r - a] (u: k x k, err: rows of n).
LAMINATE_VECTOR_CLONES void subtract_updates(float* wt, int64_t n, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                                             const float* u, int64_t k, const float* err, int64_t a, int64_t b) {
  for (int64_t r2 = r0; r2 < r1; r2++) {
    float* row2 = wt + r2 * n;
    for (int64_t r = a; r < b; r++) {
      const float f = u[r * k + r2];
      const float* e = err + (r - a) * n;
      for (int64_t c = c0; c < c1; c++) row2[c] -= f * e[c];
    }
  }
}

// acc[c - c0] += |round(x / s) * s - x|^3.5 over rows [a, b) of wt, codes clamped to [lo, hi]
// (inv: 1 / s per column of the chunk, 0 where s is 0).
LAMINATE_VECTOR_CLONES void scale_errors(const float* wt, int64_t n, int64_t a, int64_t b, int64_t c0, int64_t c1,
                                         const float* s, const float* inv, float lo, float hi, float* acc) {
  for (int64_t r = a; r < b; r++) {
    const float* row = wt + r * n;
    for (int64_t c = c0; c < c1; c++) {
      const float x = row[c];
      const float v = std::min(std::max(x * inv[c - c0], lo - 1), hi + 1);
      const float q = std::min(std::max(round_even(v), lo), hi);
      acc[c - c0] += norm35(q * s[c] - x);
    }
  }
}

int tasks_of(int64_t count, int64_t chunk) { return static_cast<int>((count + chunk - 1) / chunk); }

// x . y over n doubles, in four running sums (a fixed order: the same on every machine).
double dot(const double* x, const double* y, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += x[i] * y[i];
    s1 += x[i + 1] * y[i + 1];
    s2 += x[i + 2] * y[i + 2];
    s3 += x[i + 3] * y[i + 3];
  }
  for (; i < n; i++) s0 += x[i] * y[i];
  return (s0 + s1) + (s2 + s3);
}

// Lower Cholesky factor of a (k x k, row-major) in place, by panels of 64 columns: a panel's
// own rows one after another, then every row below it in parallel. False if a pivot is not
// positive.
bool cholesky(std::vector<double>& a, int64_t k, ThreadPool& pool, const std::atomic<int32_t>* abort) {
  const int64_t panel = 64, rows_per_task = 16;
  double* l = a.data();
  // Columns [j0, j1) of row i, from the finished columns before them.
  auto solve_row = [&](int64_t i, int64_t j0, int64_t j1) {
    double* ri = l + i * k;
    for (int64_t j = j0; j < j1; j++) {
      const double* rj = l + j * k;
      ri[j] = (ri[j] - dot(ri, rj, j)) / rj[j];
    }
  };
  for (int64_t j0 = 0; j0 < k; j0 += panel) {
    throw_if_aborted(abort);
    const int64_t j1 = std::min(k, j0 + panel);
    for (int64_t j = j0; j < j1; j++) {
      double* rj = l + j * k;
      solve_row(j, j0, j);
      const double d = rj[j] - dot(rj, rj, j);
      if (!(d > 0) || !std::isfinite(d)) return false;
      rj[j] = std::sqrt(d);
    }
    const int64_t below = k - j1;
    pool.parallel_for(tasks_of(below, rows_per_task), [&](int t, int) {
      const int64_t i1 = std::min(k, j1 + (t + 1) * rows_per_task);
      for (int64_t i = j1 + t * rows_per_task; i < i1; i++) solve_row(i, j0, j1);
    });
  }
  return true;
}

// m = l^-1 for a lower-triangular l (row-major, upper part ignored); m's upper part is zero.
void invert_lower(const std::vector<double>& l, int64_t k, std::vector<double>& m, ThreadPool& pool) {
  m.assign(static_cast<size_t>(k * k), 0.0);
  const int64_t chunk = 64;
  pool.parallel_for(tasks_of(k, chunk), [&](int t, int) {
    const int64_t c0 = t * chunk, c1 = std::min(k, c0 + chunk), w = c1 - c0;
    std::vector<double> acc(w);
    for (int64_t i = c0; i < k; i++) {
      const double* li = l.data() + i * k;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t p = c0; p < i; p++) {
        const double f = li[p];
        const double* mp = m.data() + p * k + c0;
        for (int64_t c = 0; c < w; c++) acc[c] += f * mp[c];
      }
      double* mi = m.data() + i * k + c0;
      const int64_t below = std::min(c1, i) - c0;  // columns left of the diagonal
      for (int64_t c = 0; c < below; c++) mi[c] = -acc[c] / li[i];
      if (i < c1) mi[i - c0] = 1.0 / li[i];
    }
  });
}

}  // namespace

void check_layout(const std::vector<QuantGroup>& groups, int64_t k) {
  static const int order[] = {8, 6, 5, 4, 3, 2};
  int rank = 0;
  int64_t rows = 0;
  if (groups.empty()) throw Error("EXL2 layout: no groups");
  for (size_t i = 0; i < groups.size(); i++) {
    const QuantGroup& g = groups[i];
    const int r = static_cast<int>(std::find(order, order + 6, g.bits) - order);
    if (r == 6) throw Error("EXL2 layout: group " + std::to_string(i) + " has width " + std::to_string(g.bits) + ", not 8, 6, 5, 4, 3 or 2");
    if (r < rank) throw Error("EXL2 layout: widths must come in the order 8, 6, 5, 4, 3, 2 (group " + std::to_string(i) + ")");
    rank = r;
    if (g.rows <= 0 || g.rows % 32 != 0)
      throw Error("EXL2 layout: group " + std::to_string(i) + " has " + std::to_string(g.rows) + " rows, not a positive multiple of 32");
    rows += g.rows;
  }
  if (rows != k) throw Error("EXL2 layout: groups cover " + std::to_string(rows) + " rows, the layer has " + std::to_string(k) + " inputs");
}

PreparedHessian prepare_hessian(const double* h, int64_t k, ThreadPool& pool, const std::atomic<int32_t>* abort) {
  PreparedHessian out;
  out.k = k;
  // Act-order: input channels by decreasing diagonal (lower channel first among equals).
  out.perm.resize(k);
  std::iota(out.perm.begin(), out.perm.end(), 0);
  std::stable_sort(out.perm.begin(), out.perm.end(), [&](int32_t a, int32_t b) { return h[a * k + a] > h[b * k + b]; });
  double mean = 0;
  for (int64_t i = 0; i < k; i++) {
    if (!std::isfinite(h[i * k + i])) throw Error("Hessian: a diagonal entry is not finite (the calibration activations overflow)");
    mean += h[i * k + i];
  }
  mean /= static_cast<double>(k);
  const double damp = std::max(0.12 * mean, 1e-5);
  // The upper Cholesky factor U of H^-1 (H^-1 = U^T U) is J L^-1 J, where L is the lower
  // Cholesky factor of J H J and J reverses the order: one factorization and one
  // triangular inverse.
  std::vector<double> a(static_cast<size_t>(k * k)), m;
  for (int attempt = 1; attempt <= 10; attempt++) {
    pool.parallel_for(static_cast<int>(k), [&](int i, int) {
      const int64_t pi = out.perm[k - 1 - i];
      for (int64_t j = 0; j <= i; j++) a[i * k + j] = h[pi * k + out.perm[k - 1 - j]];
      a[i * k + i] += damp * attempt;
    });
    if (!cholesky(a, k, pool, abort)) continue;
    throw_if_aborted(abort);
    invert_lower(a, k, m, pool);
    out.u.assign(static_cast<size_t>(k * k), 0.0f);
    bool finite = true;
    for (int64_t i = 0; i < k && finite; i++)
      for (int64_t j = i; j < k; j++) {
        const double v = m[(k - 1 - i) * k + (k - 1 - j)];
        if (!std::isfinite(v)) finite = false;
        out.u[i * k + j] = static_cast<float>(v);
      }
    if (!finite) continue;
    out.damp = damp * attempt;
    return out;
  }
  throw Error("Hessian: not positive definite even with ten times the damping");
}

QuantizedLinear gptq_quantize(const DenseView& w, const PreparedHessian& h, const std::vector<QuantGroup>& groups,
                              bool error_feedback, ThreadPool& pool, const std::atomic<int32_t>* abort) {
  const int64_t k = w.cols, n = w.rows;
  if (h.k != k) throw Error("GPTQ: the Hessian is for " + std::to_string(h.k) + " inputs, the weight has " + std::to_string(k));
  check_layout(groups, k);
  QuantizedLinear out;
  out.k = k;
  out.n = n;
  out.groups = groups;
  out.perm = h.perm;
  out.codes.assign(static_cast<size_t>(k * n), 0);
  out.scale_codes.assign(groups.size() * n, 0);
  out.scale_max.assign(groups.size(), 0);
  out.weight.assign(static_cast<size_t>(k * n), 0);

  // W^T in stored-row order: wt[j, c] = W[c, perm[j]].
  std::vector<float> wt(static_cast<size_t>(k * n));
  std::atomic<bool> finite{true};
  pool.parallel_for(tasks_of(n, kColumnChunk), [&](int t, int) {
    const int64_t c1 = std::min(n, (t + 1) * kColumnChunk);
    for (int64_t c = t * kColumnChunk; c < c1; c++)
      for (int64_t j = 0; j < k; j++) {
        const float v = load_as_f32(w.data, w.dtype, static_cast<size_t>(c * k + h.perm[j]));
        if (!std::isfinite(v)) finite = false;
        wt[j * n + c] = v;
      }
  });
  if (!finite) throw Error("GPTQ: the weight holds a value that is not finite");
  const float* u = h.u.data();
  const int chunks = tasks_of(n, kColumnChunk);
  std::vector<float> base(n), scale(n), err, step_scale(static_cast<size_t>(kScaleSteps) * n);
  std::vector<int> code(n);
  std::vector<double> partial(static_cast<size_t>(chunks) * kScaleSteps);

  int64_t a = 0;
  for (size_t g = 0; g < groups.size(); g++) {
    throw_if_aborted(abort);
    const int bits = groups[g].bits;
    const int64_t b = a + groups[g].rows, rows = b - a;
    const int maxq = (1 << bits) - 1, zero = 1 << (bits - 1);

    // Scale search on the group's current rows: each column's scale is (code / 16)^2 of the
    // group maximum, code 1..16 from the column's range; then the maximum is scaled by the
    // factor p in [0.70, 1.20] whose exact fp16 scales give the least sum of |error|^3.5.
    pool.parallel_for(chunks, [&](int t, int) {
      const int64_t c0 = t * kColumnChunk, c1 = std::min(n, c0 + kColumnChunk);
      for (int64_t c = c0; c < c1; c++) {
        float mx = 0;
        for (int64_t r = a; r < b; r++) mx = std::max(mx, std::fabs(wt[r * n + c]));
        base[c] = (mx + 1e-12f) / (static_cast<float>(maxq) / 2);
      }
    });
    const float top = *std::max_element(base.begin(), base.end());
    for (int64_t c = 0; c < n; c++)
      code[c] = std::clamp(static_cast<int>(std::nearbyint(16.0f * std::sqrt(base[c] / top))), 1, 16);
    auto group_max = [&](int step) {
      const float p = 0.70f + static_cast<float>(step) * (0.5f / 96.0f);
      return std::min(round_to_f16(top * p), 65504.0f);
    };
    auto scales_for = [&](float max_scale, float* out_scale) {
      const float m = round_to_f16(max_scale / 256.0f);
      for (int64_t c = 0; c < n; c++) out_scale[c] = round_to_f16(static_cast<float>(code[c] * code[c]) * m);
    };
    pool.parallel_for(kScaleSteps, [&](int step, int) { scales_for(group_max(step), step_scale.data() + step * n); });
    pool.parallel_for(chunks, [&](int t, int) {
      const int64_t c0 = t * kColumnChunk, c1 = std::min(n, c0 + kColumnChunk);
      const float lo = static_cast<float>(-zero), hi = static_cast<float>(maxq - zero);
      float inv[kColumnChunk];
      for (int step = 0; step < kScaleSteps; step++) {
        const float* s = step_scale.data() + step * n;
        for (int64_t c = c0; c < c1; c++) inv[c - c0] = s[c] > 0 ? 1.0f / s[c] : 0.0f;
        float acc[kColumnChunk] = {};
        scale_errors(wt.data(), n, a, b, c0, c1, s, inv, lo, hi, acc);
        double sum = 0;
        for (int64_t c = c0; c < c1; c++) sum += acc[c - c0];
        partial[static_cast<size_t>(t) * kScaleSteps + step] = sum;
      }
    });
    int best = 0;
    double best_err = 0;
    for (int step = 0; step < kScaleSteps; step++) {
      double sum = 0;
      for (int t = 0; t < chunks; t++) sum += partial[static_cast<size_t>(t) * kScaleSteps + step];
      if (step == 0 || sum < best_err) best = step, best_err = sum;
    }
    const float max_scale = group_max(best);
    out.scale_max[g] = f32_to_f16_bits(max_scale);
    scales_for(max_scale, scale.data());
    for (int64_t c = 0; c < n; c++) out.scale_codes[g * n + c] = static_cast<uint8_t>(code[c] - 1);

    // The column loop: round each row, push its error onto the group's later rows; then
    // onto all rows after the group at once.
    err.assign(static_cast<size_t>(rows * n), 0.0f);
    pool.parallel_for(chunks, [&](int t, int) {
      const int64_t c0 = t * kColumnChunk, c1 = std::min(n, c0 + kColumnChunk);
      for (int64_t r = a; r < b; r++) {
        float* row = wt.data() + r * n;
        float* e = err.data() + (r - a) * n;
        for (int64_t c = c0; c < c1; c++) {
          const float sc = scale[c];
          const float v = sc > 0 ? std::min(std::max(row[c] / sc, static_cast<float>(-zero - 1)), static_cast<float>(maxq - zero + 1)) : 0.0f;
          const int q = std::clamp(static_cast<int>(round_even(v)) + zero, 0, maxq);
          const uint16_t d = f32_to_f16_bits(static_cast<float>(q - zero) * sc);
          out.codes[r * n + c] = static_cast<uint8_t>(q);
          out.weight[c * k + h.perm[r]] = d;
          e[c] = (row[c] - f16_to_f32(d)) / u[r * k + r];
        }
        if (error_feedback) subtract_updates(wt.data(), n, r + 1, b, c0, c1, u, k, e, r, r + 1);
      }
    });
    if (error_feedback && b < k) {
      const int64_t row_block = 32, col_block = 256;
      const int row_tasks = tasks_of(k - b, row_block), col_tasks = tasks_of(n, col_block);
      pool.parallel_for(row_tasks * col_tasks, [&](int t, int) {
        const int64_t r0 = b + (t / col_tasks) * row_block, r1 = std::min(k, r0 + row_block);
        const int64_t c0 = (t % col_tasks) * col_block, c1 = std::min(n, c0 + col_block);
        subtract_updates(wt.data(), n, r0, r1, c0, c1, u, k, err.data(), a, b);
      });
    }
    a = b;
  }
  return out;
}

}  // namespace laminate
