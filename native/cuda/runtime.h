// Device memory, streams and graphs for the CUDA backend: the CUDA runtime under nvcc, the
// simulator's host memory under LAMINATE_CUDA_SIM. Failures throw Error with the runtime's
// reason.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "compat.h"

namespace laminate::gpu {

// "123 MiB", for messages about device memory.
std::string mib(uint64_t bytes);

// Makes `device` current for the calling thread; its name.
void set_device(int device);
std::string device_name(int device);
// Compute capability as major * 10 + minor (86 for 8.6).
int compute_capability(int device);
// Bytes free and in all on the current device.
void memory_info(size_t* free_bytes, size_t* total_bytes);
void* device_alloc(size_t bytes, const char* what);
void device_free(void* p);
// Page-locked host memory, for copies that overlap with work.
void* host_alloc(size_t bytes);
void host_free(void* p);

cudaStream_t stream_create();
void stream_destroy(cudaStream_t s);
void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t s);
void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t s);
void copy_on_device(void* dst, const void* src, size_t bytes, cudaStream_t s);
void memset_device(void* dst, int value, size_t bytes, cudaStream_t s);
// Waits for the stream; throws on any error a kernel raised.
void stream_sync(cudaStream_t s);
// After launches: throws on a launch error (bad configuration, no kernel image).
void check_launch(const char* what);

// A decode step recorded once and replayed.
struct Graph;
void capture_begin(cudaStream_t s);
// Null when the capture failed (then the caller runs eagerly), with the reason in *why.
Graph* capture_end(cudaStream_t s, std::string* why);
void capture_abort(cudaStream_t s);   // ends a capture and drops what it recorded
void graph_launch(Graph* g, cudaStream_t s);
void graph_destroy(Graph* g);

// Elapsed milliseconds of work enqueued by `work` on `s` (for benchmarks).
float time_ms(cudaStream_t s, const std::function<void()>& work);

#if defined(LAMINATE_CUDA_SIM)
bool stream_capturing(cudaStream_t s);
void stream_record(cudaStream_t s, std::function<void()> work);
#endif

}  // namespace laminate::gpu
