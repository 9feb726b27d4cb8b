// The KV cache: a pool of fixed-size pages. A sequence owns a list of pages; its
// position p lives in page p / page_size, slot p % page_size. Pages are allocated on first
// use up to a limit and return to the pool when a sequence is freed or truncated.
#pragma once
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace laminate {

class KvCache {
 public:
  // host_storage: whether pages hold their floats here (the CPU backend), or only ids of
  // pages a device keeps (the CUDA backend).
  KvCache(int layers, int kv_heads, int head_dim, int page_size, int max_pages, bool host_storage);

  int page_size() const { return page_size_; }
  int max_pages() const { return max_pages_; }
  int pages_in_use() const { return in_use_; }
  // Host bytes the pages take (0 when a device keeps them).
  int64_t bytes_allocated() const { return static_cast<int64_t>(storage_.size()) * page_floats_ * 4; }

  // Page layout: [layer][k, v][kv_head][slot][head_dim].
  float* keys(int page, int layer, int kv_head) { return at(page, layer, 0, kv_head); }
  float* values(int page, int layer, int kv_head) { return at(page, layer, 1, kv_head); }

  int create_sequence();
  bool has_sequence(int id) const { return sequences_.count(id) != 0; }
  void free_sequence(int id);
  int length(int id) const;
  const std::vector<int>& pages(int id) const;
  // Makes room for `extra` more positions; throws Error (changing nothing) when the pool
  // is exhausted.
  void reserve(int id, int extra);
  int free_pages_available() const { return static_cast<int>(free_.size()) + (max_pages_ - created_); }
  int pages_needed(int id, int extra) const;
  void set_length(int id, int length);  // also releases pages past the new length

 private:
  struct Sequence {
    std::vector<int> pages;
    int length = 0;
  };
  float* at(int page, int layer, int kv, int head) {
    return storage_[page].get() + ((static_cast<int64_t>(layer) * 2 + kv) * kv_heads_ + head) * page_size_ * head_dim_;
  }
  int take_page();
  Sequence& get(int id);
  const Sequence& get(int id) const;

  int layers_, kv_heads_, head_dim_, page_size_, max_pages_;
  bool host_storage_;
  int created_ = 0;  // pages handed out so far (ids 0 .. created_ - 1)
  int64_t page_floats_;
  std::vector<std::unique_ptr<float[]>> storage_;
  std::vector<int> free_;
  int in_use_ = 0;
  int next_id_ = 1;
  std::unordered_map<int, Sequence> sequences_;
};

}  // namespace laminate
