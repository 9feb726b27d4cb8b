#include "merge_binding.h"

#include <memory>
#include <string>
#include <vector>

#include "../merge/merge_job.h"
#include "args.h"
#include "progress_job.h"

namespace laminate {
namespace {


std::vector<int64_t> shape_of(const Napi::Object& o, const std::string& where) {
  Napi::Array a = array_field(o, "shape", where);
  if (a.Length() > 8) throw Error(where + ": too many dimensions");
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < a.Length(); i++) shape.push_back(to_integer(a.Get(i), where + ".shape", 0, kMaxSafeInteger));
  return shape;
}

double number_or(const Napi::Object& o, const char* key, double fallback, const std::string& where) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return fallback;
  return to_number(o.Get(key), where + "." + key);
}

bool bool_or(const Napi::Object& o, const char* key, bool fallback) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return fallback;
  return o.Get(key).ToBoolean().Value();
}

MergeJob parse_job(const Napi::Object& js) {
  MergeJob job;
  const std::string w = "merge spec";
  Napi::Array files = array_field(js, "files", w);
  for (uint32_t i = 0; i < files.Length(); i++) {
    if (!files.Get(i).IsString()) throw Error(w + ".files must hold strings");
    job.files.push_back(files.Get(i).As<Napi::String>().Utf8Value());
  }
  const int64_t n_files = static_cast<int64_t>(job.files.size());
  Napi::Array tensors = array_field(js, "tensors", w);
  for (uint32_t i = 0; i < tensors.Length(); i++) {
    const std::string tw = w + ".tensors[" + std::to_string(i) + "]";
    Napi::Object o = object_at(tensors.Get(i), tw);
    MergeTensor t;
    t.name = string_field(o, "name", tw);
    t.method = static_cast<MergeMethod>(int_field(o, "method", tw, 0, 5));
    t.out_dtype = dtype_from_name(string_field(o, "outDtype", tw), tw);
    t.shape = shape_of(o, tw);
    if (o.Has("workDtype") && o.Get("workDtype").IsString()) {
      t.has_work_dtype = true;
      t.work_dtype = dtype_from_name(o.Get("workDtype").As<Napi::String>().Utf8Value(), tw);
    }
    Napi::Array inputs = array_field(o, "inputs", tw);
    for (uint32_t j = 0; j < inputs.Length(); j++) {
      const std::string iw = tw + ".inputs[" + std::to_string(j) + "]";
      Napi::Object io = object_at(inputs.Get(j), iw);
      MergeInput in;
      in.file = static_cast<int>(int_field(io, "file", iw, 0, n_files - 1));
      in.offset = static_cast<uint64_t>(int_field(io, "offset", iw, 0, kMaxSafeInteger));
      in.dtype = dtype_from_name(string_field(io, "dtype", iw), iw);
      in.shape = shape_of(io, iw);
      in.weight = number_or(io, "weight", 1.0, iw);
      in.density = number_or(io, "density", 1.0, iw);
      in.gamma = number_or(io, "gamma", 0.01, iw);
      if (io.Has("scale") && !io.Get("scale").IsUndefined()) {
        in.has_scale = true;
        in.scale = to_number(io.Get("scale"), iw + ".scale");
      }
      t.inputs.push_back(in);
    }
    t.base = o.Has("base") && !o.Get("base").IsUndefined() ? static_cast<int>(to_integer(o.Get("base"), tw + ".base", -1, 1 << 20)) : -1;
    t.t = number_or(o, "t", 0.5, tw);
    t.normalize = bool_or(o, "normalize", false);
    t.rescale = bool_or(o, "rescale", false);
    t.lambda = number_or(o, "lambda", 1.0, tw);
    t.sparsify = static_cast<Sparsify>(o.Has("sparsify") && !o.Get("sparsify").IsUndefined() ? int_field(o, "sparsify", tw, 0, 3) : 0);
    t.consensus = bool_or(o, "consensus", false);
    t.filter_wise = bool_or(o, "filterWise", false);
    job.tensors.push_back(std::move(t));
  }
  Napi::Array shards = array_field(js, "shards", w);
  for (uint32_t i = 0; i < shards.Length(); i++) {
    const std::string sw = w + ".shards[" + std::to_string(i) + "]";
    Napi::Object o = object_at(shards.Get(i), sw);
    MergeShard s;
    s.path = string_field(o, "path", sw);
    Napi::Value h = field(o, "header", sw);
    if (!h.IsTypedArray() || h.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Error(sw + ".header must be a Uint8Array");
    Napi::Uint8Array bytes = h.As<Napi::Uint8Array>();
    s.header.assign(bytes.Data(), bytes.Data() + bytes.ElementLength());
    Napi::Array list = array_field(o, "tensors", sw);
    for (uint32_t j = 0; j < list.Length(); j++)
      s.tensors.push_back(static_cast<int>(to_integer(list.Get(j), sw + ".tensors", 0, static_cast<int64_t>(job.tensors.size()) - 1)));
    job.shards.push_back(std::move(s));
  }
  job.seed = static_cast<uint64_t>(int_field(js, "seed", w, 0, kMaxSafeInteger));
  return job;
}

}  // namespace

Napi::Value run_merge_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto job = std::make_shared<MergeJob>(parse_job(object_at(info[0], "merge spec")));
    return ProgressJob::start(env, [job](auto abort, auto& progress) { run_merge(*job, abort, progress); }, info[1], info[2]);
  } catch (const std::exception& e) {
    js_error(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

}  // namespace laminate
