#include "exl2_binding.h"

#include <string>
#include <vector>

#include "../core/cpu_features.h"
#include "../cpu/cpu_backend.h"
#include "../exl2/loader.h"
#include "args.h"
#if defined(LAMINATE_WITH_CUDA)
#include "../cuda/checks.h"
#endif

namespace laminate {

namespace {

// A typed array field of the layer object as a raw tensor of the given shape.
Napi::TypedArray typed(const Napi::Object& layer, const char* key, napi_typedarray_type type) {
  Napi::Value v = field(layer, key, "layer");
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) throw Error(std::string("layer.") + key + " has the wrong array type");
  return v.As<Napi::TypedArray>();
}

RawTensor raw(const Napi::Object& layer, const char* key, napi_typedarray_type type, DType dtype, std::vector<int64_t> shape) {
  const std::string what = std::string("layer.") + key;
  Napi::TypedArray a = typed(layer, key, type);
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  if (static_cast<int64_t>(a.ElementLength()) != elements) throw Error(what + " has " + std::to_string(a.ElementLength()) + " elements, expected " + std::to_string(elements));
  return RawTensor{static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset(), dtype, std::move(shape), what};
}

}  // namespace

Napi::Value exl2_matmul_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (info.Length() != 4) throw Error("exl2Matmul(layer, x, m, isa) takes four arguments");
    // isa: a CPU kernel family, or in the CUDA build 'cuda' (decode kernel) or 'cuda-mma' (tensor cores)
    Napi::Object layer = object_at(info[0], "layer");
    const int64_t n = int_field(layer, "n", "layer", 1, 1 << 20), k = int_field(layer, "k", "layer", 1, 65535);
    const int64_t np = (n + 31) / 32 * 32;
    const int64_t groups = static_cast<int64_t>(typed(layer, "qScaleMax", napi_uint16_array).ElementLength());
    const int64_t qrows = static_cast<int64_t>(typed(layer, "qWeight", napi_int32_array).ElementLength()) / np;
    Exl2View w = load_exl2(raw(layer, "qWeight", napi_int32_array, DType::I32, {qrows, np}),
                           raw(layer, "qInvperm", napi_int32_array, DType::I32, {k}),
                           raw(layer, "qScale", napi_int32_array, DType::I32, {groups, np / 8}),
                           raw(layer, "qScaleMax", napi_uint16_array, DType::F16, {groups}),
                           raw(layer, "qGroups", napi_int16_array, DType::I16, {2 * groups}), n, k);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) throw Error("x must be a Float32Array");
    Napi::Float32Array x = info[1].As<Napi::Float32Array>();
    const int m = static_cast<int>(to_integer(info[2], "m", 1, 1 << 16));
    if (static_cast<int64_t>(x.ElementLength()) != m * k) throw Error("x must hold m * k values");
    if (!info[3].IsString()) throw Error("isa must be a string");
    const std::string isa = info[3].As<Napi::String>().Utf8Value();
    const bool cuda = isa == "cuda" || isa == "cuda-mma";
#if !defined(LAMINATE_WITH_CUDA)
    if (cuda) throw Error("exl2Matmul: '" + isa + "' needs the CUDA build");
#endif
    const MatmulExl2Fn kernel = cuda ? nullptr : pick_exl2(resolve_isa(isa));

    exl2_repack(w);
    const int64_t segments = static_cast<int64_t>(w.groups.size());
    Napi::Int8Array q = Napi::Int8Array::New(env, m * k);
    Napi::Float32Array scale = Napi::Float32Array::New(env, m * segments);
    Napi::Float32Array y = Napi::Float32Array::New(env, m * n);
    if (cuda) {
#if defined(LAMINATE_WITH_CUDA)
      cuda_exl2_matmul_check(w, n, k, x.Data(), m, isa == "cuda-mma", y.Data(), q.Data(), scale.Data());
#endif
    } else {
      std::vector<int32_t> sum(m * segments);
      exl2_quantize_activations(w, x.Data(), m, k, q.Data(), scale.Data(), sum.data());
      Exl2Act act;
      act.q = q.Data();
      act.ldq = k;
      act.scale = scale.Data();
      act.sum = sum.data();
      act.m = m;
      kernel(w, act, y.Data(), n, 0, n);
    }
    Napi::Int32Array rows = Napi::Int32Array::New(env, segments);
    for (int64_t s = 0; s < segments; s++) rows[static_cast<size_t>(s)] = w.groups[s].rows;
    Napi::Object out = Napi::Object::New(env);
    out.Set("y", y);
    out.Set("xq", q);
    out.Set("scale", scale);
    out.Set("segmentRows", rows);
    return out;
  } catch (const std::exception& e) {
    js_error(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

}  // namespace laminate
