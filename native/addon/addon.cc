// The N-API boundary: one JS class per native handle (Engine), argument checks, and async
// workers that run loading and forward passes off the JS thread.
#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/error.h"
#include "../core/thread_pool.h"
#include "../engine/engine.h"
#include "args.h"
#include "exl2_binding.h"
#include "merge_binding.h"
#include "progress_job.h"
#include "quant_binding.h"
#ifdef LAMINATE_WITH_CUDA
#include "../cuda/device.h"
#include "cuda_binding.h"
#endif

namespace laminate {
namespace {

// Marks JS Engine objects, so that engine_of() can tell them from any other object.
const napi_type_tag kEngineTag = {0x6c616d696e617465, 0x656e67696e650001};


int optional_index(const Napi::Object& o, const char* key, const std::string& where, int64_t count) {
  if (!o.Has(key) || o.Get(key).IsUndefined() || o.Get(key).IsNull()) return -1;
  return static_cast<int>(to_integer(o.Get(key), where + "." + key, 0, count - 1));
}

// A linear layer: a tensor index (dense weight), or { weight | qWeight, qInvperm, qScale,
// qScaleMax, qGroups; bias? }.
LinearSpec parse_linear(const Napi::Value& v, const std::string& where, int64_t count) {
  LinearSpec l;
  if (v.IsNumber()) {
    l.dense = static_cast<int>(to_integer(v, where, 0, count - 1));
    return l;
  }
  Napi::Object o = object_at(v, where);
  l.dense = optional_index(o, "weight", where, count);
  l.q_weight = optional_index(o, "qWeight", where, count);
  l.bias = optional_index(o, "bias", where, count);
  if (l.q_weight >= 0) {
    l.q_invperm = static_cast<int>(int_field(o, "qInvperm", where, 0, count - 1));
    l.q_scale = static_cast<int>(int_field(o, "qScale", where, 0, count - 1));
    l.q_scale_max = static_cast<int>(int_field(o, "qScaleMax", where, 0, count - 1));
    l.q_groups = static_cast<int>(int_field(o, "qGroups", where, 0, count - 1));
  }
  if ((l.dense >= 0) == (l.q_weight >= 0)) throw Error(where + ": give either weight or the EXL2 tensors");
  return l;
}


ModelSpec parse_spec(const Napi::Object& js) {
  ModelSpec spec;
  const std::string w = "model spec";
  Napi::Array files = array_field(js, "files", w);
  for (uint32_t i = 0; i < files.Length(); i++) {
    Napi::Value f = files.Get(i);
    if (!f.IsString()) throw Error(w + ".files[" + std::to_string(i) + "] must be a string");
    spec.files.push_back(f.As<Napi::String>().Utf8Value());
  }
  Napi::Array tensors = array_field(js, "tensors", w);
  const int64_t n_tensors = tensors.Length();
  for (uint32_t i = 0; i < tensors.Length(); i++) {
    const std::string tw = w + ".tensors[" + std::to_string(i) + "]";
    Napi::Object t = object_at(tensors.Get(i), tw);
    TensorSpec ts;
    ts.name = string_field(t, "name", tw);
    ts.file = static_cast<int>(int_field(t, "file", tw, 0, static_cast<int64_t>(spec.files.size()) - 1));
    ts.offset = static_cast<uint64_t>(int_field(t, "offset", tw, 0, kMaxSafeInteger));
    ts.bytes = static_cast<uint64_t>(int_field(t, "bytes", tw, 0, kMaxSafeInteger));
    // the dtype comes from the file's header: an error names the file and the tensor
    ts.dtype = dtype_from_name(string_field(t, "dtype", tw), spec.files[ts.file] + ": tensor '" + ts.name + "'");
    Napi::Array shape = array_field(t, "shape", tw);
    if (shape.Length() > 8) throw Error(tw + ": too many dimensions");
    for (uint32_t d = 0; d < shape.Length(); d++)
      ts.shape.push_back(to_integer(shape.Get(d), tw + ".shape", 0, kMaxSafeInteger));
    spec.tensors.push_back(std::move(ts));
  }
  const std::string cw = w + ".shape";
  Napi::Object s = object_at(field(js, "shape", w), cw);
  const int64_t big = 1 << 24;
  spec.shape.hidden = static_cast<int>(int_field(s, "hiddenSize", cw, 1, big));
  spec.shape.intermediate = static_cast<int>(int_field(s, "intermediateSize", cw, 1, big));
  spec.shape.heads = static_cast<int>(int_field(s, "numAttentionHeads", cw, 1, 65536));
  spec.shape.kv_heads = static_cast<int>(int_field(s, "numKeyValueHeads", cw, 1, 65536));
  spec.shape.head_dim = static_cast<int>(int_field(s, "headDim", cw, 2, 65536));
  spec.shape.vocab = static_cast<int>(int_field(s, "vocabSize", cw, 1, big));
  spec.shape.rms_norm_eps = static_cast<float>(to_number(field(s, "rmsNormEps", cw), cw + ".rmsNormEps"));
  spec.shape.sliding_window = static_cast<int>(int_field(s, "slidingWindow", cw, 0, INT32_MAX));
  spec.shape.context = static_cast<int>(int_field(s, "contextSize", cw, 1, INT32_MAX));
  Napi::Array inv = array_field(s, "ropeInvFreq", cw);
  for (uint32_t i = 0; i < inv.Length(); i++)
    spec.shape.rope_inv_freq.push_back(to_number(inv.Get(i), cw + ".ropeInvFreq"));
  spec.embedding = static_cast<int>(int_field(js, "embedding", w, 0, n_tensors - 1));
  spec.final_norm = static_cast<int>(int_field(js, "finalNorm", w, 0, n_tensors - 1));
  spec.lm_head = parse_linear(field(js, "lmHead", w), w + ".lmHead", n_tensors);
  Napi::Array layers = array_field(js, "layers", w);
  for (uint32_t i = 0; i < layers.Length(); i++) {
    const std::string lw = w + ".layers[" + std::to_string(i) + "]";
    Napi::Object l = object_at(layers.Get(i), lw);
    LayerSpec ls;
    auto req = [&](const char* key) { return static_cast<int>(int_field(l, key, lw, 0, n_tensors - 1)); };
    auto lin = [&](const char* key) { return parse_linear(field(l, key, lw), lw + "." + key, n_tensors); };
    ls.input_norm = req("inputNorm");
    ls.post_attention_norm = req("postAttentionNorm");
    ls.q = lin("q");
    ls.k = lin("k");
    ls.v = lin("v");
    ls.o = lin("o");
    ls.gate = lin("gate");
    ls.up = lin("up");
    ls.down = lin("down");
    spec.layers.push_back(ls);
  }
  if (js.Has("device") && !js.Get("device").IsUndefined()) spec.device = string_field(js, "device", w);
  if (js.Has("deviceIndex") && !js.Get("deviceIndex").IsUndefined())
    spec.device_index = static_cast<int>(int_field(js, "deviceIndex", w, 0, 64));
  spec.isa = string_field(js, "isa", w);
  spec.threads = static_cast<int>(int_field(js, "threads", w, 0, 256));
  spec.kv_page_size = static_cast<int>(int_field(js, "kvPageSize", w, 1, 4096));
  spec.kv_max_tokens = static_cast<int>(int_field(js, "kvCacheTokens", w, 1, INT32_MAX));
  if (js.Has("kvCacheType") && !js.Get("kvCacheType").IsUndefined()) spec.kv_type = string_field(js, "kvCacheType", w);
  return spec;
}

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Engine> engine, std::vector<StepEntry> entries, const Napi::Value& abort)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), engine_(std::move(engine)),
        entries_(std::move(entries)), abort_(abort) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      engine_->step(entries_, result_, abort_.flag);
    } catch (const Aborted&) {
      aborted_ = true;
      SetError("aborted");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Float32Array logits = Napi::Float32Array::New(env, result_.logits.size());
    std::copy(result_.logits.begin(), result_.logits.end(), logits.Data());
    Napi::Array rows = Napi::Array::New(env, result_.rows.size());
    for (size_t i = 0; i < result_.rows.size(); i++) rows.Set(static_cast<uint32_t>(i), result_.rows[i]);
    Napi::Float32Array top_values = Napi::Float32Array::New(env, result_.top_values.size());
    std::copy(result_.top_values.begin(), result_.top_values.end(), top_values.Data());
    Napi::Int32Array top_ids = Napi::Int32Array::New(env, result_.top_ids.size());
    std::copy(result_.top_ids.begin(), result_.top_ids.end(), top_ids.Data());
    Napi::Object out = Napi::Object::New(env);
    out.Set("logits", logits);
    out.Set("rows", rows);
    out.Set("topK", result_.top_k);
    out.Set("topValues", top_values);
    out.Set("topIds", top_ids);
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override {
    if (aborted_) e.Set("name", Napi::String::New(Env(), "AbortError"));
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Engine> engine_;
  std::vector<StepEntry> entries_;
  AbortFlag abort_;
  StepResult result_;
  bool aborted_ = false;
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod("prefault", &EngineWrap::prefault),
                           InstanceMethod("step", &EngineWrap::step),
                           InstanceMethod("createSequence", &EngineWrap::create_sequence),
                           InstanceMethod("attachPrefix", &EngineWrap::attach_prefix),
                           InstanceMethod("freeSequence", &EngineWrap::free_sequence),
                           InstanceMethod("sequenceLength", &EngineWrap::sequence_length),
                           InstanceMethod("truncateSequence", &EngineWrap::truncate_sequence),
                           InstanceMethod("cacheStats", &EngineWrap::cache_stats),
                           InstanceMethod("stepCounts", &EngineWrap::step_counts),
                           InstanceMethod("info", &EngineWrap::info),
                           InstanceMethod("dispose", &EngineWrap::dispose),
                       });
  }

  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    try {
      if (info.Length() < 1) throw Error("Engine: a model spec is required");
      ModelSpec spec = parse_spec(object_at(info[0], "model spec"));
      engine_ = std::make_shared<Engine>(spec);
      napi_type_tag_object(env, info.This(), &kEngineTag);
    } catch (const std::exception& e) {
      js_error(env, e).ThrowAsJavaScriptException();
    }
  }

 private:
  Engine& live() {
    if (!engine_) throw Error("the model has been disposed");
    return *engine_;
  }

  Napi::Value prefault(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      live();
      std::shared_ptr<Engine> engine = engine_;  // the job keeps the engine alive
      return ProgressJob::start(info.Env(), [engine](auto abort, auto& progress) { engine->prefault(abort, progress); }, info[0], info[1]);
    });
  }

  Napi::Value step(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      live();
      if (!info[0].IsArray()) throw Error("step: the batch must be an array");
      Napi::Array batch = info[0].As<Napi::Array>();
      std::vector<StepEntry> entries;
      for (uint32_t i = 0; i < batch.Length(); i++) {
        const std::string where = "step: batch[" + std::to_string(i) + "]";
        Napi::Object o = object_at(batch.Get(i), where);
        StepEntry e;
        e.sequence = static_cast<int>(int_field(o, "sequence", where, 0, INT32_MAX));
        Napi::Value toks = field(o, "tokens", where);
        if (!toks.IsTypedArray() || toks.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
          throw Error(where + ".tokens must be an Int32Array");
        Napi::Int32Array ta = toks.As<Napi::Int32Array>();
        e.tokens.assign(ta.Data(), ta.Data() + ta.ElementLength());
        e.logits = static_cast<LogitsWanted>(int_field(o, "logits", where, 0, 3));
        if (e.logits == LogitsWanted::Top && o.Has("topK") && !o.Get("topK").IsUndefined())
          e.top_k = static_cast<int>(int_field(o, "topK", where, 1, kMaxTopK));
        entries.push_back(std::move(e));
      }
      auto* w = new StepWorker(info.Env(), engine_, std::move(entries), info[1]);
      Napi::Promise p = w->promise();
      w->Queue();
      return p;
    });
  }

  Napi::Value create_sequence(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      const bool shared = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
      return Napi::Number::New(info.Env(), live().create_sequence(shared));
    });
  }

  Napi::Value attach_prefix(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      const int id = static_cast<int>(to_integer(info[0], "sequence", 0, INT32_MAX));
      if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw Error("attachPrefix: tokens must be an Int32Array");
      Napi::Int32Array ta = info[1].As<Napi::Int32Array>();
      std::vector<int32_t> tokens(ta.Data(), ta.Data() + ta.ElementLength());
      return Napi::Number::New(info.Env(), live().attach_prefix(id, tokens));
    });
  }

  Napi::Value free_sequence(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      if (engine_) engine_->free_sequence(static_cast<int>(to_integer(info[0], "sequence", 0, INT32_MAX)));
      return info.Env().Undefined();
    });
  }

  Napi::Value sequence_length(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), live().sequence_length(static_cast<int>(to_integer(info[0], "sequence", 0, INT32_MAX))));
    });
  }

  Napi::Value truncate_sequence(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      live().truncate_sequence(static_cast<int>(to_integer(info[0], "sequence", 0, INT32_MAX)),
                               static_cast<int>(to_integer(info[1], "length", 0, INT32_MAX)));
      return info.Env().Undefined();
    });
  }

  Napi::Value cache_stats(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      Engine::CacheStats s = live().cache_stats();
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("pageSize", s.page_size);
      o.Set("pagesInUse", s.pages_in_use);
      o.Set("maxPages", s.max_pages);
      o.Set("cachedPages", s.cached_pages);
      o.Set("bytesAllocated", static_cast<double>(s.bytes_allocated));
      return o;
    });
  }

  Napi::Value step_counts(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      const StepCounts c = live().step_counts();
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("eager", static_cast<double>(c.eager));
      o.Set("recorded", static_cast<double>(c.recorded));
      o.Set("replayed", static_cast<double>(c.replayed));
      if (!c.graph_error.empty()) o.Set("graphError", c.graph_error);
      return o;
    });
  }

  Napi::Value info(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      Engine& e = live();
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("device", e.device());
      if (!e.device_name().empty()) o.Set("deviceName", e.device_name());
      o.Set("deviceBytes", static_cast<double>(e.device_bytes()));
      o.Set("isa", e.isa());
      o.Set("threads", e.threads());
      o.Set("mappedBytes", static_cast<double>(e.mapped_bytes()));
      o.Set("layers", e.layers());
      return o;
    });
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    // Running jobs hold their own reference; the engine is freed when the last one ends.
    engine_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<Engine> engine_;
  friend std::shared_ptr<Engine> laminate::engine_of(const Napi::Value& v);
};

Napi::Value cpu_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Array isas = Napi::Array::New(env);
  uint32_t i = 0;
  for (Isa isa : supported_isas()) isas.Set(i++, isa_name(isa));
  o.Set("isas", isas);
  o.Set("best", isa_name(best_isa()));
  o.Set("avx512bf16", cpu_features().avx512bf16);
  o.Set("physicalCores", default_thread_count());
  return o;
}

#ifdef LAMINATE_WITH_CUDA
// The CUDA variant only: what the runtime sees (devices, or why there are none).
Napi::Value cuda_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaProbe p = cuda_probe();
  Napi::Object o = Napi::Object::New(env);
  o.Set("runtimeVersion", p.runtime_version);
  o.Set("driverVersion", p.driver_version);
  Napi::Array devices = Napi::Array::New(env);
  for (size_t i = 0; i < p.devices.size(); i++) {
    const CudaDevice& d = p.devices[i];
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("index", d.index);
    dev.Set("name", d.name);
    dev.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    dev.Set("totalBytes", static_cast<double>(d.total_bytes));
    dev.Set("freeBytes", static_cast<double>(d.free_bytes));
    devices.Set(static_cast<uint32_t>(i), dev);
  }
  o.Set("devices", devices);
  if (!p.error.empty()) o.Set("error", p.error);
  if (p.simulated) o.Set("simulated", true);
  return o;
}
#endif

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::define(env));
  exports.Set("cpuInfo", Napi::Function::New(env, cpu_info));
#ifdef LAMINATE_WITH_CUDA
  exports.Set("backend", "cuda");
  exports.Set("cudaInfo", Napi::Function::New(env, cuda_info));
  export_cuda_checks(env, exports);
#else
  exports.Set("backend", "cpu");
#endif
  exports.Set("Calibration", define_calibration(env));
  exports.Set("gptqQuantize", Napi::Function::New(env, gptq_quantize_js));
  exports.Set("runMerge", Napi::Function::New(env, run_merge_js));
  exports.Set("exl2Matmul", Napi::Function::New(env, exl2_matmul_js));
  return exports;
}

}  // namespace

std::shared_ptr<Engine> engine_of(const Napi::Value& v) {
  bool tagged = false;
  if (v.IsObject()) napi_check_object_type_tag(v.Env(), v, &kEngineTag, &tagged);
  if (!tagged) throw Error("expected a model's engine");
  EngineWrap* wrap = EngineWrap::Unwrap(v.As<Napi::Object>());
  if (!wrap || !wrap->engine_) throw Error("the model has been disposed");
  return wrap->engine_;
}

}  // namespace laminate

static Napi::Object init_module(Napi::Env env, Napi::Object exports) { return laminate::init(env, exports); }

NODE_API_MODULE(laminate, init_module)
