// The CPU implementation of Backend: kernels from this folder, spread over a thread
// pool, with the matmul family chosen by instruction set.
#pragma once
#include <atomic>
#include <memory>
#include <vector>

#include "../core/cpu_features.h"
#include "../core/thread_pool.h"
#include "../engine/backend.h"
#include "attention.h"
#include "matmul_exl2.h"

namespace laminate {

// The EXL2 kernel of an instruction set.
MatmulExl2Fn pick_exl2(Isa isa);

class CpuBackend : public Backend {
 public:
  CpuBackend(Isa isa, int threads);
  const char* name() const override { return "cpu"; }
  Isa isa() const { return isa_; }
  int threads() const { return pool_.size(); }

  float* buffer(Buffer which, size_t floats) override;
  bool begin_step(const StepBatch& batch) override;
  int32_t* id_buffer(size_t count) override;
  bool end_step(const float* logits, int rows, int vocab, float* host, const float* values, const int32_t* ids, int top,
                float* host_values, int32_t* host_ids) override;
  StepCounts step_counts() const override;

  void linear(const LinearCall* calls, int count, int m) override;
  void rmsnorm(const float* x, const float* weight, float eps, int m, int n, float* y) override;
  void rope(float* x, int m, int heads, int head_dim, int64_t ld) override;
  void write_kv(KvCache& cache, int layer, int kv_heads, int head_dim, const float* k, const float* v) override;
  void attention(KvCache& cache, const AttentionCall& call) override;
  void swiglu(float* gate, const float* up, int64_t n) override;
  void add(float* x, const float* y, int64_t n) override;
  void embed(const DenseView& table, float* x) override;
  void gather_rows(const float* x, int64_t n, float* out) override;
  void top_k(const float* logits, int rows, int vocab, int k, float* values, int32_t* ids) override;

 private:
  Isa isa_;
  MatmulDenseFn matmul_dense_;
  MatmulExl2Fn matmul_exl2_;
  AttentionFn attention_;
  struct Exl2Scratch {
    std::vector<int8_t> q;
    std::vector<float> scale;
    std::vector<int32_t> sum;
    Exl2Act act;  // over the three above
  };
  std::vector<Exl2Scratch> exl2_acts_;  // per call: activations for the EXL2 kernels (Exl2Act)
  ThreadPool pool_;
  std::vector<std::vector<float>> scratch_;  // one per thread
  std::vector<float> buffers_[static_cast<int>(Buffer::Count)];
  std::vector<int32_t> ids_;
  StepBatch batch_;
  std::atomic<uint64_t> steps_{0};
};

}  // namespace laminate
