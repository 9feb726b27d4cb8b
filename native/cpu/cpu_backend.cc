#include "cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/dtype.h"
#include "kernels.h"

// The AVX2 and AVX-512 kernel files are built for x86-64 only, the NEON ones for arm64 only
// (binding.gyp and CMakeLists.txt leave the others out); the CPU never reports an
// instruction set of the other architecture, so only kernels that are there are picked.
#if defined(__x86_64__) || defined(_M_X64)
#define LAMINATE_X86_KERNELS 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#define LAMINATE_ARM64_KERNELS 1
#endif

namespace laminate {

// The 8-bit dot-product families differ from their base family only in the EXL2 matmul.
static Isa vector_family(Isa isa) {
  if (isa == Isa::Avx512Vnni) return Isa::Avx512;
  if (isa == Isa::Avx2Vnni) return Isa::Avx2;
  if (isa == Isa::NeonDot) return Isa::Neon;
  return isa;
}

static MatmulDenseFn pick_dense(Isa isa) {
#ifdef LAMINATE_X86_KERNELS
  if (vector_family(isa) == Isa::Avx512) return matmul_dense_avx512;
  if (vector_family(isa) == Isa::Avx2) return matmul_dense_avx2;
#endif
#ifdef LAMINATE_ARM64_KERNELS
  if (vector_family(isa) == Isa::Neon) return matmul_dense_neon;
#endif
  (void)isa;
  return matmul_dense_scalar;
}

static AttentionFn pick_attention(Isa isa) {
#ifdef LAMINATE_X86_KERNELS
  if (vector_family(isa) == Isa::Avx512) return attention_avx512;
  if (vector_family(isa) == Isa::Avx2) return attention_avx2;
#endif
#ifdef LAMINATE_ARM64_KERNELS
  if (vector_family(isa) == Isa::Neon) return attention_neon;
#endif
  (void)isa;
  return attention_scalar;
}

MatmulExl2Fn pick_exl2(Isa isa) {
  switch (isa) {
#ifdef LAMINATE_X86_KERNELS
    case Isa::Avx512: return matmul_exl2_avx512;
    case Isa::Avx512Vnni: return matmul_exl2_avx512vnni;
    case Isa::Avx2: return matmul_exl2_avx2;
    case Isa::Avx2Vnni: return matmul_exl2_avx2vnni;
#endif
#ifdef LAMINATE_ARM64_KERNELS
    case Isa::Neon: return matmul_exl2_neon;
    case Isa::NeonDot: return matmul_exl2_neondot;
#endif
    default: return matmul_exl2_scalar;
  }
}

CpuBackend::CpuBackend(Isa isa, int threads)
    : isa_(isa),
      matmul_dense_(pick_dense(isa)),
      matmul_exl2_(pick_exl2(isa)),
      attention_(pick_attention(isa)),
      pool_(threads),
      scratch_(pool_.size()) {}

float* CpuBackend::buffer(Buffer which, size_t floats) {
  std::vector<float>& b = buffers_[static_cast<int>(which)];
  if (b.size() < floats) b.resize(floats);
  return b.data();
}

bool CpuBackend::begin_step(const StepBatch& batch) {
  batch_ = batch;
  return true;
}

int32_t* CpuBackend::id_buffer(size_t count) {
  if (ids_.size() < count) ids_.resize(count);
  return ids_.data();
}

bool CpuBackend::end_step(const float* logits, int rows, int vocab, float* host, const float* values, const int32_t* ids,
                          int top, float* host_values, int32_t* host_ids) {
  if (rows > 0) std::memcpy(host, logits, static_cast<size_t>(rows) * vocab * sizeof(float));
  if (top > 0) {
    std::memcpy(host_values, values, static_cast<size_t>(top) * sizeof(float));
    std::memcpy(host_ids, ids, static_cast<size_t>(top) * sizeof(int32_t));
  }
  steps_++;
  return true;
}

StepCounts CpuBackend::step_counts() const {
  StepCounts c;
  c.eager = steps_;
  return c;
}

// The weights of one dense prefill block (about half of a core's L2 on current server
// CPUs): they stay in cache while every activation row passes over them.
constexpr int64_t kPrefillBlockBytes = 256 * 1024;

void CpuBackend::linear(const LinearCall* calls, int count, int m) {
  // EXL2 weights read their activations in stored-row order, rounded to int8: convert
  // each input once.
  if (static_cast<int>(exl2_acts_.size()) < count) exl2_acts_.resize(count);
  for (int c = 0; c < count; c++) {
    const LinearWeight& w = *calls[c].weight;
    if (w.format != WeightFormat::Exl2) continue;
    Exl2Scratch& s = exl2_acts_[c];
    const size_t segments = w.exl2.groups.size();
    s.q.resize(static_cast<size_t>(m) * w.cols);
    s.scale.resize(m * segments);
    s.sum.resize(m * segments);
    exl2_quantize_activations(w.exl2, calls[c].x, m, calls[c].ldx, s.q.data(), s.scale.data(), s.sum.data());
    s.act.q = s.q.data();
    s.act.ldq = w.cols;
    s.act.scale = s.scale.data();
    s.act.sum = s.sum.data();
    s.act.m = m;
  }
  // Split every weight into blocks of output rows; all blocks of all calls form one job.
  // Decode (m == 1) is bound by memory: blocks are sized for load balance. Prefill blocks
  // are sized so that a block's rows stay in cache while the activations pass over them.
  // EXL2 blocks start at multiples of 32 columns (whole vectors of packed words).
  struct Block {
    int call;
    int64_t n0, n1;
  };
  std::vector<Block> blocks;
  const int threads = pool_.size();
  for (int c = 0; c < count; c++) {
    const LinearWeight& w = *calls[c].weight;
    const int64_t rows = w.rows;
    int64_t block;
    if (m == 1) block = std::max<int64_t>(16, (rows / (threads * 8) + 7) / 8 * 8);
    else if (w.format == WeightFormat::Exl2) block = 32;
    else block = std::clamp<int64_t>(kPrefillBlockBytes / (w.cols * static_cast<int64_t>(dtype_size(w.dense.dtype))), 16, 256) / 8 * 8;
    if (w.format == WeightFormat::Exl2) block = (block + 31) / 32 * 32;
    for (int64_t n0 = 0; n0 < rows; n0 += block) blocks.push_back({c, n0, std::min(rows, n0 + block)});
  }
  pool_.parallel_for(static_cast<int>(blocks.size()), [&](int task, int) {
    const Block& b = blocks[task];
    const LinearCall& call = calls[b.call];
    const LinearWeight& w = *call.weight;
    if (w.format == WeightFormat::Exl2)
      matmul_exl2_(w.exl2, exl2_acts_[b.call].act, call.y, call.ldy, b.n0, b.n1);
    else
      matmul_dense_(w.dense, call.x, m, call.ldx, call.y, call.ldy, b.n0, b.n1);
    if (w.bias) {
      for (int r = 0; r < m; r++)
        for (int64_t n = b.n0; n < b.n1; n++) call.y[r * call.ldy + n] += w.bias[n];
    }
  });
}

void CpuBackend::rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y) {
  pool_.parallel_for(m, [&](int r, int) { rmsnorm_row(x + static_cast<int64_t>(r) * n, weight, eps, n, y + static_cast<int64_t>(r) * n); });
}

void CpuBackend::rope(float* x, int m, int heads, int head_dim, int64_t ld) {
  const float* cos_sin = batch_.cos_sin;
  pool_.parallel_for(m, [&](int r, int) { rope_row(x + r * ld, heads, head_dim, cos_sin + static_cast<int64_t>(r) * head_dim); });
}

// Q8: codes q = round(x / scale) with scale = max |x| / 127 (all zero codes for a zero row;
// a NaN entry gets code 0).
static float quantize_row(const float* x, int n, int8_t* q, int64_t stride) {
  float peak = 0.0f;
  for (int d = 0; d < n; d++) peak = std::max(peak, std::fabs(x[d]));
  const float scale = peak / 127.0f;
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  for (int d = 0; d < n; d++) {
    const float y = x[d] * inv;
    q[d * stride] = y == y ? static_cast<int8_t>(std::nearbyint(std::clamp(y, -127.0f, 127.0f))) : 0;
  }
  return scale;
}

void CpuBackend::write_kv(KvCache& cache, int layer, int kv_heads, int head_dim, const float* k, const float* v) {
  const int ps = cache.page_size();
  const bool q8 = cache.format() == KvFormat::Q8;
  for (int t = 0; t < batch_.tokens; t++) {
    const int pos = batch_.positions[t];
    const int page = (*batch_.pages[t])[pos / ps];
    const int slot = pos % ps;
    for (int h = 0; h < kv_heads; h++) {
      const float* ks = k + (static_cast<int64_t>(t) * kv_heads + h) * head_dim;
      const float* vs = v + (static_cast<int64_t>(t) * kv_heads + h) * head_dim;
      uint8_t* kb = cache.keys(page, layer, h);
      uint8_t* vb = cache.values(page, layer, h);
      if (q8) {
        int8_t* kq = reinterpret_cast<int8_t*>(kb);
        cache.scales(kb)[slot] = quantize_row(ks, head_dim, kq + KvCache::key_index(slot, 0, head_dim), KvCache::kKeyBlock);
        cache.scales(vb)[slot] = quantize_row(vs, head_dim, reinterpret_cast<int8_t*>(vb) + static_cast<int64_t>(slot) * head_dim, 1);
        continue;
      }
      uint16_t* kd = reinterpret_cast<uint16_t*>(kb);
      uint16_t* vd = reinterpret_cast<uint16_t*>(vb) + static_cast<int64_t>(slot) * head_dim;
      for (int d = 0; d < head_dim; d++) {
        kd[KvCache::key_index(slot, d, head_dim)] = f32_to_f16_bits(ks[d]);
        vd[d] = f32_to_f16_bits(vs[d]);
      }
    }
  }
}

void CpuBackend::attention(KvCache& cache, const AttentionCall& a) {
  const int group = a.heads / a.kv_heads;
  // A job is one token's query heads of one KV head, so that they share each key and
  // value load; with few tokens (decode), the heads of a group are split over more jobs
  // to keep every thread busy. A head's result does not depend on the split.
  const int threads = pool_.size();
  const int tokens = batch_.tokens;
  int per_job = group;
  while (per_job > 1 && static_cast<int64_t>(tokens) * a.kv_heads * ((group + per_job - 1) / per_job) < 2 * threads)
    per_job = (per_job + 1) / 2;
  const int jobs_per_kv = (group + per_job - 1) / per_job;
  const int64_t need = attention_scratch_floats(per_job, a.head_dim);
  for (auto& s : scratch_)
    if (static_cast<int64_t>(s.size()) < need) s.resize(need);
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  const int64_t row = static_cast<int64_t>(a.heads) * a.head_dim;
  pool_.parallel_for(tokens * a.kv_heads * jobs_per_kv, [&](int task, int thread) {
    const int t = task / (a.kv_heads * jobs_per_kv);
    const int kv_head = task / jobs_per_kv % a.kv_heads;
    const int h0 = kv_head * group + task % jobs_per_kv * per_job;
    AttentionJob job;
    job.heads = std::min(per_job, (kv_head + 1) * group - h0);
    job.q = a.q + t * row + static_cast<int64_t>(h0) * a.head_dim;
    job.out = a.out + t * row + static_cast<int64_t>(h0) * a.head_dim;
    job.head_dim = a.head_dim;
    job.scale = scale;
    job.cache = &cache;
    job.pages = batch_.pages[t];
    job.layer = a.layer;
    job.kv_head = kv_head;
    job.hi = batch_.positions[t] + 1;
    job.lo = a.sliding_window > 0 ? std::max(0, job.hi - a.sliding_window) : 0;
    job.scratch = scratch_[thread].data();
    attention_(job);
  });
}

void CpuBackend::swiglu(float* gate, const float* up, int64_t n) {
  const int64_t chunk = 4096;
  const int tasks = static_cast<int>((n + chunk - 1) / chunk);
  pool_.parallel_for(tasks, [&](int t, int) {
    const int64_t i0 = t * chunk, i1 = std::min(n, i0 + chunk);
    laminate::swiglu(gate + i0, up + i0, i1 - i0);
  });
}

void CpuBackend::add(float* x, const float* y, int64_t n) { laminate::add(x, y, n); }

void CpuBackend::embed(const DenseView& table, float* x) {
  for (int r = 0; r < batch_.tokens; r++) embed_row(table, batch_.ids[r], x + static_cast<int64_t>(r) * table.cols);
}

void CpuBackend::top_k(const float* logits, int rows, int vocab, int k, float* values, int32_t* ids) {
  // (v, i) before (w, j): larger value, then lower index; NaN after every number
  auto before = [](float v, int i, float w, int j) {
    if (std::isnan(v)) return std::isnan(w) && i < j;
    return std::isnan(w) || v > w || (v == w && i < j);
  };
  for (int r = 0; r < rows; r++) {
    const float* row = logits + static_cast<int64_t>(r) * vocab;
    float* v = values + static_cast<int64_t>(r) * k;
    int32_t* id = ids + static_cast<int64_t>(r) * k;
    int have = 0;  // v/id hold the best `have` so far, in order
    for (int i = 0; i < vocab; i++) {
      if (have == k && !before(row[i], i, v[k - 1], id[k - 1])) continue;
      int at = have < k ? have++ : k - 1;
      while (at > 0 && before(row[i], i, v[at - 1], id[at - 1])) {
        v[at] = v[at - 1];
        id[at] = id[at - 1];
        at--;
      }
      v[at] = row[i];
      id[at] = i;
    }
  }
}

void CpuBackend::gather_rows(const float* x, int64_t n, float* out) {
  for (int r = 0; r < batch_.logit_count; r++) std::memcpy(out + r * n, x + batch_.logit_rows[r] * n, n * sizeof(float));
}

}  // namespace laminate
