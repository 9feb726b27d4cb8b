#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <set>

#include "../core/error.h"
#include "../cpu/cpu_backend.h"
#include "../cpu/kernels.h"
#include "../core/cpu_features.h"
#include "../core/thread_pool.h"
#include "../exl2/loader.h"
#if defined(LAMINATE_WITH_CUDA)
#include "../cuda/cuda_backend.h"
#endif

namespace laminate {

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Builds weights from tensor specs, sharing one LinearWeight or vector per distinct source.
class WeightBuilder {
 public:
  WeightBuilder(const ModelSpec& spec, const std::vector<std::unique_ptr<MappedFile>>& files,
                std::vector<std::unique_ptr<LinearWeight>>& linears, std::vector<std::vector<float>>& vectors)
      : spec_(spec), files_(files), linears_(linears), vectors_(vectors) {}

  const TensorSpec& tensor(int index, const char* role) {
    if (index < 0 || index >= static_cast<int>(spec_.tensors.size()))
      throw Error(std::string("layer plan: tensor index for ") + role + " is out of range");
    return spec_.tensors[index];
  }

  std::string where(const TensorSpec& t) const { return files_[t.file]->path() + ": tensor '" + t.name + "'"; }

  void expect_shape(const TensorSpec& t, std::vector<int64_t> want) const {
    if (t.shape != want)
      throw Error(where(t) + " has shape " + shape_string(t.shape) + ", expected " + shape_string(want) +
                  " from config.json");
  }

  const void* data(const TensorSpec& t) const { return files_[t.file]->data() + t.offset; }

  const float* vector(int index, int64_t n, const char* role) {
    auto it = vector_of_.find(index);
    if (it != vector_of_.end()) return it->second;
    const TensorSpec& t = tensor(index, role);
    expect_shape(t, {n});
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
      throw Error(where(t) + " has dtype " + dtype_name(t.dtype) + ", expected F32, F16 or BF16");
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; i++) v[i] = load_as_f32(data(t), t.dtype, i);
    vectors_.push_back(std::move(v));
    return vector_of_[index] = vectors_.back().data();
  }

  const LinearWeight* linear(const LinearSpec& l, int64_t rows, int64_t cols, const char* role) {
    auto key = std::make_tuple(l.dense, l.q_weight, l.bias);
    auto it = linear_of_.find(key);
    if (it != linear_of_.end()) return it->second;
    auto w = std::make_unique<LinearWeight>();
    w->rows = rows;
    w->cols = cols;
    if (l.exl2()) {
      w->format = WeightFormat::Exl2;
      exl2(l, rows, cols, role, w->exl2);
    } else {
      const TensorSpec& t = tensor(l.dense, role);
      if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        throw Error(where(t) + " has dtype " + dtype_name(t.dtype) + ", which is not a weight type");
      expect_shape(t, {rows, cols});
      w->format = WeightFormat::Dense;
      w->dense = DenseView{data(t), t.dtype, rows, cols};
    }
    if (l.bias >= 0) w->bias = vector(l.bias, rows, role);
    linears_.push_back(std::move(w));
    return linear_of_[key] = linears_.back().get();
  }

  void exl2(const LinearSpec& l, int64_t n, int64_t k, const char* role, Exl2View& v) {
    auto raw = [&](int index) {
      const TensorSpec& t = tensor(index, role);
      return RawTensor{data(t), t.dtype, t.shape, where(t)};
    };
    v = load_exl2(raw(l.q_weight), raw(l.q_invperm), raw(l.q_scale), raw(l.q_scale_max), raw(l.q_groups), n, k);
    const TensorSpec& qw = tensor(l.q_weight, role);
    packed_.push_back({&v, qw.file, qw.offset, qw.bytes});
  }

  // EXL2 layers whose codes the engine repacks (done off the JS thread, in prefault).
  struct Packed {
    Exl2View* view;
    int file;
    uint64_t offset, bytes;
  };
  std::vector<Packed> packed_;

 private:
  const ModelSpec& spec_;
  const std::vector<std::unique_ptr<MappedFile>>& files_;
  std::vector<std::unique_ptr<LinearWeight>>& linears_;
  std::vector<std::vector<float>>& vectors_;
  std::map<int, const float*> vector_of_;
  std::map<std::tuple<int, int, int>, const LinearWeight*> linear_of_;
};

void check_shape(const ModelShape& s) {
  auto positive = [](int v, const char* name) {
    if (v <= 0) throw Error(std::string("config: ") + name + " must be a positive integer");
  };
  positive(s.hidden, "hidden_size");
  positive(s.intermediate, "intermediate_size");
  positive(s.heads, "num_attention_heads");
  positive(s.kv_heads, "num_key_value_heads");
  positive(s.head_dim, "head_dim");
  positive(s.vocab, "vocab_size");
  positive(s.context, "context size");
  if (s.heads % s.kv_heads != 0) throw Error("config: num_attention_heads must be a multiple of num_key_value_heads");
  if (s.head_dim % 2 != 0) throw Error("config: head_dim must be even for rotary embeddings");
  if (static_cast<int>(s.rope_inv_freq.size()) != s.head_dim / 2)
    throw Error("config: rotary frequency table must have head_dim / 2 entries");
  if (!(s.rms_norm_eps > 0) || !std::isfinite(s.rms_norm_eps)) throw Error("config: rms_norm_eps must be positive");
  if (s.sliding_window < 0) throw Error("config: sliding_window must not be negative");
}

}  // namespace

Engine::Engine(const ModelSpec& spec) : shape_(spec.shape) {
  check_shape(shape_);
  if (spec.kv_page_size <= 0 || spec.kv_page_size > 4096) throw Error("KV cache page size must be in [1, 4096]");
  if (spec.kv_max_tokens <= 0) throw Error("KV cache capacity must be positive");

  // Map the files and check that every tensor lies inside its file and matches its shape.
  for (const std::string& path : spec.files) files_.push_back(std::make_unique<MappedFile>(path));
  for (const TensorSpec& t : spec.tensors) {
    if (t.file < 0 || t.file >= static_cast<int>(files_.size()))
      throw Error("tensor '" + t.name + "': file index out of range");
    const MappedFile& f = *files_[t.file];
    if (t.offset > f.size() || t.bytes > f.size() - t.offset)
      throw Error(f.path() + ": tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" +
                  std::to_string(t.bytes) + ") lies past the end of the file (" + std::to_string(f.size()) + " bytes)");
    uint64_t count = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw Error(f.path() + ": tensor '" + t.name + "' has a negative dimension");
      if (d != 0 && count > UINT64_MAX / static_cast<uint64_t>(d))
        throw Error(f.path() + ": tensor '" + t.name + "' shape overflows");
      count *= static_cast<uint64_t>(d);
    }
    if (count > UINT64_MAX / dtype_size(t.dtype) || count * dtype_size(t.dtype) != t.bytes)
      throw Error(f.path() + ": tensor '" + t.name + "' holds " + std::to_string(t.bytes) + " bytes but its shape " +
                  shape_string(t.shape) + " and dtype " + dtype_name(t.dtype) + " need " +
                  std::to_string(count * dtype_size(t.dtype)));
  }

  // The layer plan.
  if (spec.layers.empty()) throw Error("layer plan: the model has no decoder layers");
  const ModelShape& s = shape_;
  const int64_t q_rows = static_cast<int64_t>(s.heads) * s.head_dim;
  const int64_t kv_rows = static_cast<int64_t>(s.kv_heads) * s.head_dim;
  WeightBuilder b(spec, files_, linear_storage_, vector_storage_);
  {
    const TensorSpec& e = b.tensor(spec.embedding, "embedding");
    b.expect_shape(e, {s.vocab, s.hidden});
    if (e.dtype != DType::F32 && e.dtype != DType::F16 && e.dtype != DType::BF16) throw Error(b.where(e) + " must be F32, F16 or BF16");
    embedding_ = DenseView{b.data(e), e.dtype, s.vocab, s.hidden};
  }
  for (const LayerSpec& l : spec.layers) {
    DecoderLayerWeights w;
    w.input_norm = b.vector(l.input_norm, s.hidden, "input_layernorm");
    w.post_attention_norm = b.vector(l.post_attention_norm, s.hidden, "post_attention_layernorm");
    w.q = b.linear(l.q, q_rows, s.hidden, "q_proj");
    w.k = b.linear(l.k, kv_rows, s.hidden, "k_proj");
    w.v = b.linear(l.v, kv_rows, s.hidden, "v_proj");
    w.o = b.linear(l.o, s.hidden, q_rows, "o_proj");
    w.gate = b.linear(l.gate, s.intermediate, s.hidden, "gate_proj");
    w.up = b.linear(l.up, s.intermediate, s.hidden, "up_proj");
    w.down = b.linear(l.down, s.hidden, s.intermediate, "down_proj");
    layers_.push_back(w);
  }
  final_norm_ = b.vector(spec.final_norm, s.hidden, "norm");
  lm_head_ = b.linear(spec.lm_head, s.vocab, s.hidden, "lm_head");
  for (const auto& p : b.packed_) repack_.push_back({p.view, p.file, p.offset, p.bytes});

  const int pages = (spec.kv_max_tokens + spec.kv_page_size - 1) / spec.kv_page_size;
  if (spec.kv_type != "f16" && spec.kv_type != "q8") throw Error("KV cache type must be 'f16' or 'q8' (got '" + spec.kv_type + "')");
  if (spec.device == "cuda") {
    if (spec.kv_type != "f16") throw Error("device 'cuda': the KV cache type '" + spec.kv_type + "' is supported by the CPU engine only");
#if defined(LAMINATE_WITH_CUDA)
    CudaBackendOptions o;
    o.device = spec.device_index;
    o.shape = shape_;
    o.layers = layers();
    o.page_size = spec.kv_page_size;
    o.max_pages = pages;
    o.weight_bytes = weight_bytes();
    auto cuda = make_cuda_backend(o);
    device_name_ = cuda.device_name;
    kv_device_bytes_ = cuda.kv_bytes;
    backend_ = std::move(cuda.backend);
    device_ = "cuda";
    cache_ = std::make_unique<KvCache>(layers(), s.kv_heads, s.head_dim, spec.kv_page_size, pages, false);
    return;
#else
    throw Error("device 'cuda': this build of the addon has no CUDA backend (npm run build:cuda)");
#endif
  }
  if (spec.device != "cpu") throw Error("device must be 'cpu' or 'cuda' (got '" + spec.device + "')");
  Isa isa = resolve_isa(spec.isa);
  int threads = spec.threads > 0 ? spec.threads : default_thread_count();
  if (threads > 256) throw Error("threads must be at most 256");
  backend_ = std::make_unique<CpuBackend>(isa, threads);
  isa_ = isa_name(isa);
  threads_ = threads;
  cache_ = std::make_unique<KvCache>(layers(), s.kv_heads, s.head_dim, spec.kv_page_size, pages, true,
                                     spec.kv_type == "q8" ? KvFormat::Q8 : KvFormat::F16);
}

uint64_t Engine::weight_bytes() const {
  uint64_t total = 0;
  for (const auto& w : linear_storage_) {
    if (w->format == WeightFormat::Exl2) {
      const Exl2View& e = w->exl2;
      const uint64_t groups = e.scale_table.size() / 16;
      total += static_cast<uint64_t>(e.qrows) * e.np * 4 + groups * (e.np / 8) * 4 + e.scale_table.size() * 4 +
               e.groups.size() * sizeof(Exl2Group) + e.perm.size() * 4;
    } else {
      total += static_cast<uint64_t>(w->rows) * w->cols * dtype_size(w->dense.dtype);
    }
  }
  for (const auto& v : vector_storage_) total += v.size() * 4;
  return total + static_cast<uint64_t>(embedding_.rows) * embedding_.cols * dtype_size(embedding_.dtype);
}

WeightSet Engine::weight_set() const {
  WeightSet set;
  for (const auto& w : linear_storage_) set.linears.push_back(w.get());
  for (const auto& v : vector_storage_) set.vectors.push_back({v.data(), static_cast<int64_t>(v.size())});
  set.embedding = embedding_;
  return set;
}

Engine::~Engine() = default;

uint64_t Engine::mapped_bytes() const {
  uint64_t total = 0;
  for (const auto& f : files_) total += f->size();
  return total;
}

void Engine::prefault(const std::atomic<int32_t>* abort, const std::function<void(uint64_t, uint64_t)>& progress) {
  const uint64_t total = mapped_bytes();
  uint64_t done = 0;
  std::atomic<bool> stop{false};
  auto check = [&] {
    if (abort && abort->load(std::memory_order_relaxed)) throw Aborted();
  };
  // EXL2 codes: copy into the engine's blocked layout, then drop the file's pages, so that
  // resident memory holds each layer once.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> skip(files_.size());
  for (const Repack& r : repack_) {
    check();
    exl2_repack(*r.view);
    files_[r.file]->release(r.offset, r.bytes);
    skip[r.file].push_back({r.offset, r.offset + r.bytes});
    done += r.bytes;
    progress(done, total);
  }
  if (backend_->owns_weights()) {
    // The device takes its copy; then the host's copies (repacked EXL2 codes, the mapped
    // files' pages) are dropped.
    const uint64_t base = done;
    backend_->upload(weight_set(), [&](uint64_t bytes) {
      check();
      progress(std::min(total, base + bytes), total);
    });
    device_bytes_ = weight_bytes() + kv_device_bytes_;
    for (const Repack& r : repack_) {
      r.view->repacked.reset();
      r.view->q_weight = nullptr;
    }
    for (auto& f : files_) f->release(0, f->size());
    progress(total, total);
    return;
  }
  // Everything else: touch every page now rather than during the first forward pass.
  for (size_t f = 0; f < files_.size(); f++) {
    auto& ranges = skip[f];
    std::sort(ranges.begin(), ranges.end());
    uint64_t at = 0;
    ranges.push_back({files_[f]->size(), files_[f]->size()});
    for (const auto& [begin, end] : ranges) {
      if (begin > at) {
        const uint64_t base = done;
        files_[f]->prefault(at, begin - at, &stop, [&](uint64_t bytes) {
          if (abort && abort->load(std::memory_order_relaxed)) stop.store(true);
          progress(base + bytes, total);
        });
        done += begin - at;
      }
      at = std::max(at, end);
    }
  }
}

int Engine::create_sequence(bool shared) {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_->create_sequence(shared);
}

int Engine::attach_prefix(int id, const std::vector<int32_t>& tokens) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int n = static_cast<int>(std::min<size_t>(tokens.size(), static_cast<size_t>(shape_.context)));
  return cache_->attach_prefix(id, tokens.data(), n, n - 1);
}

void Engine::free_sequence(int id) {
  std::lock_guard<std::mutex> lock(mutex_);
  cache_->free_sequence(id);
}

int Engine::sequence_length(int id) {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_->length(id);
}

void Engine::truncate_sequence(int id, int length) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (length < 0 || length > cache_->length(id))
    throw Error("truncate: length " + std::to_string(length) + " is outside [0, " +
                std::to_string(cache_->length(id)) + "]");
  cache_->set_length(id, length);
}

Engine::CacheStats Engine::cache_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  return {cache_->page_size(), cache_->pages_in_use(), cache_->max_pages(), cache_->cached_pages(),
          device_ == "cuda" ? static_cast<int64_t>(kv_device_bytes_) : cache_->bytes_allocated()};
}

void Engine::step(const std::vector<StepEntry>& entries, StepResult& result, const std::atomic<int32_t>* abort) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (entries.empty()) throw Error("step: the batch is empty");
  std::set<int> seen;
  int pages_wanted = 0;
  for (const StepEntry& e : entries) {
    if (!cache_->has_sequence(e.sequence)) throw Error("step: unknown sequence " + std::to_string(e.sequence));
    if (!seen.insert(e.sequence).second)
      throw Error("step: sequence " + std::to_string(e.sequence) + " appears twice in one batch");
    if (e.logits == LogitsWanted::Top && (e.top_k < 1 || e.top_k > kMaxTopK))
      throw Error("step: top k must be in [1, " + std::to_string(kMaxTopK) + "] (got " + std::to_string(e.top_k) + ")");
    if (e.tokens.empty()) throw Error("step: sequence " + std::to_string(e.sequence) + " has no tokens");
    for (int32_t t : e.tokens)
      if (t < 0 || t >= shape_.vocab)
        throw Error("step: token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                    std::to_string(shape_.vocab) + ")");
    const int64_t length = cache_->length(e.sequence);
    if (length + static_cast<int64_t>(e.tokens.size()) > shape_.context)
      throw Error("step: sequence " + std::to_string(e.sequence) + " would reach " +
                  std::to_string(length + e.tokens.size()) + " tokens, past the context size of " +
                  std::to_string(shape_.context));
    pages_wanted += cache_->pages_needed(e.sequence, static_cast<int>(e.tokens.size()));
  }
  if (pages_wanted > cache_->free_pages_available())
    throw Error("KV cache is full: this step needs " + std::to_string(pages_wanted) + " more pages of " +
                std::to_string(cache_->page_size()) + " positions, " + std::to_string(cache_->free_pages_available()) +
                " are free");
  std::vector<int> old_length;
  for (const StepEntry& e : entries) {
    old_length.push_back(cache_->length(e.sequence));
    cache_->reserve(e.sequence, static_cast<int>(e.tokens.size()));
  }
  try {
    forward(entries, result, abort);
  } catch (...) {
    for (size_t i = 0; i < entries.size(); i++) cache_->set_length(entries[i].sequence, old_length[i]);
    throw;
  }
  for (const StepEntry& e : entries) cache_->append(e.sequence, e.tokens.data(), static_cast<int>(e.tokens.size()));
}

void Engine::step_rows(const std::vector<StepEntry>& entries, StepRows& rows) {
  for (const StepEntry& e : entries) {
    const int start = cache_->length(e.sequence), n = static_cast<int>(e.tokens.size());
    rows.entry_tokens.push_back(n);
    for (int j = 0; j < n; j++) {
      rows.tokens.push_back(e.tokens[j]);
      rows.positions.push_back(start + j);
      rows.pages.push_back(&cache_->pages(e.sequence));
    }
  }
  // Rotary angles of each position, computed in double precision once for all layers.
  const ModelShape& s = shape_;
  const int T = static_cast<int>(rows.tokens.size()), half = s.head_dim / 2;
  cos_sin_.resize(static_cast<size_t>(T) * s.head_dim);
  for (int t = 0; t < T; t++) {
    for (int i = 0; i < half; i++) {
      const double angle = rows.positions[t] * s.rope_inv_freq[i];
      cos_sin_[t * s.head_dim + i] = static_cast<float>(std::cos(angle));
      cos_sin_[t * s.head_dim + half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

StepBatch Engine::step_batch(const StepRows& rows) const {
  StepBatch batch;
  batch.tokens = static_cast<int>(rows.tokens.size());
  batch.ids = rows.tokens.data();
  batch.positions = rows.positions.data();
  batch.pages = rows.pages.data();
  batch.entry_tokens = rows.entry_tokens.data();
  batch.entries = static_cast<int>(rows.entry_tokens.size());
  batch.cos_sin = cos_sin_.data();
  return batch;
}

Engine::LayerBuffers Engine::layer_buffers(int T) {
  const ModelShape& s = shape_;
  const int64_t H = s.hidden, Q = static_cast<int64_t>(s.heads) * s.head_dim,
                KV = static_cast<int64_t>(s.kv_heads) * s.head_dim, I = s.intermediate;
  Backend& be = *backend_;
  return {be.buffer(Buffer::X, T * H),         be.buffer(Buffer::H, T * H),  be.buffer(Buffer::Q, T * Q),
          be.buffer(Buffer::K, T * KV),        be.buffer(Buffer::V, T * KV), be.buffer(Buffer::Attention, T * Q),
          be.buffer(Buffer::Gate, T * I),      be.buffer(Buffer::Up, T * I)};
}

void Engine::decoder_layer(const DecoderLayerWeights& w, int l, int T, const LayerBuffers& b, int parts,
                           LinearTap* tap) {
  const ModelShape& s = shape_;
  Backend& be = *backend_;
  const int64_t H = s.hidden, Q = static_cast<int64_t>(s.heads) * s.head_dim,
                KV = static_cast<int64_t>(s.kv_heads) * s.head_dim, I = s.intermediate;
  if (parts & kAttentionPart) {
    // Attention: rmsnorm, q/k/v projections, RoPE, cache the keys and values.
    be.rmsnorm(b.x, w.input_norm, s.rms_norm_eps, T, s.hidden, b.h);
    if (tap) tap->input(LinearInput::Qkv, b.h, T, H, H);
    const LinearCall qkv[3] = {{w.q, b.h, H, b.q, Q}, {w.k, b.h, H, b.k, KV}, {w.v, b.h, H, b.v, KV}};
    be.linear(qkv, 3, T);
    be.rope(b.q, T, s.heads, s.head_dim, Q);
    be.rope(b.k, T, s.kv_heads, s.head_dim, KV);
    be.write_kv(*cache_, l, s.kv_heads, s.head_dim, b.k, b.v);
    // Each query head over its sequence's cached positions (causal, grouped KV heads).
    AttentionCall a;
    a.heads = s.heads;
    a.kv_heads = s.kv_heads;
    a.head_dim = s.head_dim;
    a.layer = l;
    a.sliding_window = s.sliding_window;
    a.q = b.q;
    a.out = b.att;
    be.attention(*cache_, a);
    // Output projection and residual.
    if (tap) tap->input(LinearInput::O, b.att, T, Q, Q);
    const LinearCall o = {w.o, b.att, Q, b.h, H};
    be.linear(&o, 1, T);
    be.add(b.x, b.h, T * H);
  }
  if (parts & kMlpPart) {
    // MLP: rmsnorm, SwiGLU, down projection and residual.
    be.rmsnorm(b.x, w.post_attention_norm, s.rms_norm_eps, T, s.hidden, b.h);
    if (tap) tap->input(LinearInput::GateUp, b.h, T, H, H);
    const LinearCall gate_up[2] = {{w.gate, b.h, H, b.gate, I}, {w.up, b.h, H, b.up, I}};
    be.linear(gate_up, 2, T);
    be.swiglu(b.gate, b.up, T * I);
    if (tap) tap->input(LinearInput::Down, b.gate, T, I, I);
    const LinearCall down = {w.down, b.gate, I, b.h, H};
    be.linear(&down, 1, T);
    be.add(b.x, b.h, T * H);
  }
}

void Engine::forward(const std::vector<StepEntry>& entries, StepResult& result, const std::atomic<int32_t>* abort) {
  const ModelShape& s = shape_;
  Backend& be = *backend_;
  const int64_t H = s.hidden;

  // The batch as flat token rows; the rows whose logits are wanted (then those that want
  // only their top k).
  StepRows step;
  step_rows(entries, step);
  std::vector<int> wanted, top;
  int K = 0, at = 0;
  result.rows.clear();
  for (const StepEntry& e : entries) {
    const int n = static_cast<int>(e.tokens.size());
    const int count = e.logits == LogitsWanted::All ? n : e.logits == LogitsWanted::Last ? 1 : 0;
    for (int j = n - count; j < n; j++) wanted.push_back(at + j);
    if (e.logits == LogitsWanted::Top) {
      top.push_back(at + n - 1);
      K = std::max(K, std::min(e.top_k, s.vocab));  // k past the vocabulary: all of it
    }
    result.rows.push_back(count);
    at += n;
  }
  const int full = static_cast<int>(wanted.size()), G = static_cast<int>(top.size());
  wanted.insert(wanted.end(), top.begin(), top.end());
  const int T = static_cast<int>(step.tokens.size()), R = full + G;

  const LayerBuffers b = layer_buffers(T);
  float* rows = be.buffer(Buffer::Rows, std::max(R, 1) * H);
  float* logits = be.buffer(Buffer::Logits, static_cast<size_t>(std::max(R, 1)) * s.vocab);
  float* top_values = be.buffer(Buffer::TopValues, std::max(G * K, 1));
  int32_t* top_ids = be.id_buffer(std::max(G * K, 1));

  StepBatch batch = step_batch(step);
  batch.logit_rows = wanted.data();
  batch.logit_count = R;
  batch.top_count = G;
  batch.top_k = K;
  result.logits.assign(static_cast<size_t>(full) * s.vocab, 0.0f);
  result.top_k = K;
  result.top_values.assign(static_cast<size_t>(G) * K, 0.0f);
  result.top_ids.assign(static_cast<size_t>(G) * K, 0);
  // The step's operations (recorded rather than run when the backend records a decode step).
  auto issue = [&] {
    // Token embeddings.
    be.embed(embedding_, b.x);
    for (int l = 0; l < layers(); l++) {
      throw_if_aborted(abort);
      decoder_layer(layers_[l], l, T, b, kWholeLayer, nullptr);
    }
    // Final norm and output head, for the rows whose logits were asked for.
    if (R > 0) {
      be.gather_rows(b.x, H, rows);
      be.rmsnorm(rows, final_norm_, s.rms_norm_eps, R, s.hidden, b.h);
      const LinearCall head = {lm_head_, b.h, H, logits, s.vocab};
      be.linear(&head, 1, R);
      if (G > 0) be.top_k(logits + static_cast<size_t>(full) * s.vocab, G, s.vocab, K, top_values, top_ids);
    }
  };
  try {
    do {
      if (be.begin_step(batch)) issue();
      throw_if_aborted(abort);
    } while (!be.end_step(logits, full, s.vocab, result.logits.data(), top_values, top_ids, G * K,
                          result.top_values.data(), result.top_ids.data()));
  } catch (...) {
    be.cancel_step();
    throw;
  }
}

void Engine::run_layer(int layer, const DecoderLayerWeights& w, float* x, const std::vector<int>& lengths, int parts,
                       LinearTap* tap) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (device_ != "cpu") throw Error("run_layer: layers run one at a time on the CPU engine only");
  if (layer < 0 || layer >= layers()) throw Error("run_layer: layer " + std::to_string(layer) + " is out of range");
  if (lengths.empty()) throw Error("run_layer: no sequences");
  // Each sequence in its own temporary place in the KV cache, freed whatever happens.
  std::vector<StepEntry> entries;
  struct Release {
    KvCache& cache;
    std::vector<StepEntry>& entries;
    ~Release() {
      for (const StepEntry& e : entries) cache.free_sequence(e.sequence);
    }
  } release{*cache_, entries};
  int pages = 0;
  for (int n : lengths) {
    if (n <= 0 || n > shape_.context)
      throw Error("run_layer: a sequence of " + std::to_string(n) + " tokens is outside [1, " +
                  std::to_string(shape_.context) + "]");
    StepEntry e;
    e.sequence = cache_->create_sequence();
    e.logits = LogitsWanted::None;
    e.tokens.assign(n, 0);
    entries.push_back(std::move(e));
    pages += cache_->pages_needed(entries.back().sequence, n);
  }
  if (pages > cache_->free_pages_available())
    throw Error("run_layer: the sequences need " + std::to_string(pages) + " KV cache pages, " +
                std::to_string(cache_->free_pages_available()) + " are free");
  for (const StepEntry& e : entries) cache_->reserve(e.sequence, static_cast<int>(e.tokens.size()));
  StepRows rows;
  step_rows(entries, rows);
  const int T = static_cast<int>(rows.tokens.size());
  const LayerBuffers b = layer_buffers(T);
  Backend& be = *backend_;
  const size_t bytes = static_cast<size_t>(T) * shape_.hidden * sizeof(float);
  std::memcpy(b.x, x, bytes);
  be.begin_step(step_batch(rows));
  try {
    decoder_layer(w, layer, T, b, parts, tap);
  } catch (...) {
    be.cancel_step();
    throw;
  }
  be.end_step(nullptr, 0, shape_.vocab, nullptr, nullptr, nullptr, 0, nullptr, nullptr);
  std::memcpy(x, b.x, bytes);
}

void Engine::embed(const int32_t* ids, int n, float* x) const {
  for (int r = 0; r < n; r++) {
    if (ids[r] < 0 || ids[r] >= shape_.vocab)
      throw Error("embed: token id " + std::to_string(ids[r]) + " is outside the vocabulary");
    embed_row(embedding_, ids[r], x + static_cast<int64_t>(r) * shape_.hidden);
  }
}

void Engine::head_input(const float* x, int n, float* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (device_ != "cpu") throw Error("head_input: the CPU engine only");
  backend_->rmsnorm(x, final_norm_, shape_.rms_norm_eps, n, shape_.hidden, out);
}

}  // namespace laminate
