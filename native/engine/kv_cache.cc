#include "kv_cache.h"

#include <algorithm>
#include <iterator>
#include <string>

#include "../core/error.h"

namespace laminate {

KvCache::KvCache(int layers, int kv_heads, int head_dim, int page_size, int max_pages, bool host_storage,
                 KvFormat format)
    : layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), page_size_(page_size), max_pages_(max_pages),
      host_storage_(host_storage), format_(format) {
  page_bytes_ = position_bytes(layers, kv_heads, head_dim, format) * page_size;
  block_bytes_ = page_bytes_ / (static_cast<int64_t>(layers) * 2 * kv_heads);
  if (host_storage && page_size % kKeyBlock != 0)
    throw Error("KV cache page size must be a multiple of " + std::to_string(kKeyBlock));
}

int KvCache::create_sequence(bool shared) {
  int id = next_id_++;
  sequences_[id].shared = shared;
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
  Sequence& s = get(id);
  // Last page first: a run's later pages then come before its earlier ones in the
  // reclaim order, so a reclaimed page never strands the pages after it.
  while (!s.pages.empty()) {
    release(s.pages.back());
    s.pages.pop_back();
  }
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
  if (created_ < max_pages_) {
    if (host_storage_) storage_.emplace_back(new uint8_t[page_bytes_]);
    meta_.emplace_back();
    return created_++;
  }
  if (lru_.empty()) throw Error("KV cache: no page left");  // callers check free_pages_available first
  int p = lru_.front();
  lru_.pop_front();
  unpublish(p);
  return p;
}

void KvCache::hold(int page) {
  Page& m = meta_[page];
  if (m.holders++ == 0) {
    if (m.serial != 0) lru_.erase(m.lru);
    in_use_++;
  }
}

void KvCache::release(int page) {
  Page& m = meta_[page];
  if (--m.holders > 0) return;
  in_use_--;
  if (m.serial != 0) {
    lru_.push_back(page);
    m.lru = std::prev(lru_.end());
  } else {
    free_.push_back(page);
  }
}

void KvCache::unpublish(int page) {
  Page& m = meta_[page];
  if (m.serial == 0) return;
  auto it = published_.find(m.key);
  if (it != published_.end() && it->second == page) published_.erase(it);
  m.serial = 0;
  m.tokens.clear();
}

uint64_t KvCache::key_of(uint64_t parent, const int32_t* tokens) const {
  uint64_t h = parent * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (int i = 0; i < page_size_; i++) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  return h;
}

int KvCache::find(uint64_t parent, const int32_t* tokens) const {
  auto it = published_.find(key_of(parent, tokens));
  if (it == published_.end()) return -1;
  const Page& m = meta_[it->second];
  if (m.parent != parent || !std::equal(m.tokens.begin(), m.tokens.end(), tokens)) return -1;
  return it->second;
}

void KvCache::reserve(int id, int extra) {
  Sequence& s = get(id);
  int need = pages_needed(id, extra);
  if (need > free_pages_available())
    throw Error("KV cache is full: " + std::to_string(need) + " more pages needed, " +
                std::to_string(free_pages_available()) + " free of " + std::to_string(max_pages_));
  for (int i = 0; i < need; i++) {
    int p = take_page();
    hold(p);
    s.pages.push_back(p);
  }
}

void KvCache::set_length(int id, int length) {
  Sequence& s = get(id);
  if (length < 0) throw Error("negative sequence length");
  const size_t keep = (static_cast<size_t>(length) + page_size_ - 1) / page_size_;
  // The page that holds the new end will be written again: it must be this sequence's alone.
  const bool partial = length % page_size_ != 0 && keep <= s.pages.size();
  if (partial) {
    const int page = s.pages[keep - 1];
    if (meta_[page].holders > 1)
      throw Error("a sequence cannot be cut inside a KV cache page that other sequences share");
    unpublish(page);
  }
  while (s.pages.size() > keep) {
    release(s.pages.back());
    s.pages.pop_back();
  }
  s.length = length;
  if (s.shared) {
    s.tokens.resize(std::min(s.tokens.size(), static_cast<size_t>(length)));
    s.published = std::min(s.published, length / page_size_);
  }
}

void KvCache::append(int id, const int32_t* tokens, int n) {
  Sequence& s = get(id);
  if (static_cast<int64_t>(s.length) + n > static_cast<int64_t>(s.pages.size()) * page_size_)
    throw Error("KV cache: append past the reserved pages");
  s.length += n;
  if (!s.shared) return;
  s.tokens.insert(s.tokens.end(), tokens, tokens + n);
  if (static_cast<int>(s.tokens.size()) != s.length) {
    // a shared sequence extended some other way: it no longer publishes
    s.shared = false;
    s.tokens.clear();
    return;
  }
  while ((s.published + 1) * page_size_ <= s.length) {
    const int index = s.published;
    const uint64_t parent = index == 0 ? 0 : meta_[s.pages[index - 1]].serial;
    if (index > 0 && parent == 0) break;
    const int32_t* page_tokens = s.tokens.data() + static_cast<int64_t>(index) * page_size_;
    const int page = s.pages[index];
    const int twin = find(parent, page_tokens);
    if (twin >= 0) {
      // Computed twice at once (two equal prompts in one batch): keep the published copy.
      hold(twin);
      s.pages[index] = twin;
      release(page);
    } else {
      const uint64_t key = key_of(parent, page_tokens);
      if (published_.count(key) != 0) break;  // another page owns the key: stop publishing here
      Page& m = meta_[page];
      m.serial = next_serial_++;
      m.parent = parent;
      m.key = key;
      m.tokens.assign(page_tokens, page_tokens + page_size_);
      published_[key] = page;
    }
    s.published++;
  }
}

int KvCache::attach_prefix(int id, const int32_t* tokens, int n, int limit) {
  Sequence& s = get(id);
  if (!s.shared) throw Error("attach_prefix: the sequence does not take part in the prefix cache");
  if (s.length != 0) throw Error("attach_prefix: the sequence is not empty");
  const int most = std::min(n, limit) / page_size_;
  uint64_t parent = 0;
  while (static_cast<int>(s.pages.size()) < most) {
    const int page = find(parent, tokens + s.pages.size() * page_size_);
    if (page < 0) break;
    hold(page);
    s.pages.push_back(page);
    parent = meta_[page].serial;
  }
  s.length = static_cast<int>(s.pages.size()) * page_size_;
  s.published = static_cast<int>(s.pages.size());
  s.tokens.assign(tokens, tokens + s.length);
  return s.length;
}

}  // namespace laminate
