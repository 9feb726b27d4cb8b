#include "cuda_binding.h"

#include <string>

#include "args.h"
#if defined(LAMINATE_WITH_CUDA)
#include "../cuda/checks.h"
#endif

namespace laminate {

#if defined(LAMINATE_WITH_CUDA)
namespace {

Napi::Float32Array float_array(const Napi::Value& v, const std::string& what, size_t length) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Error(what + " must be a Float32Array");
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() != length) throw Error(what + " must hold " + std::to_string(length) + " values");
  return a;
}

// cudaDenseMatmul(w: Float32Array | Uint16Array, dtype, n, k, x, m, tensorCores) -> y [m, n]
Napi::Value dense_matmul(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (info.Length() != 7) throw Error("cudaDenseMatmul(w, dtype, n, k, x, m, tensorCores) takes seven arguments");
    if (!info[1].IsString()) throw Error("dtype must be a string");
    const DType dtype = dtype_from_name(info[1].As<Napi::String>().Utf8Value(), "dtype");
    if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16) throw Error("dtype must be F32, F16 or BF16");
    const int64_t n = to_integer(info[2], "n", 1, 1 << 20), k = to_integer(info[3], "k", 1, 1 << 20);
    const int m = static_cast<int>(to_integer(info[5], "m", 1, 4096));
    if (!info[0].IsTypedArray()) throw Error("w must be a typed array");
    Napi::TypedArray w = info[0].As<Napi::TypedArray>();
    const napi_typedarray_type want = dtype == DType::F32 ? napi_float32_array : napi_uint16_array;
    if (w.TypedArrayType() != want || static_cast<int64_t>(w.ElementLength()) != n * k)
      throw Error(std::string("w must be a ") + (dtype == DType::F32 ? "Float32Array" : "Uint16Array") + " of n * k values");
    Napi::Float32Array x = float_array(info[4], "x", static_cast<size_t>(m * k));
    Napi::Float32Array y = Napi::Float32Array::New(info.Env(), static_cast<size_t>(m * n));
    cuda_dense_matmul_check(static_cast<const uint8_t*>(w.ArrayBuffer().Data()) + w.ByteOffset(), dtype, n, k, x.Data(), m,
                            info[6].ToBoolean().Value(), y.Data());
    return y;
  });
}

// cudaTopK(logits, rows, vocab, k) -> { values, indices }
Napi::Value top_k(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (info.Length() != 4) throw Error("cudaTopK(logits, rows, vocab, k) takes four arguments");
    const int rows = static_cast<int>(to_integer(info[1], "rows", 1, 65535));
    const int vocab = static_cast<int>(to_integer(info[2], "vocab", 1, 1 << 24));
    const int k = static_cast<int>(to_integer(info[3], "k", 1, 64));
    if (k > vocab) throw Error("k must not exceed vocab");
    Napi::Float32Array logits = float_array(info[0], "logits", static_cast<size_t>(rows) * vocab);
    Napi::Float32Array values = Napi::Float32Array::New(info.Env(), static_cast<size_t>(rows) * k);
    Napi::Int32Array indices = Napi::Int32Array::New(info.Env(), static_cast<size_t>(rows) * k);
    cuda_top_k_check(logits.Data(), rows, vocab, k, values.Data(), indices.Data());
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("values", values);
    out.Set("indices", indices);
    return out;
  });
}

// cudaSoftmax(x, rows, n) -> softmax of each row (a new array)
Napi::Value softmax(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (info.Length() != 3) throw Error("cudaSoftmax(x, rows, n) takes three arguments");
    const int rows = static_cast<int>(to_integer(info[1], "rows", 1, 65535));
    const int n = static_cast<int>(to_integer(info[2], "n", 1, 1 << 24));
    Napi::Float32Array x = float_array(info[0], "x", static_cast<size_t>(rows) * n);
    Napi::Float32Array y = Napi::Float32Array::New(info.Env(), x.ElementLength());
    std::copy(x.Data(), x.Data() + x.ElementLength(), y.Data());
    cuda_softmax_check(y.Data(), rows, n);
    return y;
  });
}

// cudaCopyBandwidth(device, bytes, repeats) -> bytes per second (read plus written)
Napi::Value copy_bandwidth(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (info.Length() != 3) throw Error("cudaCopyBandwidth(device, bytes, repeats) takes three arguments");
    const int device = static_cast<int>(to_integer(info[0], "device", 0, 64));
    const int64_t bytes = to_integer(info[1], "bytes", 1 << 20, int64_t(1) << 36);
    const int repeats = static_cast<int>(to_integer(info[2], "repeats", 1, 10000));
    return Napi::Number::New(info.Env(), cuda_copy_bandwidth(device, static_cast<size_t>(bytes), repeats));
  });
}

}  // namespace

void export_cuda_checks(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaCopyBandwidth", Napi::Function::New(env, copy_bandwidth));
  exports.Set("cudaDenseMatmul", Napi::Function::New(env, dense_matmul));
  exports.Set("cudaTopK", Napi::Function::New(env, top_k));
  exports.Set("cudaSoftmax", Napi::Function::New(env, softmax));
}
#else
void export_cuda_checks(Napi::Env, Napi::Object) {}
#endif

}  // namespace laminate
