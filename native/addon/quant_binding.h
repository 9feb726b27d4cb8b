// The quantizer's native handle (Calibration) for JavaScript.
#pragma once
#include <napi.h>

#include <memory>

#include "../engine/engine.h"

namespace laminate {

// The engine behind a JS Engine object (addon.cc); throws Error for anything else.
std::shared_ptr<Engine> engine_of(const Napi::Value& v);

Napi::Function define_calibration(Napi::Env env);
Napi::Value gptq_quantize_js(const Napi::CallbackInfo& info);

}  // namespace laminate
