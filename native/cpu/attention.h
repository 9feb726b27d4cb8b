// Causal attention of one token's query heads that share a KV head, over a sequence's
// pages in the host KV cache (kv_cache.h). Scores, softmax and sums are float32; keys and
// values are read from half floats or int8 codes. One implementation per instruction set, all
// instantiated from attention_impl.inc.
//
// Positions are taken in blocks of KvCache::kKeyBlock that start at multiples of it, with
// an online softmax from block to block, in one fixed order. A head's result therefore
// depends only on its query and the positions [lo, hi) it attends to: not on the other
// heads of the job, the other tokens of the step, or which thread runs it.
#pragma once
#include <cstdint>
#include <vector>

#include "../engine/kv_cache.h"

namespace laminate {

struct AttentionJob {
  const float* q = nullptr;  // heads query vectors of head_dim, one after the other
  float* out = nullptr;      // the same layout
  int heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
  KvCache* cache = nullptr;
  const std::vector<int>* pages = nullptr;
  int layer = 0;
  int kv_head = 0;
  int lo = 0, hi = 0;        // attended positions; lo < hi
  float* scratch = nullptr;  // attention_scratch_floats(heads, head_dim) floats
};

inline int64_t attention_scratch_floats(int heads, int head_dim) {
  return static_cast<int64_t>(heads) * (2 * head_dim + 4 * KvCache::kKeyBlock + 1);
}

using AttentionFn = void (*)(const AttentionJob& job);

void attention_scalar(const AttentionJob& job);
void attention_avx2(const AttentionJob& job);
void attention_avx512(const AttentionJob& job);
void attention_neon(const AttentionJob& job);

}  // namespace laminate
