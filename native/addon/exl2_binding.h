// exl2Matmul(layer, x, m, isa): one EXL2 matmul on the CPU kernels, for tests that check the
// kernels against a reference of their own arithmetic.
#pragma once
#include <napi.h>

namespace laminate {

Napi::Value exl2_matmul_js(const Napi::CallbackInfo& info);

}  // namespace laminate
