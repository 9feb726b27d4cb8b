// The CUDA build's extra exports: single kernels on host arrays, for tests.
#pragma once
#include <napi.h>

namespace laminate {

// Adds cudaDenseMatmul, cudaTopK, cudaSoftmax and cudaCopyBandwidth to exports (CUDA build only; else nothing).
void export_cuda_checks(Napi::Env env, Napi::Object exports);

}  // namespace laminate
