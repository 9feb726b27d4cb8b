#include "device.h"

#include "compat.h"
#include "runtime.h"

namespace laminate {

#if defined(LAMINATE_CUDA_SIM)

CudaProbe cuda_probe() {
  CudaProbe p;
  p.simulated = true;
  CudaDevice d;
  d.name = gpu::device_name(0);
  d.major = 8;
  d.minor = 0;
  size_t free_bytes = 0, total_bytes = 0;
  gpu::memory_info(&free_bytes, &total_bytes);
  d.total_bytes = total_bytes;
  d.free_bytes = free_bytes;
  p.devices.push_back(d);
  return p;
}

#else

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
  int current = 0;
  const bool restore = cudaGetDevice(&current) == cudaSuccess;
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
  if (restore) cudaSetDevice(current);  // free memory is read with each device made current
  cudaGetLastError();
  if (p.devices.empty() && p.error.empty()) p.error = "no CUDA device";
  return p;
}

#endif

}  // namespace laminate
