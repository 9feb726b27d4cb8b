// What the CUDA runtime sees: the devices of this machine, or why there are none. Plain C++
// so that the addon can call it without CUDA headers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace laminate {

struct CudaDevice {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;  // compute capability
  uint64_t total_bytes = 0, free_bytes = 0;
};

struct CudaProbe {
  int runtime_version = 0;
  int driver_version = 0;  // 0 when no driver is installed
  std::vector<CudaDevice> devices;
  std::string error;  // why no device answers, when none does
  bool simulated = false;  // the simulator build: one simulated device
};

CudaProbe cuda_probe();

}  // namespace laminate
