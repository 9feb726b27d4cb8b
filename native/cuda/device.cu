#include "device.h"

#include <cuda_runtime.h>

namespace laminate {

static std::string describe(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

CudaProbe cuda_probe() {
  CudaProbe p;
  cudaRuntimeGetVersion(&p.runtime_version);
  if (cudaDriverGetVersion(&p.driver_version) != cudaSuccess) p.driver_version = 0;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    p.error = describe(e);
    return p;
  }
  for (int i = 0; i < count; i++) {
    cudaDeviceProp prop;
    const cudaError_t pe = cudaGetDeviceProperties(&prop, i);
    if (pe != cudaSuccess) {
      p.error = "device " + std::to_string(i) + ": " + describe(pe);
      continue;
    }
    CudaDevice d;
    d.index = i;
    d.name = prop.name;
    d.major = prop.major;
    d.minor = prop.minor;
    d.total_bytes = prop.totalGlobalMem;
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) d.free_bytes = free_bytes;
    p.devices.push_back(d);
  }
  if (p.devices.empty() && p.error.empty()) p.error = "no CUDA device";
  return p;
}

}  // namespace laminate
