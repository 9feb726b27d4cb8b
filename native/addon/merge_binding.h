// runMerge(spec, onProgress?, abortFlag?) -> Promise<void>: a merge to disk, off the JS thread.
#pragma once
#include <napi.h>

namespace laminate {

Napi::Value run_merge_js(const Napi::CallbackInfo& info);

}  // namespace laminate
