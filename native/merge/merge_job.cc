#include "merge_job.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>

#include "../core/error.h"
#include "../core/mapped_file.h"
#include "../core/utf8_file.h"
#include "../exl2/loader.h"
#include "numerics.h"

namespace laminate {
namespace {

constexpr size_t kChunk = 1 << 20;  // elements per streamed chunk

// Elements of a shape; throws when a dimension is negative or the count (in bytes of the
// widest type) would not fit 64 bits, so that no bounds check below can wrap around.
size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("negative dimension in a tensor shape");
    if (d != 0 && n > (SIZE_MAX / 8) / static_cast<size_t>(d)) throw Error("tensor shape too large");
    n *= static_cast<size_t>(d);
  }
  return n;
}

// Writes sequentially to one output file, with clear errors (e.g. a full disk).
class Output {
 public:
  explicit Output(const std::string& path) : path_(path) {
    file_ = fopen_utf8(path, "wb");
    if (!file_) throw Error(path + ": cannot create: " + std::strerror(errno));
    std::setvbuf(file_, nullptr, _IOFBF, 8 << 20);
  }
  ~Output() {
    if (file_) std::fclose(file_);
  }
  void write(const void* data, size_t bytes) {
    if (bytes && std::fwrite(data, 1, bytes, file_) != bytes) throw Error(path_ + ": write failed: " + std::strerror(errno));
  }
  void close() {
    if (std::fflush(file_) != 0 || std::fclose(file_) != 0) {
      file_ = nullptr;
      throw Error(path_ + ": write failed: " + std::strerror(errno));
    }
    file_ = nullptr;
  }

 private:
  std::string path_;
  FILE* file_ = nullptr;
};

// One input tensor, read as float32 and cast to the working dtype when the config says so.
struct Source {
  const uint8_t* data;
  DType dtype;
  bool cast;
  DType work;
  float at(size_t i) const {
    float x = load_as_f32(data, dtype, i);
    return cast ? round_to(work, x) : x;
  }
};

class TensorMerger {
 public:
  TensorMerger(const MergeTensor& t, const std::vector<std::unique_ptr<MappedFile>>& files, uint64_t seed, Output& out,
               const std::atomic<int32_t>* abort)
      : t_(t), files_(files), out_(out), abort_(abort), rng_(seed) {
    n_ = element_count(t.shape);
    for (const MergeInput& in : t.inputs) {
      const MappedFile& f = *files[in.file];
      sources_.push_back({f.data() + in.offset, in.dtype, t.has_work_dtype, t.work_dtype});
    }
    work_ = t.has_work_dtype ? t.work_dtype : t.inputs.front().dtype;
    if (t.base >= 0) work_ = sources_[t.base].cast ? work_ : sources_[t.base].dtype;
  }

  void run() {
    switch (t_.method) {
      case MergeMethod::Passthrough: passthrough(); break;
      case MergeMethod::Linear: linear(); break;
      case MergeMethod::Slerp: slerp(); break;
      case MergeMethod::TaskArithmetic: task_arithmetic(); break;
      case MergeMethod::ModelStock: model_stock(); break;
      case MergeMethod::Exl2Dequantize: exl2_dequantize_tensor(); break;
    }
    // done with the inputs: their pages need not stay resident
    for (const MergeInput& in : t_.inputs) files_[in.file]->release(in.offset, input_bytes(in));
  }

 private:
  float r(float x) const { return round_to(work_, x); }

  void check_abort() const {
    if (abort_ && abort_->load(std::memory_order_relaxed)) throw Aborted();
  }

  // Streams out[i] = f(i) in chunks, converted to the output dtype.
  template <class F>
  void emit(F&& f) {
    const size_t esize = dtype_size(t_.out_dtype);
    std::vector<uint8_t> buffer(std::min(n_, kChunk) * esize);
    for (size_t i0 = 0; i0 < n_; i0 += kChunk) {
      check_abort();
      const size_t i1 = std::min(n_, i0 + kChunk);
      for (size_t i = i0; i < i1; i++) store_as(t_.out_dtype, f(i), buffer.data(), i - i0);
      out_.write(buffer.data(), (i1 - i0) * esize);
    }
  }

  void passthrough() {
    const MergeInput& in = t_.inputs.front();
    const Source& s = sources_.front();
    const bool same_bits = !in.has_scale && in.dtype == t_.out_dtype && (!s.cast || s.work == in.dtype);
    if (same_bits) {
      // a copy of the stored bytes
      const size_t bytes = n_ * dtype_size(in.dtype);
      const size_t step = 64 << 20;
      for (size_t b = 0; b < bytes; b += step) {
        check_abort();
        const size_t n = std::min(step, bytes - b);
        out_.write(s.data + b, n);
        files_[in.file]->release(in.offset + b, n);
      }
      return;
    }
    if (!in.has_scale) return emit([&](size_t i) { return s.at(i); });
    const float scale = static_cast<float>(in.scale);
    emit([&](size_t i) { return r(s.at(i) * scale); });
  }

  // The per-model weights as tensors of the working dtype.
  std::vector<float> weights() const {
    std::vector<float> w;
    for (const MergeInput& in : t_.inputs) w.push_back(r(static_cast<float>(in.weight)));
    return w;
  }

  void linear() {
    const std::vector<float> w = weights();
    float total = 0.0f;
    for (float x : w) total += x;
    const float divisor = r(total);
    emit([&](size_t i) {
      float sum = 0.0f;
      for (size_t m = 0; m < sources_.size(); m++) sum += r(w[m] * sources_[m].at(i));
      float out = r(sum);
      return t_.normalize ? r(out / divisor) : out;
    });
  }

  void slerp() {
    const Source& v0 = sources_[t_.base];
    const Source& v1 = sources_[1 - t_.base];
    double n0 = 0, n1 = 0;
    for (size_t i = 0; i < n_; i++) {
      const double a = v0.at(i), b = v1.at(i);
      n0 += a * a;
      n1 += b * b;
    }
    n0 = std::sqrt(n0);
    n1 = std::sqrt(n1);
    const double s0n = n0 > 1e-8 ? n0 : 1.0, s1n = n1 > 1e-8 ? n1 : 1.0;
    double dot = 0;
    for (size_t i = 0; i < n_; i++) dot += (v0.at(i) / s0n) * (v1.at(i) / s1n);
    const float t = static_cast<float>(t_.t);
    if (std::fabs(dot) > 0.9995) {
      emit([&](size_t i) { return (1.0f - t) * v0.at(i) + t * v1.at(i); });
      return;
    }
    const double theta = std::acos(dot), sin_theta = std::sin(theta);
    const float c0 = static_cast<float>(std::sin(theta - t_.t * theta) / sin_theta);
    const float c1 = static_cast<float>(std::sin(t_.t * theta) / sin_theta);
    emit([&](size_t i) { return c0 * v0.at(i) + c1 * v1.at(i); });
  }

  // Keeps a subset of delta (mask) as the sparsification method says.
  std::vector<uint8_t> sparsify_mask(const std::vector<float>& delta, const MergeInput& in) {
    const size_t n = delta.size();
    std::vector<uint8_t> keep(n, 1);
    if (t_.sparsify == Sparsify::None || (t_.sparsify != Sparsify::MagnitudeOutliers && in.density >= 1.0)) return keep;
    if (!std::isfinite(in.density) || !std::isfinite(in.gamma)) throw Error("tensor '" + t_.name + "': density and gamma must be finite numbers");
    if (t_.sparsify == Sparsify::Random) {
      if (in.density < 0) throw Error("tensor '" + t_.name + "': density " + std::to_string(in.density) + " is negative");
      const float p = r(static_cast<float>(in.density));
      std::uniform_real_distribution<float> u(0.0f, 1.0f);
      for (size_t i = 0; i < n; i++) keep[i] = u(rng_) < p;
      return keep;
    }
    // Order by magnitude; among equal magnitudes the lower index counts as larger.
    std::vector<uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    auto ascending = [&](uint32_t a, uint32_t b) {
      const float x = std::fabs(delta[a]), y = std::fabs(delta[b]);
      return x < y || (x == y && a > b);
    };
    std::fill(keep.begin(), keep.end(), 0);
    if (t_.sparsify == Sparsify::Magnitude) {
      const size_t k = in.density > 0 ? static_cast<size_t>(in.density * static_cast<double>(n)) : 0;
      if (k == 0) throw Error("tensor '" + t_.name + "': density " + std::to_string(in.density) + " keeps no element");
      std::nth_element(order.begin(), order.begin() + (n - k), order.end(), ascending);
      for (size_t j = n - k; j < n; j++) keep[order[j]] = 1;
      return keep;
    }
    // magnitude outliers (breadcrumbs): drop the smallest and the `gamma` largest
    int64_t n_top = static_cast<int64_t>(in.gamma * static_cast<double>(n));
    const int64_t target = static_cast<int64_t>(in.density * static_cast<double>(n));
    int64_t n_bot = static_cast<int64_t>(n) - target - n_top;
    if (n_bot < 0) {
      n_top += n_bot;
      n_bot = 0;
    }
    // mergekit keeps sorted[n_bot:-n_top], with Python's slicing: -0 ends at 0 (nothing is
    // kept), and a negative n_top (density above 1, or gamma below 0) ends at |n_top|
    const int64_t count = static_cast<int64_t>(n);
    const int64_t begin = std::min(n_bot, count);
    const int64_t end = n_top > 0 ? count - n_top : std::min(-n_top, count);
    if (end <= begin) return keep;
    std::sort(order.begin(), order.end(), ascending);
    for (int64_t j = begin; j < end; j++) keep[order[j]] = 1;
    return keep;
  }

  void task_arithmetic() {
    const Source& b = sources_[t_.base];
    const std::vector<float> w_all = weights();
    std::vector<size_t> models;
    for (size_t m = 0; m < sources_.size(); m++)
      if (static_cast<int>(m) != t_.base) models.push_back(m);
    if (models.empty()) return emit([&](size_t i) { return b.at(i); });

    // Sparsified deltas need the whole tensor; otherwise everything streams.
    std::vector<std::vector<float>> deltas(models.size());
    std::vector<std::vector<uint8_t>> masks(models.size());
    const bool whole = t_.sparsify != Sparsify::None;
    if (whole) {
      for (size_t j = 0; j < models.size(); j++) {
        check_abort();
        const Source& x = sources_[models[j]];
        std::vector<float>& d = deltas[j];
        d.resize(n_);
        for (size_t i = 0; i < n_; i++) d[i] = r(x.at(i) - b.at(i));
        masks[j] = sparsify_mask(d, t_.inputs[models[j]]);
        std::vector<uint8_t>& mask = masks[j];
        if (t_.rescale) {
          double a = 0, kept = 0;
          for (size_t i = 0; i < n_; i++) {
            a += std::fabs(d[i]);
            if (mask[i]) kept += std::fabs(d[i]);
          }
          const float A = r(static_cast<float>(a)), B = r(static_cast<float>(kept));
          const bool plain = A < 1e-7f || B < 1e-7f;
          const float factor = plain ? 1.0f : r(A / B);
          for (size_t i = 0; i < n_; i++) d[i] = mask[i] ? (plain ? d[i] : r(d[i] * factor)) : d[i] * 0.0f;
        } else {
          for (size_t i = 0; i < n_; i++)
            if (!mask[i]) d[i] = d[i] * 0.0f;
        }
      }
    }
    float weight_sum = 0.0f;
    for (size_t m : models) weight_sum += w_all[m];
    float divisor = r(weight_sum);
    if (std::fabs(divisor) < 1e-8f) divisor = 1.0f;
    const float lambda = static_cast<float>(t_.lambda);
    std::vector<float> big(models.size());
    emit([&](size_t i) {
      const float base = b.at(i);
      for (size_t j = 0; j < models.size(); j++) {
        const float d = whole ? deltas[j][i] : r(sources_[models[j]].at(i) - base);
        big[j] = r(w_all[models[j]] * d);
      }
      float mix, div;
      if (t_.consensus) {
        float s = 0.0f;
        for (float v : big) s += v;
        const float sign = r(s) >= 0.0f ? 1.0f : -1.0f;
        float mixed = 0.0f, weights = 0.0f;
        for (size_t j = 0; j < models.size(); j++) {
          const float v = big[j];
          const float vs = v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : 0.0f;
          const bool agree = vs == sign;
          mixed += agree ? v : v * 0.0f;
          weights += agree ? w_all[models[j]] : 0.0f;
        }
        mix = r(mixed);
        div = r(weights);
        if (div == 0.0f) div = 1.0f;
      } else {
        float s = 0.0f;
        for (float v : big) s += v;
        mix = r(s);
        div = divisor;
      }
      if (t_.normalize) mix = r(mix / div);
      if (lambda != 1.0f) mix = r(mix * lambda);
      return r(base + mix);
    });
  }

  void model_stock() {
    // out = t * mean(x_i) + (1 - t) * b, t from the mean pairwise cosine of the offsets
    // (over the whole tensor, or per row with filter_wise).
    const Source& b = sources_[t_.base];
    std::vector<size_t> models;
    for (size_t m = 0; m < sources_.size(); m++)
      if (static_cast<int>(m) != t_.base) models.push_back(m);
    const size_t k = models.size();
    if (n_ == 0) return;
    const size_t rows = t_.filter_wise && t_.shape.size() >= 2 ? static_cast<size_t>(t_.shape[0]) : 1;
    const size_t per_row = n_ / rows;
    std::vector<double> t_row(rows);
    std::vector<double> dots(k * k);
    for (size_t row = 0; row < rows; row++) {
      std::fill(dots.begin(), dots.end(), 0.0);
      for (size_t i = row * per_row; i < (row + 1) * per_row; i++) {
        const double base = b.at(i);
        for (size_t a = 0; a < k; a++) {
          const double da = sources_[models[a]].at(i) - base;
          for (size_t c = a; c < k; c++) dots[a * k + c] += da * (sources_[models[c]].at(i) - base);
        }
      }
      double cos_sum = 0;
      size_t pairs = 0;
      for (size_t a = 0; a < k; a++)
        for (size_t c = a + 1; c < k; c++) {
          const double norm = std::max(std::sqrt(dots[a * k + a]) * std::sqrt(dots[c * k + c]), 1e-6);
          cos_sum += dots[a * k + c] / norm;
          pairs++;
        }
      const double cos = pairs ? cos_sum / static_cast<double>(pairs) : 0.0;
      const double kk = static_cast<double>(k);
      t_row[row] = kk * cos / (1.0 + (kk - 1.0) * cos);
    }
    emit([&](size_t i) {
      const double t = t_row[i / per_row];
      double mean = 0;
      for (size_t m : models) mean += sources_[m].at(i);
      mean /= static_cast<double>(k);
      return static_cast<float>(t * mean + (1.0 - t) * b.at(i));
    });
  }

  // The exact dequantized weight of an EXL2 layer, as [out_features, in_features]; its inputs
  // are the layer's stored tensors `<key>.q_weight` etc. for the output `<key>.weight`.
  void exl2_dequantize_tensor() {
    const std::string suffix = ".weight";
    const bool named = t_.name.size() > suffix.size() && t_.name.compare(t_.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    const std::string key = named ? t_.name.substr(0, t_.name.size() - suffix.size()) : t_.name;
    auto raw = [&](int i) {
      const MergeInput& in = t_.inputs[i];
      return RawTensor{files_[in.file]->data() + in.offset, in.dtype, in.shape,
                       files_[in.file]->path() + ": tensor '" + key + "." + kExl2TensorNames[i] + "'"};
    };
    const int64_t n = t_.shape[0], k = t_.shape[1];
    const Exl2View view = load_exl2(raw(0), raw(1), raw(2), raw(3), raw(4), n, k);
    std::vector<float> w(static_cast<size_t>(n * k));
    exl2_dequantize(view, n, k, w.data());
    emit([&](size_t i) { return w[i]; });
  }

  size_t input_bytes(const MergeInput& in) const { return element_count(in.shape) * dtype_size(in.dtype); }

  const MergeTensor& t_;
  const std::vector<std::unique_ptr<MappedFile>>& files_;
  Output& out_;
  const std::atomic<int32_t>* abort_;
  std::mt19937_64 rng_;
  size_t n_ = 0;
  std::vector<Source> sources_;
  DType work_ = DType::BF16;
};

}  // namespace

void run_merge(const MergeJob& job, const std::atomic<int32_t>* abort,
               const std::function<void(uint64_t, uint64_t)>& progress) {
  std::vector<std::unique_ptr<MappedFile>> files;
  for (const std::string& path : job.files) files.push_back(std::make_unique<MappedFile>(path));
  // Every input must lie inside its file.
  uint64_t total = 0;
  for (const MergeTensor& t : job.tensors) {
    if (t.inputs.empty()) throw Error("tensor '" + t.name + "': no inputs");
    if (t.base >= static_cast<int>(t.inputs.size())) throw Error("tensor '" + t.name + "': base index out of range");
    const size_t n = element_count(t.shape);
    total += n * dtype_size(t.out_dtype);
    const bool raw = t.method == MergeMethod::Exl2Dequantize;
    auto is_float = [](DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; };
    if (!is_float(t.out_dtype) || (t.has_work_dtype && !is_float(t.work_dtype)))
      throw Error("tensor '" + t.name + "': the output and working dtypes must be F32, F16 or BF16");
    if (raw && (t.inputs.size() != 5 || t.shape.size() != 2)) throw Error("tensor '" + t.name + "': EXL2 needs its five tensors");
    for (const MergeInput& in : t.inputs) {
      if (in.file < 0 || in.file >= static_cast<int>(files.size())) throw Error("tensor '" + t.name + "': file index out of range");
      if (!raw && element_count(in.shape) != n) throw Error("tensor '" + t.name + "': input shapes differ");
      if (!raw && !is_float(in.dtype)) throw Error("tensor '" + t.name + "': inputs must be F32, F16 or BF16");
      const uint64_t bytes = element_count(in.shape) * dtype_size(in.dtype);
      const MappedFile& f = *files[in.file];
      if (in.offset > f.size() || bytes > f.size() - in.offset)
        throw Error(f.path() + ": tensor '" + t.name + "' data lies past the end of the file");
    }
    if ((t.method == MergeMethod::Slerp && (t.inputs.size() != 2 || t.base < 0)) ||
        ((t.method == MergeMethod::TaskArithmetic || t.method == MergeMethod::ModelStock) && t.base < 0))
      throw Error("tensor '" + t.name + "': the method needs a base model");
  }
  uint64_t done = 0;
  uint64_t seed = job.seed;
  for (const MergeShard& shard : job.shards) {
    Output out(shard.path);
    out.write(shard.header.data(), shard.header.size());
    for (int index : shard.tensors) {
      if (index < 0 || index >= static_cast<int>(job.tensors.size())) throw Error("shard tensor index out of range");
      const MergeTensor& t = job.tensors[index];
      TensorMerger(t, files, seed++, out, abort).run();
      done += element_count(t.shape) * dtype_size(t.out_dtype);
      progress(done, total);
    }
    out.close();
  }
}

}  // namespace laminate
