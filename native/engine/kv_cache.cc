#include "kv_cache.h"

#include <string>

#include "../core/error.h"

namespace laminate {

KvCache::KvCache(int layers, int kv_heads, int head_dim, int page_size, int max_pages, bool host_storage)
    : layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), page_size_(page_size), max_pages_(max_pages),
      host_storage_(host_storage) {
  page_floats_ = static_cast<int64_t>(layers) * 2 * kv_heads * page_size * head_dim;
}

int KvCache::create_sequence() {
  int id = next_id_++;
  sequences_[id];
  return id;
}

KvCache::Sequence& KvCache::get(int id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) throw Error("unknown sequence " + std::to_string(id));
  return it->second;
}

const KvCache::Sequence& KvCache::get(int id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) throw Error("unknown sequence " + std::to_string(id));
  return it->second;
}

void KvCache::free_sequence(int id) {
  set_length(id, 0);
  sequences_.erase(id);
}

int KvCache::length(int id) const { return get(id).length; }

const std::vector<int>& KvCache::pages(int id) const { return get(id).pages; }

int KvCache::pages_needed(int id, int extra) const {
  const Sequence& s = get(id);
  int64_t want = (static_cast<int64_t>(s.length) + extra + page_size_ - 1) / page_size_;
  int64_t have = static_cast<int64_t>(s.pages.size());
  return want > have ? static_cast<int>(want - have) : 0;
}

int KvCache::take_page() {
  if (!free_.empty()) {
    int p = free_.back();
    free_.pop_back();
    return p;
  }
  if (host_storage_) storage_.emplace_back(new float[page_floats_]);
  return created_++;
}

void KvCache::reserve(int id, int extra) {
  Sequence& s = get(id);
  int need = pages_needed(id, extra);
  if (need > free_pages_available())
    throw Error("KV cache is full: " + std::to_string(need) + " more pages needed, " +
                std::to_string(free_pages_available()) + " free of " + std::to_string(max_pages_));
  for (int i = 0; i < need; i++) s.pages.push_back(take_page());
  in_use_ += need;
}

void KvCache::set_length(int id, int length) {
  Sequence& s = get(id);
  if (length < 0) throw Error("negative sequence length");
  s.length = length;
  size_t keep = (static_cast<size_t>(length) + page_size_ - 1) / page_size_;
  while (s.pages.size() > keep) {
    free_.push_back(s.pages.back());
    s.pages.pop_back();
    in_use_--;
  }
}

}  // namespace laminate
