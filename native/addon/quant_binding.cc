#include "quant_binding.h"

#include <string>
#include <vector>

#include "../core/error.h"
#include "../quant/calibration.h"
#include "args.h"
#include "progress_job.h"

namespace laminate {

namespace {

// A layout: Int32Array of (bits, rows) pairs.
std::vector<QuantGroup> parse_layout(const Napi::Value& v, const std::string& where) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Error(where + " must be an Int32Array of (bits, rows) pairs");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  if (a.ElementLength() == 0 || a.ElementLength() % 2 != 0) throw Error(where + " must hold (bits, rows) pairs");
  std::vector<QuantGroup> groups;
  for (size_t i = 0; i < a.ElementLength(); i += 2) groups.push_back({a[i], a[i + 1]});
  return groups;
}

Block parse_block(const Napi::Value& v) { return static_cast<Block>(to_integer(v, "block", 0, 1)); }

Napi::Object to_js(Napi::Env env, const QuantizedLinear& q) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("inFeatures", static_cast<double>(q.k));
  o.Set("outFeatures", static_cast<double>(q.n));
  Napi::Int32Array groups = Napi::Int32Array::New(env, q.groups.size() * 2);
  for (size_t i = 0; i < q.groups.size(); i++) groups[2 * i] = q.groups[i].bits, groups[2 * i + 1] = q.groups[i].rows;
  o.Set("groups", groups);
  Napi::Int32Array perm = Napi::Int32Array::New(env, q.perm.size());
  std::copy(q.perm.begin(), q.perm.end(), perm.Data());
  o.Set("perm", perm);
  Napi::Uint8Array codes = Napi::Uint8Array::New(env, q.codes.size());
  std::copy(q.codes.begin(), q.codes.end(), codes.Data());
  o.Set("codes", codes);
  Napi::Uint8Array scale_codes = Napi::Uint8Array::New(env, q.scale_codes.size());
  std::copy(q.scale_codes.begin(), q.scale_codes.end(), scale_codes.Data());
  o.Set("scaleCodes", scale_codes);
  Napi::Uint16Array scale_max = Napi::Uint16Array::New(env, q.scale_max.size());
  std::copy(q.scale_max.begin(), q.scale_max.end(), scale_max.Data());
  o.Set("scaleMax", scale_max);
  return o;
}

class CalibrationWrap : public Napi::ObjectWrap<CalibrationWrap> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "Calibration",
                       {
                           InstanceMethod("measure", &CalibrationWrap::measure),
                           InstanceMethod("quantize", &CalibrationWrap::quantize),
                           InstanceMethod("quantizeHead", &CalibrationWrap::quantize_head),
                           InstanceMethod("save", &CalibrationWrap::save),
                           InstanceMethod("load", &CalibrationWrap::load),
                           InstanceMethod("dispose", &CalibrationWrap::dispose),
                       });
  }

  // new Calibration(engine, tokens: Int32Array, rows, length, threads, chunkTokens)
  explicit CalibrationWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CalibrationWrap>(info) {
    try {
      std::shared_ptr<Engine> engine = engine_of(info[0]);
      if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw Error("calibration tokens must be an Int32Array");
      Napi::Int32Array t = info[1].As<Napi::Int32Array>();
      std::vector<int32_t> tokens(t.Data(), t.Data() + t.ElementLength());
      const int rows = static_cast<int>(to_integer(info[2], "rows", 1, INT32_MAX));
      const int length = static_cast<int>(to_integer(info[3], "length", 1, INT32_MAX));
      const int threads = static_cast<int>(to_integer(info[4], "threads", 1, 256));
      const int chunk = static_cast<int>(to_integer(info[5], "chunkTokens", 1, INT32_MAX));
      calibration_ = std::make_shared<Calibration>(std::move(engine), std::move(tokens), rows, length, threads, chunk);
    } catch (const std::exception& e) {
      js_error(info.Env(), e).ThrowAsJavaScriptException();
    }
  }

 private:
  // measure(block, layouts: Int32Array[][], combos: Int32Array (linears per combo), onProgress, abort) -> Float64Array
  Napi::Value measure(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      const Block block = parse_block(info[0]);
      const int count = block_linears(block);
      if (!info[1].IsArray()) throw Error("measure: layouts must be an array per linear");
      Napi::Array per = info[1].As<Napi::Array>();
      std::vector<std::vector<std::vector<QuantGroup>>> layouts(per.Length());
      for (uint32_t m = 0; m < per.Length(); m++) {
        if (!per.Get(m).IsArray()) throw Error("measure: layouts[" + std::to_string(m) + "] must be an array");
        Napi::Array list = per.Get(m).As<Napi::Array>();
        for (uint32_t i = 0; i < list.Length(); i++)
          layouts[m].push_back(parse_layout(list.Get(i), "layouts[" + std::to_string(m) + "][" + std::to_string(i) + "]"));
      }
      if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw Error("measure: combos must be an Int32Array");
      Napi::Int32Array flat = info[2].As<Napi::Int32Array>();
      if (flat.ElementLength() % count != 0) throw Error("measure: combos must hold one layout index per linear");
      std::vector<std::vector<int>> combos;
      for (size_t i = 0; i < flat.ElementLength(); i += count) combos.emplace_back(flat.Data() + i, flat.Data() + i + count);
      auto c = live();
      auto errors = std::make_shared<std::vector<double>>();
      return ProgressJob::start(
          info.Env(),
          [c, block, layouts, combos, errors](auto abort, auto& progress) { *errors = c->measure(block, layouts, combos, abort, progress); },
          info[3], info[4], [errors](Napi::Env env) -> Napi::Value {
            Napi::Float64Array a = Napi::Float64Array::New(env, errors->size());
            std::copy(errors->begin(), errors->end(), a.Data());
            return a;
          });
    });
  }

  // quantize(block, layouts: Int32Array[], onProgress, abort) -> { linears, error }
  Napi::Value quantize(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      const Block block = parse_block(info[0]);
      if (!info[1].IsArray()) throw Error("quantize: layouts must be an array");
      Napi::Array list = info[1].As<Napi::Array>();
      std::vector<std::vector<QuantGroup>> layouts;
      for (uint32_t i = 0; i < list.Length(); i++) layouts.push_back(parse_layout(list.Get(i), "layouts[" + std::to_string(i) + "]"));
      auto c = live();
      auto out = std::make_shared<std::pair<std::vector<QuantizedLinear>, double>>();
      return ProgressJob::start(
          info.Env(), [c, block, layouts, out](auto abort, auto& progress) { out->first = c->quantize(block, layouts, abort, progress, &out->second); },
          info[2], info[3], [out](Napi::Env env) -> Napi::Value {
            Napi::Array linears = Napi::Array::New(env, out->first.size());
            for (size_t i = 0; i < out->first.size(); i++) linears.Set(static_cast<uint32_t>(i), to_js(env, out->first[i]));
            Napi::Object o = Napi::Object::New(env);
            o.Set("linears", linears);
            o.Set("error", out->second);
            return o;
          });
    });
  }

  // quantizeHead(layout: Int32Array, errorFeedback: boolean, abort) -> linear
  Napi::Value quantize_head(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      auto layout = parse_layout(info[0], "head layout");
      const bool feedback = info[1].ToBoolean().Value();
      auto c = live();
      auto out = std::make_shared<QuantizedLinear>();
      return ProgressJob::start(
          info.Env(), [c, layout, feedback, out](auto abort, auto&) { *out = c->quantize_head(layout, feedback, abort); },
          info.Env().Undefined(), info[2], [out](Napi::Env env) -> Napi::Value { return to_js(env, *out); });
    });
  }

  // save(path) -> Promise
  Napi::Value save(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      if (!info[0].IsString()) throw Error("save: path must be a string");
      const std::string path = info[0].As<Napi::String>().Utf8Value();
      auto c = live();
      return ProgressJob::start(info.Env(), [c, path](auto, auto&) { c->save(path); }, info.Env().Undefined(), info.Env().Undefined());
    });
  }

  // load(path, layer, block) -> Promise
  Napi::Value load(const Napi::CallbackInfo& info) {
    return guarded(info, [&]() -> Napi::Value {
      if (!info[0].IsString()) throw Error("load: path must be a string");
      const std::string path = info[0].As<Napi::String>().Utf8Value();
      const int layer = static_cast<int>(to_integer(info[1], "layer", 0, INT32_MAX));
      const int block = static_cast<int>(to_integer(info[2], "block", 0, 1));
      auto c = live();
      return ProgressJob::start(info.Env(), [c, path, layer, block](auto, auto&) { c->load(path, layer, block); }, info.Env().Undefined(), info.Env().Undefined());
    });
  }

  // dispose(): frees the hidden states now (a running job keeps them until it ends)
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    calibration_.reset();
    return info.Env().Undefined();
  }

  const std::shared_ptr<Calibration>& live() const {
    if (!calibration_) throw Error("the calibration has been disposed");
    return calibration_;
  }

  std::shared_ptr<Calibration> calibration_;
};

}  // namespace

// For tests: GPTQ on host arrays, synchronously (small matrices).
// gptqQuantize(w: Float32Array [n, k], n, k, h: Float64Array [k, k], layout: Int32Array, errorFeedback, threads)
//   -> { ...the quantized linear, weight: Uint16Array [n, k] fp16 bits, u: Float32Array [k, k], damp }
Napi::Value gptq_quantize_js(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Error("gptqQuantize: w must be a Float32Array");
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      throw Error("gptqQuantize: h must be a Float64Array");
    Napi::Float32Array w = info[0].As<Napi::Float32Array>();
    Napi::Float64Array h = info[3].As<Napi::Float64Array>();
    const int64_t n = to_integer(info[1], "n", 1, 1 << 20), k = to_integer(info[2], "k", 1, 1 << 16);
    if (static_cast<int64_t>(w.ElementLength()) != n * k) throw Error("gptqQuantize: w must hold n * k values");
    if (static_cast<int64_t>(h.ElementLength()) != k * k) throw Error("gptqQuantize: h must hold k * k values");
    const auto layout = parse_layout(info[4], "layout");
    ThreadPool pool(static_cast<int>(to_integer(info[6], "threads", 1, 64)));
    const PreparedHessian prepared = prepare_hessian(h.Data(), k, pool);
    const QuantizedLinear q = gptq_quantize(DenseView{w.Data(), DType::F32, n, k}, prepared, layout, info[5].ToBoolean().Value(), pool);
    Napi::Object o = to_js(env, q);
    Napi::Uint16Array weight = Napi::Uint16Array::New(env, q.weight.size());
    std::copy(q.weight.begin(), q.weight.end(), weight.Data());
    o.Set("weight", weight);
    Napi::Float32Array u = Napi::Float32Array::New(env, prepared.u.size());
    std::copy(prepared.u.begin(), prepared.u.end(), u.Data());
    o.Set("u", u);
    o.Set("damp", prepared.damp);
    return o;
  });
}

Napi::Function define_calibration(Napi::Env env) { return CalibrationWrap::define(env); }

}  // namespace laminate
