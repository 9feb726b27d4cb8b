// The quantizer's walk through a model: calibration rows go through the engine one decoder
// layer at a time. Each layer's linear inputs are tapped into Hessians; the measurement pass
// scores candidate EXL2 layouts of a block on its real output, the quantization pass runs
// GPTQ block by block and feeds the next block the quantized block's output.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/thread_pool.h"
#include "../engine/engine.h"
#include "gptq.h"

namespace laminate {

// The two blocks of a decoder layer, and their linears in order.
enum class Block : int { Attention = 0, Mlp = 1 };
// Attention: q, k, v, o. MLP: gate, up, down.
constexpr int block_linears(Block b) { return b == Block::Attention ? 4 : 3; }

// Progress (done, total) and the abort flag of a job.
using JobProgress = std::function<void(uint64_t, uint64_t)>;

class Calibration {
 public:
  // tokens: rows x length ids. chunk_tokens: most tokens sent through a layer at once.
  Calibration(std::shared_ptr<Engine> engine, std::vector<int32_t> tokens, int rows, int length, int threads,
              int chunk_tokens);

  // Measurement of one block of the next layer: `layouts[m]` are the candidate layouts of its
  // m-th linear, `combos` (block_linears entries each) pick one per linear. Returns each
  // combination's mean relative error of the block's output (the residual stream), over
  // calibration rows, against the unquantized block. The state moves past the block
  // unquantized.
  std::vector<double> measure(Block block, const std::vector<std::vector<std::vector<QuantGroup>>>& layouts,
                              const std::vector<std::vector<int>>& combos, const std::atomic<int32_t>* abort,
                              const JobProgress& progress);

  // Quantizes one block of the next layer with one layout per linear, in order of inputs
  // (q, k, v from the block input; o from the attention with q, k, v quantized; likewise
  // gate and up, then down), and moves the state past the quantized block. Returns the
  // quantized linears and the block output's mean relative error against the unquantized
  // block on the same input.
  std::vector<QuantizedLinear> quantize(Block block, const std::vector<std::vector<QuantGroup>>& layouts,
                                        const std::atomic<int32_t>* abort, const JobProgress& progress,
                                        double* error);

  // Quantizes the head (the final norm of the state) with one layout; GPTQ, or round to
  // nearest after the scale search when error_feedback is false.
  QuantizedLinear quantize_head(const std::vector<QuantGroup>& layout, bool error_feedback,
                                const std::atomic<int32_t>* abort);

  // The state (hidden states of every row before the next block) to and from a file, to
  // resume a job. load checks that the file fits this calibration.
  void save(const std::string& path) const;
  void load(const std::string& path, int next_layer, int next_block);

 private:
  // Runs `block` of the next layer with weights w over every row of x, tapping into `tap`.
  void run(Block block, const DecoderLayerWeights& w, std::vector<float>& x, LinearTap* tap,
           const std::atomic<int32_t>* abort);
  double relative_error(const std::vector<float>& y, const std::vector<float>& ref) const;
  void advance(Block block);

  std::shared_ptr<Engine> engine_;
  std::vector<float> x_;  // [rows * length, hidden]
  int rows_, length_, hidden_, chunk_rows_;
  int next_layer_ = 0, next_block_ = 0;
  ThreadPool pool_;
  mutable std::mutex mutex_;
};

}  // namespace laminate
