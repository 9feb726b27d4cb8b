// The KV cache: a pool of fixed-size pages. A sequence holds a list of pages; its
// position p lives in page p / page_size, slot p % page_size. Pages are allocated on first
// use up to a limit and return to the pool when no sequence holds them.
//
// Prefix cache: a sequence created `shared` publishes each page it fills, keyed by the
// page's tokens and the page before it. A new shared sequence whose tokens begin with a
// published run of pages takes those pages instead of computing them again (a page is
// then held by several sequences; only full pages are shared, so no sequence ever writes
// to a page another one reads). A published page that no sequence holds stays cached, and
// is reclaimed, least recently used first, when the pool needs a page.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

namespace laminate {

// How host pages store keys and values: IEEE half floats, or int8 codes with one float
// scale per slot and KV head (the slot's largest magnitude over 127).
enum class KvFormat { F16, Q8 };

class KvCache {
 public:
  // host_storage: whether pages hold their keys and values here (the CPU backend), or only ids of
  // pages a device keeps (the CUDA backend).
  KvCache(int layers, int kv_heads, int head_dim, int page_size, int max_pages, bool host_storage,
          KvFormat format = KvFormat::F16);

  int page_size() const { return page_size_; }
  int max_pages() const { return max_pages_; }
  // Pages held by at least one sequence.
  int pages_in_use() const { return in_use_; }
  // Published pages that no sequence holds (reclaimable).
  int cached_pages() const { return static_cast<int>(lru_.size()); }
  // Host bytes the pages take (0 when a device keeps them).
  int64_t bytes_allocated() const { return static_cast<int64_t>(storage_.size()) * page_bytes_; }
  KvFormat format() const { return format_; }
  // Bytes one position takes over all layers and KV heads.
  static int64_t position_bytes(int layers, int kv_heads, int head_dim, KvFormat format) {
    const int64_t per_head = format == KvFormat::F16 ? 2 * head_dim : head_dim + 4;
    return static_cast<int64_t>(layers) * 2 * kv_heads * per_head;
  }

  // Host pages are [layer][k, v][kv_head][block]. A block holds page_size * head_dim
  // entries (half floats, or int8 codes followed by page_size float scales, one per
  // slot). Values are rows of head_dim, one per slot. Keys are transposed in groups of
  // kKeyBlock slots: entry (slot, d) sits at key_index(slot, d, head_dim), so that one
  // group's scores are vector operations over its slots. A host cache's page size is a
  // multiple of kKeyBlock.
  static constexpr int kKeyBlock = 16;
  static int64_t key_index(int slot, int d, int head_dim) {
    return static_cast<int64_t>(slot - slot % kKeyBlock) * head_dim + static_cast<int64_t>(d) * kKeyBlock + slot % kKeyBlock;
  }
  uint8_t* keys(int page, int layer, int kv_head) { return at(page, layer, 0, kv_head); }
  uint8_t* values(int page, int layer, int kv_head) { return at(page, layer, 1, kv_head); }
  // Q8: the scales of a block returned by keys() or values().
  float* scales(uint8_t* block) const { return reinterpret_cast<float*>(block + static_cast<int64_t>(page_size_) * head_dim_); }

  // shared: the sequence takes part in the prefix cache.
  int create_sequence(bool shared = false);
  bool has_sequence(int id) const { return sequences_.count(id) != 0; }
  bool is_shared(int id) const { return get(id).shared; }
  void free_sequence(int id);
  int length(int id) const;
  const std::vector<int>& pages(int id) const;
  // Makes room for `extra` more positions; throws Error (changing nothing) when the pool
  // is exhausted.
  void reserve(int id, int extra);
  // Pages that can be handed out now: never used, returned, or cached and reclaimable.
  int free_pages_available() const { return static_cast<int>(free_.size() + lru_.size()) + (max_pages_ - created_); }
  int pages_needed(int id, int extra) const;
  // Releases pages past the new length. A shared sequence cannot be cut inside a page that
  // another sequence also holds.
  void set_length(int id, int length);
  // Extends the sequence by the tokens just written at its end (after reserve), and
  // publishes the pages they filled (shared sequences).
  void append(int id, const int32_t* tokens, int n);
  // Gives an empty shared sequence the longest published run of pages that `tokens`
  // begins with, at most `limit` positions; returns the positions it now holds.
  int attach_prefix(int id, const int32_t* tokens, int n, int limit);

 private:
  struct Sequence {
    std::vector<int> pages;
    int length = 0;
    bool shared = false;
    std::vector<int32_t> tokens;  // shared: every token in the cache
    int published = 0;            // shared: leading pages published (or attached)
  };
  struct Page {
    int holders = 0;
    uint64_t serial = 0;  // 0: not published; else unique to this publication
    uint64_t parent = 0;  // serial of the page before (0 for a sequence's first page)
    uint64_t key = 0;
    std::vector<int32_t> tokens;
    std::list<int>::iterator lru;
  };
  uint8_t* at(int page, int layer, int kv, int head) {
    return storage_[page].get() + ((static_cast<int64_t>(layer) * 2 + kv) * kv_heads_ + head) * block_bytes_;
  }
  int take_page();
  void hold(int page);
  void release(int page);
  void unpublish(int page);
  uint64_t key_of(uint64_t parent, const int32_t* tokens) const;
  int find(uint64_t parent, const int32_t* tokens) const;
  Sequence& get(int id);
  const Sequence& get(int id) const;

  int layers_, kv_heads_, head_dim_, page_size_, max_pages_;
  bool host_storage_;
  int created_ = 0;  // pages handed out so far (ids 0 .. created_ - 1)
  KvFormat format_;
  int64_t block_bytes_, page_bytes_;
  std::vector<std::unique_ptr<uint8_t[]>> storage_;
  std::vector<Page> meta_;
  std::vector<int> free_;
  std::list<int> lru_;  // cached pages, least recently used first
  std::unordered_map<uint64_t, int> published_;
  uint64_t next_serial_ = 1;
  int in_use_ = 0;
  int next_id_ = 1;
  std::unordered_map<int, Sequence> sequences_;
};

}  // namespace laminate
