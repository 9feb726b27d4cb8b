#include "loader.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include "../core/error.h"

namespace laminate {

static std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Exl2View load_exl2(const RawTensor& qw, const RawTensor& inv, const RawTensor& qs, const RawTensor& qm,
                 const RawTensor& qg, int64_t n, int64_t k) {
  Exl2View v;
  auto fail = [&](const RawTensor& t, const std::string& what) { throw Error(t.where + ": " + what); };
  auto need_dtype = [&](const RawTensor& t, std::initializer_list<DType> ok) {
    for (DType d : ok)
      if (t.dtype == d) return;
    fail(t, std::string("has dtype ") + dtype_name(t.dtype) + ", not an EXL2 type for this tensor");
  };
  need_dtype(qw, {DType::I32});
  need_dtype(inv, {DType::I32, DType::I16});
  need_dtype(qs, {DType::I32});
  need_dtype(qm, {DType::F16});
  need_dtype(qg, {DType::I16});
  const int64_t np = (n + 31) / 32 * 32;
  if (qw.shape.size() != 2 || qw.shape[1] != np) fail(qw, "shape " + shape_string(qw.shape) + " does not have " + std::to_string(np) + " (out_features rounded up to 32) columns");
  const int64_t qr = qw.shape[0];
  if (qg.shape.size() != 1 || qg.shape[0] < 2 || qg.shape[0] % 2 != 0) fail(qg, "must hold (bits, first qrow) pairs");
  const int64_t groups = qg.shape[0] / 2;
  if (qs.shape != std::vector<int64_t>{groups, np / 8}) fail(qs, "shape " + shape_string(qs.shape) + ", expected " + shape_string({groups, np / 8}));
  if (qm.shape != std::vector<int64_t>{groups}) fail(qm, "shape " + shape_string(qm.shape) + ", expected [" + std::to_string(groups) + "]");
  if (inv.shape != std::vector<int64_t>{k}) fail(inv, "shape " + shape_string(inv.shape) + ", expected [" + std::to_string(k) + "] (in_features)");
  if (k >= 65536) fail(qw, "in_features must be below 65536");

  // Group table: widths 8, 6, 5, 4, 3, 2 in that order, qrow starts increasing from 0,
  // whole chunks of rows, rows adding up to in_features.
  const int16_t* table = static_cast<const int16_t*>(qg.data);
  static const int kOrder[] = {8, 6, 5, 4, 3, 2};
  auto rank = [&](int bits) {
    for (int i = 0; i < 6; i++)
      if (kOrder[i] == bits) return i;
    return -1;
  };
  int row = 0, last_rank = 0;
  for (int64_t g = 0; g < groups; g++) {
    int16_t bits, start;
    std::memcpy(&bits, table + 2 * g, 2);
    std::memcpy(&start, table + 2 * g + 1, 2);
    const int64_t end = g + 1 < groups ? [&] { int16_t e; std::memcpy(&e, table + 2 * g + 3, 2); return static_cast<int64_t>(e); }() : qr;
    const std::string at = "group " + std::to_string(g);
    if (rank(bits) < 0) fail(qg, at + " has width " + std::to_string(bits) + " (allowed: 8, 6, 5, 4, 3, 2)");
    if (rank(bits) < last_rank) fail(qg, at + ": widths must come in the order 8, 6, 5, 4, 3, 2");
    last_rank = rank(bits);
    if ((g == 0 && start != 0) || start < 0 || end <= start || end > qr) fail(qg, at + " has qrows [" + std::to_string(start) + ", " + std::to_string(end) + "), not ordered within [0, " + std::to_string(qr) + ")");
    const int64_t bits_total = (end - start) * 32;
    const int chunk = exl2_chunk_rows(bits);
    if (bits_total % bits != 0 || (bits_total / bits) % chunk != 0) fail(qg, at + ": its qrows do not hold a whole number of " + std::to_string(chunk) + "-row chunks of " + std::to_string(bits) + "-bit codes");
    const int rows = static_cast<int>(bits_total / bits);
    // segments of at most kExl2SegmentRows rows (a multiple of every chunk)
    for (int r = 0; r < rows; r += kExl2SegmentRows)
      v.groups.push_back({bits, row + r, std::min(kExl2SegmentRows, rows - r), static_cast<int>(start + static_cast<int64_t>(r) * bits / 32), static_cast<int>(g)});
    row += rows;
    if (row > k) break;
  }
  if (row != k) fail(qg, "groups cover " + std::to_string(row) + " rows, in_features is " + std::to_string(k));

  // q_invperm must be a permutation; the kernels use its inverse.
  v.perm.assign(k, -1);
  for (int64_t i = 0; i < k; i++) {
    const int64_t j = inv.dtype == DType::I32 ? static_cast<const int32_t*>(inv.data)[i] : static_cast<const int16_t*>(inv.data)[i];
    if (j < 0 || j >= k || v.perm[j] >= 0) fail(inv, "is not a permutation of 0.." + std::to_string(k - 1) + " (entry " + std::to_string(i) + ")");
    v.perm[j] = static_cast<int32_t>(i);
  }
  // Each group's maximum scale: the converter stores fp16(M * p) for the group's largest
  // column scale M > 0 and a factor p in [0.7, 1.2], so a finite number, not negative (0 when
  // the group's weights are all zero). NaN or an infinity would make every output NaN, and a
  // negative one would flip the sign of the group's weights.
  for (int64_t g = 0; g < groups; g++) {
    const float max = load_as_f32(qm.data, DType::F16, g);
    if (!std::isfinite(max) || max < 0.0f) {
      char value[32];
      std::snprintf(value, sizeof value, "%g", static_cast<double>(max));
      fail(qm, "group " + std::to_string(g) + " has maximum scale " + value + "; it must be a finite number, not negative");
    }
    const float m = round_to_f16(max / 256.0f);
    for (int s = 0; s < 16; s++) v.scale_table.push_back(round_to_f16(static_cast<float>((s + 1) * (s + 1)) * m));
  }
  v.q_weight = static_cast<const uint32_t*>(qw.data);
  v.row_stride = np;
  v.block_stride = 32;
  v.q_scale = static_cast<const uint32_t*>(qs.data);
  v.np = np;
  v.qrows = qr;
  return v;
}


}  // namespace laminate
