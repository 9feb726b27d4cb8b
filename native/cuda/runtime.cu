#include "runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/error.h"

namespace laminate::gpu {

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1u << 19)) >> 20) + " MiB"; }

#if defined(__CUDACC__)

// Errors after which the CUDA context of the process is unusable: every later call fails.
static bool context_lost(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalInstruction:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable: return true;
    default: return false;
  }
}

static std::string describe(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

static void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::string message = "CUDA: " + describe(what, e);
  if (context_lost(e)) message += ". The GPU context of this process is lost: restart the process to use the GPU again";
  throw Error(message);
}

// Calls whose failure is not reported (releasing resources) must not leave their error to
// be picked up by the next check_launch.
static void ignore(cudaError_t e) {
  if (e != cudaSuccess && !context_lost(e)) cudaGetLastError();
}

void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }
std::string device_name(int device) {
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.name;
}
int compute_capability(int device) {
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  return major * 10 + minor;
}

void memory_info(size_t* free_bytes, size_t* total_bytes) { check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo"); }

void* device_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    throw Error(std::string("CUDA: cannot allocate ") + mib(bytes) + " for " + what + " (" + cudaGetErrorString(e) +
                "; " + mib(free_bytes) + " free of " + mib(total) + ")");
  }
  return p;
}
void device_free(void* p) {
  if (p) ignore(cudaFree(p));
}
void* host_alloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMallocHost(&p, bytes ? bytes : 1), "cudaMallocHost");
  return p;
}
void host_free(void* p) {
  if (p) ignore(cudaFreeHost(p));
}

cudaStream_t stream_create() {
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return s;
}
void stream_destroy(cudaStream_t s) { ignore(cudaStreamDestroy(s)); }
void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "copy to device");
}
void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "copy to host");
}
void copy_on_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy on device");
}
void memset_device(void* dst, int value, size_t bytes, cudaStream_t s) { check(cudaMemsetAsync(dst, value, bytes, s), "memset"); }
void stream_sync(cudaStream_t s) { check(cudaStreamSynchronize(s), "stream"); }
void check_launch(const char* what) { check(cudaGetLastError(), what); }

struct Graph {
  cudaGraphExec_t exec;
};
void capture_begin(cudaStream_t s) { check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture"); }
Graph* capture_end(cudaStream_t s, std::string* why) {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  if (ended != cudaSuccess || !graph) {
    *why = describe("cudaStreamEndCapture", ended);
    ignore(ended);
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    *why = describe("cudaGraphInstantiate", e);
    ignore(e);
    return nullptr;
  }
  return new Graph{exec};
}
void capture_abort(cudaStream_t s) {
  cudaGraph_t graph = nullptr;
  ignore(cudaStreamEndCapture(s, &graph));
  if (graph) cudaGraphDestroy(graph);
}
void graph_launch(Graph* g, cudaStream_t s) { check(cudaGraphLaunch(g->exec, s), "graph launch"); }
void graph_destroy(Graph* g) {
  if (!g) return;
  ignore(cudaGraphExecDestroy(g->exec));
  delete g;
}

float time_ms(cudaStream_t s, const std::function<void()>& work) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  check(cudaEventRecord(a, s), "event");
  work();
  check(cudaEventRecord(b, s), "event");
  check(cudaEventSynchronize(b), "timing");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, a, b), "timing");
  ignore(cudaEventDestroy(a));
  ignore(cudaEventDestroy(b));
  return ms;
}

#else  // the simulator: device memory is host memory, work runs at once (or is recorded)

}  // namespace laminate::gpu

struct SimStream {
  bool capturing = false;
  std::vector<std::function<void()>> recorded;
};

namespace laminate::gpu {

// The simulated device's memory: enough for the models the tests run. Every allocation is
// recorded, so that the simulator can refuse what a GPU would fault on or the CUDA runtime
// would reject: a kernel argument or copy outside device memory (a host pointer, or a range
// past an allocation's end), and allocating or waiting while a graph is recorded.
static constexpr size_t kSimMemory = size_t(4) << 30;
static std::mutex sim_mutex;
static std::map<uintptr_t, size_t> sim_allocations;  // start -> bytes
static size_t sim_in_use = 0;
static thread_local int sim_capturing = 0;  // graphs this thread records (capture mode ThreadLocal)

// Whether [p, p + bytes) lies in one allocation.
static bool sim_device_range(const void* p, size_t bytes) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(sim_mutex);
  auto it = sim_allocations.upper_bound(at);
  if (it == sim_allocations.begin()) return false;
  --it;
  return at - it->first <= it->second && bytes <= it->second - (at - it->first);
}
static void require_device(const void* p, size_t bytes, const char* what) {
  if (!sim_device_range(p, bytes))
    throw Error(std::string("CUDA simulator: ") + what + " of " + std::to_string(bytes) +
                " bytes is not inside one device allocation");
}
static void require_host(const void* p, const char* what) {
  if (p && sim_device_range(p, 0)) throw Error(std::string("CUDA simulator: ") + what + " is given device memory for host memory");
}
static void no_capture(const char* what) {
  if (sim_capturing > 0) throw Error(std::string("CUDA simulator: ") + what + " while a graph is being recorded");
}

void set_device(int device) {
  if (device != 0) throw Error("CUDA simulator: there is one device, 0 (asked for " + std::to_string(device) + ")");
}
std::string device_name(int) { return "laminate CUDA simulator"; }
int compute_capability(int) { return 80; }

void memory_info(size_t* free_bytes, size_t* total_bytes) {
  no_capture("cudaMemGetInfo");
  std::lock_guard<std::mutex> lock(sim_mutex);
  *free_bytes = kSimMemory - sim_in_use;
  *total_bytes = kSimMemory;
}
void* device_alloc(size_t bytes, const char* what) {
  no_capture("cudaMalloc");
  std::lock_guard<std::mutex> lock(sim_mutex);
  if (bytes > kSimMemory - sim_in_use)
    throw Error(std::string("CUDA: cannot allocate ") + mib(bytes) + " for " + what + " (out of memory; " +
                mib(kSimMemory - sim_in_use) + " free of " + mib(kSimMemory) + ")");
  void* p = nullptr;  // aligned as cudaMalloc aligns, and exactly `bytes` long for memory checkers
  if (posix_memalign(&p, 256, std::max<size_t>(bytes, 1)) != 0)
    throw Error(std::string("CUDA: cannot allocate ") + mib(bytes) + " for " + what);
  sim_allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  sim_in_use += bytes;
  return p;
}
// (Frees run in destructors, so they never throw: like cudaFree's ignored error, a pointer
// that is not an allocation is reported and left alone.)
void device_free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(sim_mutex);
  auto it = sim_allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == sim_allocations.end()) {
    std::fprintf(stderr, "CUDA simulator: cudaFree of %p, which cudaMalloc did not return\n", p);
    return;
  }
  sim_in_use -= it->second;
  sim_allocations.erase(it);
  std::free(p);
}
void* host_alloc(size_t bytes) {
  no_capture("cudaMallocHost");
  return std::malloc(bytes ? bytes : 1);
}
void host_free(void* p) { std::free(p); }

cudaStream_t stream_create() { return new SimStream; }
void stream_destroy(cudaStream_t s) { delete s; }
static void no_capture(cudaStream_t s, const char* what) {
  if (s->capturing) throw Error(std::string("CUDA simulator: ") + what + " while capturing a graph");
}
void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  no_capture(s, "copy to device");
  require_device(dst, bytes, "the destination of a copy to the device");
  require_host(src, "a copy to the device");
  std::memcpy(dst, src, bytes);
}
void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  no_capture(s, "copy to host");
  require_device(src, bytes, "the source of a copy to the host");
  require_host(dst, "a copy to the host");
  std::memcpy(dst, src, bytes);
}
void copy_on_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
  require_device(dst, bytes, "the destination of a copy on the device");
  require_device(src, bytes, "the source of a copy on the device");
  if (s->capturing) s->recorded.push_back([=] { std::memmove(dst, src, bytes); });
  else std::memmove(dst, src, bytes);
}
void memset_device(void* dst, int value, size_t bytes, cudaStream_t s) {
  require_device(dst, bytes, "a memset");
  if (s->capturing) s->recorded.push_back([=] { std::memset(dst, value, bytes); });
  else std::memset(dst, value, bytes);
}
void stream_sync(cudaStream_t s) { no_capture(s, "synchronize"); }
void check_launch(const char*) {}

struct Graph {
  std::vector<std::function<void()>> work;
};
void capture_begin(cudaStream_t s) {
  if (!s->capturing) sim_capturing++;
  s->capturing = true;
  s->recorded.clear();
}
static void capture_stop(cudaStream_t s) {
  if (s->capturing) sim_capturing--;
  s->capturing = false;
}
Graph* capture_end(cudaStream_t s, std::string*) {
  capture_stop(s);
  return new Graph{std::move(s->recorded)};
}
void capture_abort(cudaStream_t s) {
  capture_stop(s);
  s->recorded.clear();
}
void graph_launch(Graph* g, cudaStream_t s) {
  no_capture(s, "graph launch");
  for (auto& w : g->work) w();
}
void graph_destroy(Graph* g) { delete g; }

float time_ms(cudaStream_t s, const std::function<void()>& work) {
  const auto t0 = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool stream_capturing(cudaStream_t s) { return s && s->capturing; }

}  // namespace laminate::gpu

namespace laminate::sim {
bool in_device_memory(const void* p) { return !p || gpu::sim_device_range(p, 0); }
void host_pointer_argument(const char* kernel, int index) {
  throw Error(std::string("CUDA simulator: argument ") + std::to_string(index) + " of " + kernel +
              " points outside device memory (a GPU would fault on it)");
}
}  // namespace laminate::sim

namespace laminate::gpu {
void stream_record(cudaStream_t s, std::function<void()> work) { s->recorded.push_back(std::move(work)); }

#endif

}  // namespace laminate::gpu
