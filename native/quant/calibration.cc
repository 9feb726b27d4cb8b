#include "calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "../core/error.h"
#include "../core/utf8_file.h"
#include "../core/vector_clones.h"

namespace laminate {

namespace {

// acc[a][b] += x[r][i0 + a] * x[r][j0 + b] over rows [r0, r1) (acc: ni x 64 floats).
LAMINATE_VECTOR_CLONES void outer_products(const float* x, int64_t ld, int r0, int r1, int64_t i0, int64_t ni, int64_t j0,
                                           int64_t nj, float* acc) {
  for (int r = r0; r < r1; r++) {
    const float* xr = x + r * ld;
    for (int64_t a = 0; a < ni; a++) {
      const float xa = xr[i0 + a];
      float* row = acc + a * 64;
      for (int64_t b = 0; b < nj; b++) row[b] += xa * xr[j0 + b];
    }
  }
}

// Accumulates H += X^T X over linear inputs: upper-triangle tiles of H, each summed in
// float over short runs of rows and added to the double sums (fixed order: the result does
// not depend on the thread count).
class HessianTap : public LinearTap {
 public:
  HessianTap(LinearInput which, int64_t k, ThreadPool& pool) : which_(which), k_(k), pool_(pool), h_(static_cast<size_t>(k * k), 0.0) {}

  void input(LinearInput which, const float* x, int rows, int64_t cols, int64_t ld) override {
    if (which != which_) return;
    if (cols != k_) throw Error("Hessian: input width " + std::to_string(cols) + ", expected " + std::to_string(k_));
    const int64_t tiles = (k_ + kTile - 1) / kTile;
    std::vector<std::pair<int64_t, int64_t>> pairs;
    for (int64_t i = 0; i < tiles; i++)
      for (int64_t j = i; j < tiles; j++) pairs.push_back({i, j});
    pool_.parallel_for(static_cast<int>(pairs.size()), [&](int t, int) {
      const int64_t i0 = pairs[t].first * kTile, j0 = pairs[t].second * kTile;
      const int64_t ni = std::min(kTile, k_ - i0), nj = std::min(kTile, k_ - j0);
      float acc[kTile * kTile];
      for (int r0 = 0; r0 < rows; r0 += kRun) {
        std::fill(acc, acc + kTile * kTile, 0.0f);
        outer_products(x, ld, r0, std::min(rows, r0 + kRun), i0, ni, j0, nj, acc);
        for (int64_t a = 0; a < ni; a++)
          for (int64_t b = 0; b < nj; b++) h_[(i0 + a) * k_ + j0 + b] += acc[a * kTile + b];
      }
    });
  }

  int64_t k() const { return k_; }
  // The whole symmetric matrix.
  const std::vector<double>& hessian() {
    for (int64_t i = 0; i < k_; i++)
      for (int64_t j = 0; j < i; j++) h_[i * k_ + j] = h_[j * k_ + i];
    return h_;
  }

 private:
  static constexpr int64_t kTile = 64;  // outer_products' row length
  static constexpr int kRun = 256;
  LinearInput which_;
  int64_t k_;
  ThreadPool& pool_;
  std::vector<double> h_;
};

// Which input each linear of a block reads, and which slot of DecoderLayerWeights it is.
LinearInput input_of(Block block, int m) {
  if (block == Block::Attention) return m < 3 ? LinearInput::Qkv : LinearInput::O;
  return m < 2 ? LinearInput::GateUp : LinearInput::Down;
}

const LinearWeight*& slot(DecoderLayerWeights& w, Block block, int m) {
  if (block == Block::Attention) return m == 0 ? w.q : m == 1 ? w.k : m == 2 ? w.v : w.o;
  return m == 0 ? w.gate : m == 1 ? w.up : w.down;
}

// A dense fp16 weight over a quantized linear's dequantized values, with the original bias.
std::unique_ptr<LinearWeight> dequantized(const QuantizedLinear& q, const LinearWeight& original) {
  auto w = std::make_unique<LinearWeight>();
  w->format = WeightFormat::Dense;
  w->rows = q.n;
  w->cols = q.k;
  w->dense = DenseView{q.weight.data(), DType::F16, q.n, q.k};
  w->bias = original.bias;
  return w;
}

}  // namespace

Calibration::Calibration(std::shared_ptr<Engine> engine, std::vector<int32_t> tokens, int rows, int length, int threads,
                         int chunk_tokens)
    : engine_(std::move(engine)), rows_(rows), length_(length), hidden_(engine_->shape().hidden),
      chunk_rows_(std::max(1, chunk_tokens / std::max(1, length))), pool_(threads) {
  if (engine_->device() != "cpu") throw Error("quantize: the model must be loaded on the CPU");
  if (rows <= 0 || length <= 0) throw Error("calibration: rows and length must be positive");
  if (static_cast<int64_t>(rows) * length != static_cast<int64_t>(tokens.size()))
    throw Error("calibration: " + std::to_string(tokens.size()) + " token ids are not " + std::to_string(rows) + " rows of " + std::to_string(length));
  x_.resize(tokens.size() * hidden_);
  engine_->embed(tokens.data(), static_cast<int>(tokens.size()), x_.data());
}

void Calibration::run(Block block, const DecoderLayerWeights& w, std::vector<float>& x, LinearTap* tap,
                      const std::atomic<int32_t>* abort) {
  const int parts = block == Block::Attention ? kAttentionPart : kMlpPart;
  for (int r0 = 0; r0 < rows_; r0 += chunk_rows_) {
    throw_if_aborted(abort);
    const int r1 = std::min(rows_, r0 + chunk_rows_);
    std::vector<int> lengths(r1 - r0, length_);
    engine_->run_layer(next_layer_, w, x.data() + static_cast<size_t>(r0) * length_ * hidden_, lengths, parts, tap);
  }
}

double Calibration::relative_error(const std::vector<float>& y, const std::vector<float>& ref) const {
  const size_t row = static_cast<size_t>(length_) * hidden_;
  double total = 0;
  for (int r = 0; r < rows_; r++) {
    double diff = 0, norm = 0;
    for (size_t i = r * row; i < (r + 1) * row; i++) {
      const double d = static_cast<double>(y[i]) - ref[i];
      diff += d * d;
      norm += static_cast<double>(ref[i]) * ref[i];
    }
    total += norm > 0 ? std::sqrt(diff / norm) : (diff > 0 ? 1.0 : 0.0);
  }
  return total / rows_;
}

void Calibration::advance(Block block) {
  if (block == Block::Mlp) next_layer_++;
  next_block_ = block == Block::Attention ? 1 : 0;
}

std::vector<double> Calibration::measure(Block block, const std::vector<std::vector<std::vector<QuantGroup>>>& layouts,
                                         const std::vector<std::vector<int>>& combos,
                                         const std::atomic<int32_t>* abort, const JobProgress& progress) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (next_layer_ >= engine_->layers()) throw Error("measure: every layer has been passed");
  if (static_cast<int>(block) != next_block_) throw Error("measure: the next block is the other one");
  const int count = block_linears(block);
  if (static_cast<int>(layouts.size()) != count) throw Error("measure: give candidate layouts for each linear of the block");
  for (const auto& c : combos) {
    if (static_cast<int>(c.size()) != count) throw Error("measure: a combination must pick a layout for each linear");
    for (int m = 0; m < count; m++)
      if (c[m] < 0 || c[m] >= static_cast<int>(layouts[m].size())) throw Error("measure: a combination picks a layout that does not exist");
  }
  uint64_t total = combos.size(), done = 0;
  for (const auto& l : layouts) total += l.size();

  // The unquantized block: its output and its Hessians.
  DecoderLayerWeights original_w = engine_->layer_weights(next_layer_);
  std::vector<float> ref = x_;
  std::map<LinearInput, std::unique_ptr<HessianTap>> taps;
  for (int m = 0; m < count; m++) {
    const LinearInput in = input_of(block, m);
    if (!taps.count(in)) taps[in] = std::make_unique<HessianTap>(in, slot(original_w, block, m)->cols, pool_);
  }
  struct Taps : LinearTap {  // every input a Hessian is wanted for
    std::map<LinearInput, std::unique_ptr<HessianTap>>* taps;
    void input(LinearInput which, const float* x, int rows, int64_t cols, int64_t ld) override {
      auto it = taps->find(which);
      if (it != taps->end()) it->second->input(which, x, rows, cols, ld);
    }
  } all;
  all.taps = &taps;
  run(block, original_w, ref, &all, abort);
  std::map<LinearInput, PreparedHessian> prepared;
  for (auto& [in, tap] : taps) prepared[in] = prepare_hessian(tap->hessian().data(), tap->k(), pool_, abort);
  taps.clear();

  // Every candidate of every linear.
  std::vector<std::vector<QuantizedLinear>> quantized(count);
  std::vector<std::vector<std::unique_ptr<LinearWeight>>> weights(count);
  for (int m = 0; m < count; m++) {
    const LinearWeight& w = *slot(original_w, block, m);
    if (w.format != WeightFormat::Dense) throw Error("quantize: the source model's weights must be F32, F16 or BF16");
    for (const auto& layout : layouts[m]) {
      throw_if_aborted(abort);
      quantized[m].push_back(gptq_quantize(w.dense, prepared.at(input_of(block, m)), layout, true, pool_, abort));
      weights[m].push_back(dequantized(quantized[m].back(), w));
      progress(++done, total);
    }
  }
  // Each combination on the real block output.
  std::vector<double> errors;
  std::vector<float> y;
  for (const auto& c : combos) {
    DecoderLayerWeights w = original_w;
    for (int m = 0; m < count; m++) slot(w, block, m) = weights[m][c[m]].get();
    y = x_;
    run(block, w, y, nullptr, abort);
    errors.push_back(relative_error(y, ref));
    progress(++done, total);
  }
  x_ = std::move(ref);
  advance(block);
  return errors;
}

std::vector<QuantizedLinear> Calibration::quantize(Block block, const std::vector<std::vector<QuantGroup>>& layouts,
                                                   const std::atomic<int32_t>* abort, const JobProgress& progress,
                                                   double* error) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (next_layer_ >= engine_->layers()) throw Error("quantize: every layer has been passed");
  if (static_cast<int>(block) != next_block_) throw Error("quantize: the next block is the other one");
  const int count = block_linears(block);
  if (static_cast<int>(layouts.size()) != count) throw Error("quantize: give a layout for each linear of the block");
  DecoderLayerWeights original_w = engine_->layer_weights(next_layer_);
  DecoderLayerWeights w = original_w;
  std::vector<QuantizedLinear> out(count);
  std::vector<std::unique_ptr<LinearWeight>> replaced(count);
  std::vector<float> y, ref;
  // Stage by stage: the linears that read one input, with the Hessian of that input as the
  // block runs with everything before it quantized. The first run, with nothing quantized
  // yet, gives the unquantized output that the error is reported against.
  const uint64_t total = count + 1;
  uint64_t done = 0;
  for (int m = 0; m < count;) {
    const LinearInput in = input_of(block, m);
    int end = m;
    while (end < count && input_of(block, end) == in) end++;
    HessianTap tap(in, slot(w, block, m)->cols, pool_);
    y = x_;
    run(block, w, y, &tap, abort);
    if (m == 0) ref = y;
    const PreparedHessian h = prepare_hessian(tap.hessian().data(), slot(w, block, m)->cols, pool_, abort);
    for (; m < end; m++) {
      throw_if_aborted(abort);
      const LinearWeight& source = *slot(original_w, block, m);
      if (source.format != WeightFormat::Dense) throw Error("quantize: the source model's weights must be F32, F16 or BF16");
      out[m] = gptq_quantize(source.dense, h, layouts[m], true, pool_, abort);
      replaced[m] = dequantized(out[m], source);
      slot(w, block, m) = replaced[m].get();
      progress(++done, total);
    }
  }
  y = x_;
  run(block, w, y, nullptr, abort);
  if (error) *error = relative_error(y, ref);
  x_ = std::move(y);
  advance(block);
  progress(total, total);
  return out;
}

QuantizedLinear Calibration::quantize_head(const std::vector<QuantGroup>& layout, bool error_feedback,
                                           const std::atomic<int32_t>* abort) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (next_layer_ != engine_->layers()) throw Error("quantize head: the decoder layers come first");
  const LinearWeight& head = engine_->lm_head();
  if (head.format != WeightFormat::Dense) throw Error("quantize: the source model's head must be F32, F16 or BF16");
  HessianTap tap(LinearInput::Qkv, hidden_, pool_);
  const size_t row = static_cast<size_t>(length_) * hidden_;
  std::vector<float> normed(row * chunk_rows_);
  for (int r0 = 0; r0 < rows_; r0 += chunk_rows_) {
    throw_if_aborted(abort);
    const int r1 = std::min(rows_, r0 + chunk_rows_), n = (r1 - r0) * length_;
    engine_->head_input(x_.data() + r0 * row, n, normed.data());
    tap.input(LinearInput::Qkv, normed.data(), n, hidden_, hidden_);
  }
  throw_if_aborted(abort);
  const PreparedHessian h = prepare_hessian(tap.hessian().data(), hidden_, pool_, abort);
  return gptq_quantize(head.dense, h, layout, error_feedback, pool_, abort);
}

void Calibration::save(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mutex_);
  FILE* f = fopen_utf8(path, "wb");
  if (!f) throw Error(path + ": cannot write the calibration state");
  const int32_t header[6] = {0x4c41434c, rows_, length_, hidden_, next_layer_, next_block_};
  bool ok = std::fwrite(header, sizeof header, 1, f) == 1 && std::fwrite(x_.data(), sizeof(float), x_.size(), f) == x_.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok) throw Error(path + ": writing the calibration state failed (disk full?)");
}

void Calibration::load(const std::string& path, int next_layer, int next_block) {
  std::lock_guard<std::mutex> lock(mutex_);
  FILE* f = fopen_utf8(path, "rb");
  if (!f) throw Error(path + ": cannot read the calibration state");
  int32_t header[6];
  std::vector<float> x(x_.size());
  const bool ok = std::fread(header, sizeof header, 1, f) == 1 && std::fread(x.data(), sizeof(float), x.size(), f) == x.size() &&
                  std::fgetc(f) == EOF;
  std::fclose(f);
  if (!ok || header[0] != 0x4c41434c || header[1] != rows_ || header[2] != length_ || header[3] != hidden_ ||
      header[4] != next_layer || header[5] != next_block || next_layer < 0 || next_layer > engine_->layers() ||
      (next_layer == engine_->layers() && next_block != 0))
    throw Error(path + ": the calibration state does not belong to this job");
  x_ = std::move(x);
  next_layer_ = next_layer;
  next_block_ = next_block;
}

}  // namespace laminate
