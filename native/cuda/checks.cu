#include "checks.h"

#include <vector>

#include "kernels.h"
#include "runtime.h"

namespace laminate {

namespace {

// Device copies that free themselves.
struct Scoped {
  void* p = nullptr;
  Scoped(size_t bytes, const void* from, cudaStream_t s) : p(gpu::device_alloc(bytes, "a test")) {
    if (from) gpu::copy_to_device(p, from, bytes, s);
    else gpu::memset_device(p, 0, bytes, s);
  }
  ~Scoped() { gpu::device_free(p); }
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};

struct Stream {
  cudaStream_t s = gpu::stream_create();
  ~Stream() { gpu::stream_destroy(s); }
};

}  // namespace

void cuda_exl2_matmul_check(const Exl2View& w, int64_t n, int64_t k, const float* x, int m, bool tensor_cores, float* y,
                            int8_t* xq, float* scale) {
  Stream st;
  const size_t groups = w.scale_table.size() / 16, segments = w.groups.size();
  const int64_t ldq = (k + 15) / 16 * 16;
  Scoped codes(w.qrows * w.np * 4, w.q_weight, st.s), scales(groups * (w.np / 8) * 4, w.q_scale, st.s),
      table(w.scale_table.size() * 4, w.scale_table.data(), st.s), segs(segments * sizeof(Exl2Group), w.groups.data(), st.s),
      perm(k * 4, w.perm.data(), st.s), dx(m * k * 4, x, st.s), dq(m * ldq, nullptr, st.s), ds(m * segments * 4, nullptr, st.s),
      dsum(m * segments * 4, nullptr, st.s), dy(m * n * 4, nullptr, st.s);
  gpu::Exl2Weight dw;
  dw.q_weight = codes.as<uint32_t>();
  dw.qrows = w.qrows;
  dw.q_scale = scales.as<uint32_t>();
  dw.np = w.np;
  dw.scale_table = table.as<float>();
  dw.segments = segs.as<Exl2Group>();
  dw.segment_count = static_cast<int>(segments);
  dw.perm = perm.as<int32_t>();
  dw.n = n;
  dw.k = k;
  gpu::Exl2Activations a{dq.as<int8_t>(), ldq, ds.as<float>(), dsum.as<int32_t>()};
  gpu::exl2_quantize(dw, dx.as<float>(), m, k, a, st.s);
  gpu::exl2_matmul_kernel(dw, a, m, dy.as<float>(), n, nullptr, tensor_cores, st.s);
  std::vector<int8_t> q(m * ldq);
  gpu::copy_to_host(q.data(), dq.p, q.size(), st.s);
  gpu::copy_to_host(scale, ds.p, m * segments * 4, st.s);
  gpu::copy_to_host(y, dy.p, m * n * 4, st.s);
  gpu::stream_sync(st.s);
  for (int r = 0; r < m; r++)
    for (int64_t j = 0; j < k; j++) xq[r * k + j] = q[r * ldq + j];
}

void cuda_dense_matmul_check(const void* w, DType dtype, int64_t n, int64_t k, const float* x, int m, bool tensor_cores,
                             float* y) {
  Stream st;
  Scoped dw(n * k * dtype_size(dtype), w, st.s), dx(m * k * 4, x, st.s), dy(m * n * 4, nullptr, st.s);
  gpu::dense_matmul_kernel({dw.p, dtype, n, k}, dx.as<float>(), m, k, dy.as<float>(), n, nullptr, tensor_cores, st.s);
  gpu::copy_to_host(y, dy.p, m * n * 4, st.s);
  gpu::stream_sync(st.s);
}

void cuda_top_k_check(const float* logits, int rows, int vocab, int k, float* values, int32_t* indices) {
  Stream st;
  Scoped dl(static_cast<size_t>(rows) * vocab * 4, logits, st.s), dv(rows * k * 4, nullptr, st.s), di(rows * k * 4, nullptr, st.s);
  gpu::top_k(dl.as<float>(), rows, vocab, k, dv.as<float>(), di.as<int32_t>(), st.s);
  gpu::copy_to_host(values, dv.p, rows * k * 4, st.s);
  gpu::copy_to_host(indices, di.p, rows * k * 4, st.s);
  gpu::stream_sync(st.s);
}

void cuda_softmax_check(float* x, int rows, int n) {
  Stream st;
  Scoped dx(static_cast<size_t>(rows) * n * 4, x, st.s);
  gpu::softmax(dx.as<float>(), rows, n, st.s);
  gpu::copy_to_host(x, dx.p, static_cast<size_t>(rows) * n * 4, st.s);
  gpu::stream_sync(st.s);
}

double cuda_copy_bandwidth(int device, size_t bytes, int repeats) {
  gpu::set_device(device);
  Stream st;
  Scoped a(bytes, nullptr, st.s), b(bytes, nullptr, st.s);
  gpu::copy_on_device(b.p, a.p, bytes, st.s);  // warm up
  const float ms = gpu::time_ms(st.s, [&] {
    for (int i = 0; i < repeats; i++) gpu::copy_on_device(i % 2 ? a.p : b.p, i % 2 ? b.p : a.p, bytes, st.s);
  });
  gpu::stream_sync(st.s);
  return 2.0 * static_cast<double>(bytes) * repeats / (ms / 1000.0);
}

}  // namespace laminate
