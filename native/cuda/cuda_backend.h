// The CUDA implementation of Backend (built into the CUDA variant of the addon, and into
// the simulator build that tests it without a GPU). Plain C++: no CUDA headers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "../engine/backend.h"

namespace laminate {

struct CudaBackendOptions {
  int device = 0;
  ModelShape shape;
  int layers = 0;
  int page_size = 16, max_pages = 0;  // the KV cache pool
  uint64_t weight_bytes = 0;          // what upload() will copy, for the free-memory check
};

struct CudaBackendMade {
  std::unique_ptr<Backend> backend;
  std::string device_name;
  uint64_t kv_bytes = 0;
};

// Checks that the device has memory for the weights and the whole KV cache pool (an Error
// that gives the numbers if not), then allocates the pool.
CudaBackendMade make_cuda_backend(const CudaBackendOptions& options);

}  // namespace laminate
