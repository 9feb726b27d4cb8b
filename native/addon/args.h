// Checked reading of values that arrive from JavaScript. Every accessor throws
// laminate::Error with the field's name when the value is missing or of the wrong kind.
#pragma once
#include <napi.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "../core/dtype.h"
#include "../core/error.h"

namespace laminate {

inline Napi::Value field(const Napi::Object& o, const char* key, const std::string& where) {
  if (!o.Has(key)) throw Error(where + ": missing '" + key + "'");
  return o.Get(key);
}

inline double to_number(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) throw Error(what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw Error(what + " must be finite");
  return d;
}

inline int64_t to_integer(const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  double d = to_number(v, what);
  if (d != std::floor(d) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    throw Error(what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int64_t>(d);
}

inline int64_t int_field(const Napi::Object& o, const char* key, const std::string& where, int64_t lo, int64_t hi) {
  return to_integer(field(o, key, where), where + "." + key, lo, hi);
}

inline std::string string_field(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = field(o, key, where);
  if (!v.IsString()) throw Error(where + "." + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

inline Napi::Array array_field(const Napi::Object& o, const char* key, const std::string& where) {
  Napi::Value v = field(o, key, where);
  if (!v.IsArray()) throw Error(where + "." + key + " must be an array");
  return v.As<Napi::Array>();
}

inline Napi::Object object_at(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray()) throw Error(what + " must be an object");
  return v.As<Napi::Object>();
}

constexpr int64_t kMaxSafeInteger = 9007199254740991LL;

// A safetensors dtype name that the native side reads.
inline DType dtype_from_name(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  if (s == "I32") return DType::I32;
  if (s == "I16") return DType::I16;
  throw Error(where + ": unsupported dtype '" + s + "' (laminate reads F32, F16, BF16, I32 and I16)");
}

// An optional Int32Array over a SharedArrayBuffer: element 0 set to non-zero asks a running
// job to stop. The reference keeps its memory alive while the job runs.
struct AbortFlag {
  Napi::Reference<Napi::Int32Array> ref;
  const std::atomic<int32_t>* flag = nullptr;

  explicit AbortFlag(const Napi::Value& v) {
    if (v.IsUndefined() || v.IsNull()) return;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Error("abort flag must be an Int32Array");
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    if (a.ElementLength() < 1) throw Error("abort flag must have one element");
    ref = Napi::Persistent(a);
    flag = reinterpret_cast<const std::atomic<int32_t>*>(a.Data());
  }
};

struct Progress {
  double done, total;
};

inline Napi::Error js_error(Napi::Env env, const std::exception& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  if (dynamic_cast<const Aborted*>(&e)) err.Set("name", Napi::String::New(env, "AbortError"));
  return err;
}

// Runs f, turning a C++ exception into a pending JavaScript Error.
template <class F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    js_error(info.Env(), e).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
}

}  // namespace laminate
