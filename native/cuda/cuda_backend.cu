#include "cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/error.h"
#include "kernels.h"
#include "runtime.h"

namespace laminate {

namespace {

// A device allocation that grows on demand and remembers whether it moved.
struct DeviceBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  // True when the buffer had to move (what was recorded with the old address is stale).
  bool reserve(size_t want, const char* what) {
    if (want <= bytes) return false;
    const size_t grown = std::max(want, bytes * 3 / 2);
    gpu::device_free(data);
    data = nullptr;
    bytes = 0;
    data = gpu::device_alloc(grown, what);
    bytes = grown;
    return true;
  }
  ~DeviceBuffer() { gpu::device_free(data); }
};

struct DeviceLinear {
  bool exl2 = false;
  gpu::Exl2Weight e;
  gpu::DenseWeight d;
  const float* bias = nullptr;
};

// Page-locked host memory that grows on demand (its old contents are not kept).
struct HostBuffer {
  char* data = nullptr;
  size_t bytes = 0;
  char* reserve(size_t want) {
    if (want > bytes) {
      const size_t grown = std::max(want, bytes * 3 / 2);
      gpu::host_free(data);
      data = nullptr;
      bytes = 0;
      data = static_cast<char*>(gpu::host_alloc(grown));
      bytes = grown;
    }
    return data;
  }
  ~HostBuffer() { gpu::host_free(data); }
};

// Graphs kept at once (a decode step of each batch shape): past this, all are dropped.
constexpr size_t kMaxGraphs = 64;
// Split-KV attention's partial results, at most (tokens are taken in parts to fit). The
// simulator's is small, so that the tests' steps are taken in parts too.
#if defined(LAMINATE_CUDA_SIM)
constexpr size_t kPartialBytes = size_t(16) << 10;
#else
constexpr size_t kPartialBytes = size_t(64) << 20;
#endif
// Grid dimensions y and z, which some kernels give a step's tokens, are at most 65535.
constexpr int kMaxStepTokens = 65535;

// The arrays a step describes itself with, laid out one after another in one device
// buffer (and a pinned host twin), so one copy moves them all.
struct StepLayout {
  size_t ids, positions, sequence, page_table, cos_sin, logit_rows, tiles, decode_rows, end;
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& o) : o_(o) {
    gpu::set_device(o.device);
    stream_ = gpu::stream_create();
    kv_.layers = o.layers;
    kv_.kv_heads = o.shape.kv_heads;
    kv_.head_dim = o.shape.head_dim;
    kv_.page_size = o.page_size;
    kv_.base = static_cast<uint16_t*>(gpu::device_alloc(kv_bytes(), "the KV cache"));
    table_stride_ = (o.shape.context + o.page_size - 1) / o.page_size;
    context_splits_ = (o.shape.context + gpu::kSplitPositions - 1) / gpu::kSplitPositions;
  }
  ~CudaBackend() override {
    try {
      gpu::set_device(o_.device);
    } catch (const Error&) {
    }
    for (auto& [key, g] : graphs_) gpu::graph_destroy(g);
    for (void* p : owned_) gpu::device_free(p);
    gpu::device_free(kv_.base);
    gpu::stream_destroy(stream_);
  }

  uint64_t kv_bytes() const { return static_cast<uint64_t>(o_.max_pages) * kv_.page_elems() * 2; }
  const char* name() const override { return "cuda"; }
  bool owns_weights() const override { return true; }

  void upload(const WeightSet& w, const std::function<void(uint64_t)>& progress) override {
    gpu::set_device(o_.device);
    uint64_t done = 0;
    auto copy = [&](const void* src, size_t bytes, const char* what) {
      void* p = gpu::device_alloc(bytes, what);
      owned_.push_back(p);
      gpu::copy_to_device(p, src, bytes, stream_);
      gpu::stream_sync(stream_);
      done += bytes;
      progress(done);
      return p;
    };
    for (const auto& [data, n] : w.vectors) vectors_[data] = static_cast<const float*>(copy(data, n * 4, "a norm or bias vector"));
    embedding_ = {copy(w.embedding.data, w.embedding.rows * w.embedding.cols * dtype_size(w.embedding.dtype), "the embedding"),
                  w.embedding.dtype, w.embedding.rows, w.embedding.cols};
    for (const LinearWeight* lw : w.linears) {
      DeviceLinear d;
      if (lw->bias) d.bias = vectors_.at(lw->bias);
      if (lw->format == WeightFormat::Exl2) {
        const Exl2View& v = lw->exl2;
        if (!v.repacked) throw Error("CUDA: an EXL2 layer was not repacked before upload");
        const size_t groups = v.scale_table.size() / 16;
        d.exl2 = true;
        d.e.q_weight = static_cast<const uint32_t*>(copy(v.q_weight, v.qrows * v.np * 4, "EXL2 codes"));
        d.e.qrows = v.qrows;
        d.e.q_scale = static_cast<const uint32_t*>(copy(v.q_scale, groups * (v.np / 8) * 4, "EXL2 scales"));
        d.e.np = v.np;
        d.e.scale_table = static_cast<const float*>(copy(v.scale_table.data(), v.scale_table.size() * 4, "EXL2 scales"));
        d.e.segments = static_cast<const Exl2Group*>(copy(v.groups.data(), v.groups.size() * sizeof(Exl2Group), "EXL2 groups"));
        d.e.segment_count = static_cast<int>(v.groups.size());
        d.e.perm = static_cast<const int32_t*>(copy(v.perm.data(), v.perm.size() * 4, "EXL2 permutation"));
        d.e.n = lw->rows;
        d.e.k = lw->cols;
        ldq_ = std::max<int64_t>(ldq_, (lw->cols + 15) / 16 * 16);
        max_segments_ = std::max(max_segments_, d.e.segment_count);
      } else {
        d.d = {copy(lw->dense.data, lw->rows * lw->cols * dtype_size(lw->dense.dtype), "a weight"), lw->dense.dtype, lw->rows, lw->cols};
      }
      linears_[lw] = d;
    }
  }

  // Every entry point makes the backend's GPU current first: steps run on pool threads,
  // whose current device is 0 until set.
  float* buffer(Buffer which, size_t floats) override {
    gpu::set_device(o_.device);
    if (buffers_[static_cast<int>(which)].reserve(floats * 4, "activations")) drop_graphs();
    return static_cast<float*>(buffers_[static_cast<int>(which)].data);
  }

  bool begin_step(const StepBatch& b) override {
    gpu::set_device(o_.device);
    batch_ = b;
    const int T = b.tokens, D = o_.shape.head_dim;
    if (T > kMaxStepTokens)
      throw Error("CUDA: a step of " + std::to_string(T) + " tokens is more than one step takes (" +
                  std::to_string(kMaxStepTokens) + "); pass the prompt in parts");
    decode_ = true;
    for (int e = 0; e < b.entries; e++) decode_ = decode_ && b.entry_tokens[e] == 1;
    flash_ = !decode_ && D <= 128;

    // The step's arrays, staged on the host and copied at once. Attention: the tokens of
    // entries of more than one token in flash attention tiles (head_dim <= 128), every
    // other token through the split-KV kernels; the choice is made per entry, so that an
    // entry's result never depends on the rest of the batch.
    std::vector<gpu::QueryTile> tiles;
    std::vector<int> decode_rows;
    int longest = 0;
    for (int t = 0; t < T; t++) longest = std::max(longest, b.positions[t] + 1);
    for (int e = 0, first = 0; e < b.entries; first += b.entry_tokens[e], e++) {
      if (flash_ && b.entry_tokens[e] > 1)
        for (int j = 0; j < b.entry_tokens[e]; j += gpu::kFlashQueries)
          tiles.push_back({first + j, std::min(gpu::kFlashQueries, b.entry_tokens[e] - j)});
      else
        for (int j = 0; j < b.entry_tokens[e]; j++) decode_rows.push_back(first + j);
    }
    tile_count_ = static_cast<int>(tiles.size());
    decode_count_ = static_cast<int>(decode_rows.size());
    StepLayout& L = layout_;
    auto align = [](size_t at) { return (at + 255) / 256 * 256; };
    L.ids = 0;
    L.positions = align(L.ids + T * 4);
    L.sequence = align(L.positions + T * 4);
    L.page_table = align(L.sequence + T * 4);
    L.cos_sin = align(L.page_table + static_cast<size_t>(b.entries) * table_stride_ * 4);
    L.logit_rows = align(L.cos_sin + static_cast<size_t>(T) * D * 4);
    L.tiles = align(L.logit_rows + std::max(b.logit_count, 1) * 4);
    L.decode_rows = align(L.tiles + std::max(tile_count_, 1) * sizeof(gpu::QueryTile));
    L.end = align(L.decode_rows + std::max(decode_count_, 1) * 4);
    if (step_.reserve(L.end, "the step's arrays")) drop_graphs();
    // (the previous step has ended: no copy from this buffer is in flight)
    char* h = upload_.reserve(L.end);
    std::memcpy(h + L.ids, b.ids, T * 4);
    std::memcpy(h + L.positions, b.positions, T * 4);
    int* sequence = reinterpret_cast<int*>(h + L.sequence);
    int* table = reinterpret_cast<int*>(h + L.page_table);
    for (int e = 0, t = 0; e < b.entries; t += b.entry_tokens[e], e++) {
      const std::vector<int>& pages = *b.pages[t];
      if (static_cast<int>(pages.size()) > table_stride_) throw Error("CUDA: a sequence has more KV pages than its context allows");
      for (int i = 0; i < table_stride_; i++) table[e * table_stride_ + i] = i < static_cast<int>(pages.size()) ? pages[i] : 0;
      for (int j = 0; j < b.entry_tokens[e]; j++) sequence[t + j] = e;
    }
    std::memcpy(h + L.cos_sin, b.cos_sin, static_cast<size_t>(T) * D * 4);
    if (b.logit_count > 0) std::memcpy(h + L.logit_rows, b.logit_rows, b.logit_count * 4);
    if (tile_count_ > 0) std::memcpy(h + L.tiles, tiles.data(), tile_count_ * sizeof(gpu::QueryTile));
    if (decode_count_ > 0) std::memcpy(h + L.decode_rows, decode_rows.data(), decode_count_ * 4);
    gpu::copy_to_device(step_.data, h, L.end, stream_);

    // Scratch of the kernels: the int8 activations of an EXL2 linear (one at a time: the
    // stream orders each layer's rounding after the previous layer's use), and the partial
    // results of split-KV attention.
    bool moved = false;
    moved |= act_q_.reserve(std::max<size_t>(1, T * ldq_), "EXL2 activations");
    moved |= act_scale_.reserve(std::max<size_t>(4, static_cast<size_t>(T) * max_segments_ * 4), "EXL2 activations");
    moved |= act_sum_.reserve(std::max<size_t>(4, static_cast<size_t>(T) * max_segments_ * 4), "EXL2 activations");
    splits_ = decode_ ? context_splits_ : (longest + gpu::kSplitPositions - 1) / gpu::kSplitPositions;
    if (decode_count_ > 0) {
      const size_t per_token = static_cast<size_t>(o_.shape.heads) * splits_ * (D + 2) * 4;
      split_tokens_ = static_cast<int>(std::clamp<size_t>(kPartialBytes / per_token, 1, decode_count_));
      moved |= partial_.reserve(split_tokens_ * per_token, "attention scratch");
    }
    if (moved) drop_graphs();

    // Decode steps are recorded per shape and replayed. A shape runs eagerly the first time
    // (its kernels are loaded and run once outside a recording) and is recorded the second.
    replay_ = nullptr;
    capturing_ = false;
    if (!decode_ || !graphs_enabled_) return true;
    // the shape: which rows want logits, how many sequences, how many rows want a top k, and k
    key_.assign(b.logit_rows, b.logit_rows + b.logit_count);
    key_.insert(key_.end(), {-1, b.entries, b.top_count, b.top_k});
    auto it = graphs_.find(key_);
    if (it != graphs_.end()) {
      replay_ = it->second;
      return false;
    }
    if (seen_.insert(key_).second) return true;
    if (graphs_.size() >= kMaxGraphs) drop_graphs();
    gpu::capture_begin(stream_);
    capturing_ = true;
    return true;
  }

  int32_t* id_buffer(size_t count) override {
    gpu::set_device(o_.device);
    if (ids_.reserve(count * 4, "top-k ids")) drop_graphs();
    return static_cast<int32_t*>(ids_.data);
  }

  bool end_step(const float* logits, int rows, int vocab, float* host, const float* values, const int32_t* ids, int top,
                float* host_values, int32_t* host_ids) override {
    gpu::set_device(o_.device);
    const bool recording = capturing_;
    if (capturing_) {
      capturing_ = false;
      std::string why;
      gpu::Graph* g = gpu::capture_end(stream_, &why);
      if (!g) {
        // Recording is not possible here: the caller runs the step again, eagerly, as every
        // later step (once the step's arrays have been copied: begin_step rewrites them).
        stop_graphs(why);
        gpu::stream_sync(stream_);
        return false;
      }
      graphs_[key_] = g;
      replay_ = g;
      recorded_++;
    }
    if (replay_) gpu::graph_launch(replay_, stream_);
    if (!recording) (replay_ ? replayed_ : eager_)++;
    // Only what the host wants crosses: full rows of logits, and the top-k values and ids.
    const size_t bytes = static_cast<size_t>(rows) * vocab * 4, top_bytes = static_cast<size_t>(top) * 4;
    char* h = download_.reserve(bytes + 2 * top_bytes);
    if (bytes > 0) gpu::copy_to_host(h, logits, bytes, stream_);
    if (top_bytes > 0) {
      gpu::copy_to_host(h + bytes, values, top_bytes, stream_);
      gpu::copy_to_host(h + bytes + top_bytes, ids, top_bytes, stream_);
    }
    gpu::stream_sync(stream_);
    if (bytes > 0) std::memcpy(host, h, bytes);
    if (top_bytes > 0) {
      std::memcpy(host_values, h + bytes, top_bytes);
      std::memcpy(host_ids, h + bytes + top_bytes, top_bytes);
    }
    return true;
  }

  void cancel_step() override {
    try {
      gpu::set_device(o_.device);
      if (capturing_) {
        // A step that failed while it was recorded: later steps run eagerly.
        gpu::capture_abort(stream_);
        stop_graphs("a step failed while it was recorded");
      }
      gpu::stream_sync(stream_);
    } catch (const Error&) {
    }
    capturing_ = false;
  }

  StepCounts step_counts() const override {
    StepCounts c;
    c.eager = eager_;
    c.recorded = recorded_;
    c.replayed = replayed_;
    std::lock_guard<std::mutex> lock(graph_error_mutex_);
    c.graph_error = graph_error_;
    return c;
  }

  void linear(const LinearCall* calls, int count, int m) override {
    for (int c = 0; c < count; c++) {
      const LinearCall& call = calls[c];
      const DeviceLinear& d = device_linear(call.weight);
      if (d.exl2) {
        gpu::Exl2Activations a;
        a.q = static_cast<int8_t*>(act_q_.data);
        a.ldq = ldq_;
        a.scale = static_cast<float*>(act_scale_.data);
        a.sum = static_cast<int32_t*>(act_sum_.data);
        gpu::exl2_quantize(d.e, call.x, m, call.ldx, a, stream_);
        gpu::exl2_matmul(d.e, a, m, call.y, call.ldy, d.bias, stream_);
      } else {
        gpu::dense_matmul(d.d, call.x, m, call.ldx, call.y, call.ldy, d.bias, stream_);
      }
    }
  }

  void rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y) override {
    gpu::rmsnorm(x, device_vector(weight), eps, m, n, y, stream_);
  }
  void rope(float* x, int m, int heads, int head_dim, int64_t ld) override {
    gpu::rope(x, m, heads, head_dim, ld, step_at<float>(layout_.cos_sin), stream_);
  }
  void write_kv(KvCache&, int layer, int, int, const float* k, const float* v) override {
    gpu::write_kv(kv_, layer, tokens(), k, v, stream_);
  }
  void attention(KvCache&, const AttentionCall& c) override {
    gpu::AttentionArgs a;
    a.kv = kv_;
    a.heads = c.heads;
    a.kv_heads = c.kv_heads;
    a.head_dim = c.head_dim;
    a.layer = c.layer;
    a.sliding_window = c.sliding_window;
    a.q = c.q;
    a.out = c.out;
    a.t = tokens();
    if (tile_count_ > 0) gpu::attention_prefill(a, step_at<gpu::QueryTile>(layout_.tiles), tile_count_, stream_);
    for (int r0 = 0; r0 < decode_count_; r0 += split_tokens_) {  // in parts that fit the scratch
      gpu::AttentionArgs part = a;
      part.rows = step_at<int>(layout_.decode_rows) + r0;
      part.row_count = std::min(split_tokens_, decode_count_ - r0);
      gpu::attention_decode(part, splits_, static_cast<float*>(partial_.data), stream_);
    }
  }
  void swiglu(float* gate, const float* up, int64_t n) override { gpu::swiglu(gate, up, n, stream_); }
  void add(float* x, const float* y, int64_t n) override { gpu::add(x, y, n, stream_); }
  void embed(const DenseView&, float* x) override {
    gpu::embed(embedding_, step_at<int32_t>(layout_.ids), batch_.tokens, x, stream_);
  }
  void gather_rows(const float* x, int64_t n, float* out) override {
    gpu::gather_rows(x, n, step_at<int>(layout_.logit_rows), batch_.logit_count, out, stream_);
  }
  void top_k(const float* logits, int rows, int vocab, int k, float* values, int32_t* ids) override {
    gpu::top_k(logits, rows, vocab, k, values, ids, stream_);
  }

 private:
  template <class T>
  T* step_at(size_t offset) const { return reinterpret_cast<T*>(static_cast<char*>(step_.data) + offset); }
  gpu::StepTokens tokens() const {
    gpu::StepTokens t;
    t.tokens = batch_.tokens;
    t.positions = step_at<int>(layout_.positions);
    t.sequence = step_at<int>(layout_.sequence);
    t.page_table = step_at<int>(layout_.page_table);
    t.table_stride = table_stride_;
    return t;
  }
  const DeviceLinear& device_linear(const LinearWeight* w) const {
    auto it = linears_.find(w);
    if (it == linears_.end()) throw Error("CUDA: a weight was used before it was uploaded");
    return it->second;
  }
  const float* device_vector(const float* host) const {
    auto it = vectors_.find(host);
    if (it == vectors_.end()) throw Error("CUDA: a vector was used before it was uploaded");
    return it->second;
  }
  void stop_graphs(const std::string& why) {
    graphs_enabled_ = false;
    std::lock_guard<std::mutex> lock(graph_error_mutex_);
    graph_error_ = why;
  }
  void drop_graphs() {
    for (auto& [key, g] : graphs_) gpu::graph_destroy(g);
    graphs_.clear();
  }

  CudaBackendOptions o_;
  cudaStream_t stream_ = nullptr;
  gpu::KvPages kv_;
  int table_stride_ = 0, context_splits_ = 0;
  std::vector<void*> owned_;
  std::unordered_map<const LinearWeight*, DeviceLinear> linears_;
  std::unordered_map<const float*, const float*> vectors_;
  gpu::DenseWeight embedding_;
  int64_t ldq_ = 0;  // row stride of int8 activations: the widest EXL2 input, to 16
  int max_segments_ = 0;

  DeviceBuffer buffers_[static_cast<int>(Buffer::Count)];
  DeviceBuffer step_, partial_, act_q_, act_scale_, act_sum_, ids_;
  HostBuffer upload_, download_;  // the step's arrays; what it hands back
  StepBatch batch_;
  StepLayout layout_{};
  bool decode_ = false, flash_ = false;
  int tile_count_ = 0, decode_count_ = 0, splits_ = 1, split_tokens_ = 1;

  bool graphs_enabled_ = true, capturing_ = false;
  gpu::Graph* replay_ = nullptr;
  std::vector<int> key_;
  std::map<std::vector<int>, gpu::Graph*> graphs_;
  std::set<std::vector<int>> seen_;  // shapes run once
  std::atomic<uint64_t> eager_{0}, recorded_{0}, replayed_{0};
  mutable std::mutex graph_error_mutex_;
  std::string graph_error_;
};

}  // namespace

CudaBackendMade make_cuda_backend(const CudaBackendOptions& o) {
  const ModelShape& s = o.shape;
  if (s.head_dim != 32 && s.head_dim != 64 && s.head_dim != 128 && s.head_dim != 256)
    throw Error("device 'cuda': head_dim " + std::to_string(s.head_dim) + " is not supported (32, 64, 128 or 256)");
  gpu::set_device(o.device);
  const std::string name = gpu::device_name(o.device);
  const int cc = gpu::compute_capability(o.device);
  if (cc < 80)
    throw Error("device 'cuda': GPU " + std::to_string(o.device) + " (" + name + ") has compute capability " +
                std::to_string(cc / 10) + "." + std::to_string(cc % 10) +
                "; the CUDA kernels need 8.0 or later (A100, RTX 30xx and newer)");
  size_t free_bytes = 0, total_bytes = 0;
  gpu::memory_info(&free_bytes, &total_bytes);
  const uint64_t kv = static_cast<uint64_t>(o.max_pages) * o.layers * 2 * s.kv_heads * o.page_size * s.head_dim * 2;
  const uint64_t margin = uint64_t(256) << 20;  // activations and kernel scratch
  if (o.weight_bytes + kv + margin > free_bytes)
    throw Error("device 'cuda': not enough free memory on GPU " + std::to_string(o.device) + " (" + name + "): the weights need " +
                gpu::mib(o.weight_bytes) + " and the KV cache " + gpu::mib(kv) + " (plus " + gpu::mib(margin) + " of working space), " +
                gpu::mib(free_bytes) + " of " + gpu::mib(total_bytes) + " are free. Lower kvCacheTokens or contextSize, or use a smaller model or quantization");
  auto backend = std::make_unique<CudaBackend>(o);
  CudaBackendMade made;
  made.kv_bytes = backend->kv_bytes();
  made.device_name = name;
  made.backend = std::move(backend);
  return made;
}

}  // namespace laminate
