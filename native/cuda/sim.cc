// The simulator behind sim.h (built only with LAMINATE_CUDA_SIM).
#include "sim.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/error.h"
#include "runtime.h"

#if defined(__x86_64__) && defined(__linux__)
// Switching between fibers: save the callee-saved registers and the floating-point control
// words on the current stack, store the stack pointer in *from, continue on `to`.
extern "C" void laminate_sim_switch(void** from, void* to);
asm(R"(
.text
.globl laminate_sim_switch
.type laminate_sim_switch,@function
laminate_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size laminate_sim_switch, .-laminate_sim_switch
.section .note.GNU-stack,"",@progbits
.text
)");

namespace laminate::sim {
namespace {
struct Context {
  void* sp = nullptr;
};
// A stack that starts in entry() on its first switch.
void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  auto* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t(15));
  *--sp = 0;                                  // entry's return address: it never returns
  *--sp = reinterpret_cast<uint64_t>(entry);  // where the first switch returns to
  for (int i = 0; i < 6; i++) *--sp = 0;      // rbp, rbx, r12 .. r15
  uint32_t mxcsr = 0;
  uint16_t fpu = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu));
  *--sp = 0;
  std::memcpy(sp, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpu, 2);
  c.sp = sp;
}
void switch_context(Context& from, Context& to) { laminate_sim_switch(&from.sp, to.sp); }
}  // namespace
}  // namespace laminate::sim
#else
#include <ucontext.h>
namespace laminate::sim {
namespace {
struct Context {
  ucontext_t uc;
};
void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
}  // namespace
}  // namespace laminate::sim
#endif

namespace laminate::sim {

thread_local ThreadIndex* current = nullptr;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxExchangeBytes = 64;

enum class Wait { None, Block, Warp, Done };

struct Fiber {
  Context context;
  std::unique_ptr<char[]> stack;
  ThreadIndex index;
  Wait wait = Wait::None;
  int warp = 0, lane = 0;
};

struct WarpState {
  unsigned char slots[32 * kMaxExchangeBytes];
};

struct Block {
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  Context scheduler;
  const std::function<void()>* body = nullptr;
  Fiber* running = nullptr;
  std::string error;
};

thread_local Block* block = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> stacks;  // reused between launches

void fiber_main() {
  Block* b = block;
  Fiber* f = b->running;
  try {
    (*b->body)();
  } catch (const std::exception& e) {
    if (b->error.empty()) b->error = e.what();
  }
  f->wait = Wait::Done;
  switch_context(f->context, b->scheduler);
}

void yield(Wait why) {
  Fiber* f = block->running;
  f->wait = why;
  switch_context(f->context, block->scheduler);
}

void run_block(Block& b, dim3 grid, dim3 dim, dim3 at) {
  const int n = static_cast<int>(dim.x * dim.y * dim.z);
  for (int t = 0; t < n; t++) {
    Fiber& f = b.fibers[t];
    f.index = {dim3(t % dim.x, (t / dim.x) % dim.y, t / (dim.x * dim.y)), at, dim, grid};
    f.wait = Wait::None;
    f.warp = t / 32;
    f.lane = t % 32;
    make_context(f.context, f.stack.get(), kStackBytes, fiber_main);
  }
  const int warps = (n + 31) / 32;
  bool forward = true;
  for (;;) {
    // Run every thread that may go on until it waits or ends.
    for (int i = 0; i < n; i++) {
      Fiber& f = b.fibers[forward ? i : n - 1 - i];
      if (f.wait != Wait::None) continue;
      b.running = &f;
      current = &f.index;
      switch_context(b.scheduler, f.context);
    }
    forward = !forward;
    if (!b.error.empty()) throw Error("CUDA simulator: " + b.error);
    // Release a warp whose live lanes all wait at a warp collective, or the block when all
    // its live threads wait at the barrier.
    bool released = false, all_done = true, all_block = true;
    for (int w = 0; w < warps; w++) {
      bool any = false, all = true;
      for (int i = w * 32; i < std::min(n, w * 32 + 32); i++) {
        const Wait s = b.fibers[i].wait;
        if (s == Wait::Done) continue;
        any = true;
        all = all && s == Wait::Warp;
      }
      if (any && all) {
        for (int i = w * 32; i < std::min(n, w * 32 + 32); i++)
          if (b.fibers[i].wait == Wait::Warp) b.fibers[i].wait = Wait::None;
        released = true;
      }
    }
    if (released) continue;
    for (int i = 0; i < n; i++) {
      const Wait s = b.fibers[i].wait;
      all_done = all_done && s == Wait::Done;
      all_block = all_block && (s == Wait::Done || s == Wait::Block);
    }
    if (all_done) return;
    if (all_block) {
      for (int i = 0; i < n; i++)
        if (b.fibers[i].wait == Wait::Block) b.fibers[i].wait = Wait::None;
      continue;
    }
    throw Error("CUDA simulator: threads of block (" + std::to_string(at.x) + ", " + std::to_string(at.y) + ", " +
                std::to_string(at.z) + ") wait at different barriers (a __syncthreads or warp collective in divergent code)");
  }
}

void run(dim3 grid, dim3 dim, const std::function<void()>& body) {
  const int n = static_cast<int>(dim.x * dim.y * dim.z);
  if (n <= 0 || n > 1024) throw Error("CUDA simulator: a block has 1 to 1024 threads (got " + std::to_string(n) + ")");
  Block b;
  b.body = &body;
  b.fibers.resize(n);
  b.warps.resize((n + 31) / 32);
  while (static_cast<int>(stacks.size()) < n) stacks.emplace_back(new char[kStackBytes]);
  for (int t = 0; t < n; t++) b.fibers[t].stack.reset(stacks[t].release());
  Block* outer = block;
  ThreadIndex* outer_current = current;
  block = &b;
  try {
    for (unsigned z = 0; z < grid.z; z++)
      for (unsigned y = 0; y < grid.y; y++)
        for (unsigned x = 0; x < grid.x; x++) run_block(b, grid, dim, dim3(x, y, z));
  } catch (...) {
    for (int t = 0; t < n; t++) stacks[t].reset(b.fibers[t].stack.release());
    block = outer;
    current = outer_current;
    throw;
  }
  for (int t = 0; t < n; t++) stacks[t].reset(b.fibers[t].stack.release());
  block = outer;
  current = outer_current;
}

}  // namespace

void block_barrier() { yield(Wait::Block); }

void warp_exchange(const void* mine, int bytes, const std::function<void(const unsigned char*)>& read) {
  if (bytes > kMaxExchangeBytes) throw std::logic_error("warp exchange too wide");
  Fiber* f = block->running;
  WarpState& w = block->warps[f->warp];
  if (bytes > 0) std::memcpy(w.slots + f->lane * bytes, mine, bytes);
  yield(Wait::Warp);  // every lane has written
  read(w.slots);
  yield(Wait::Warp);  // every lane has read
}

void launch(dim3 grid, dim3 block_dim, cudaStream_t stream, std::function<void()> body) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) throw Error("CUDA simulator: empty grid");
  if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    throw Error("CUDA simulator: a grid of (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
                std::to_string(grid.z) + ") blocks is over CUDA's limits (2^31 - 1, 65535, 65535)");
  if (gpu::stream_capturing(stream)) {
    gpu::stream_record(stream, [grid, block_dim, body = std::move(body)] { run(grid, block_dim, body); });
    return;
  }
  run(grid, block_dim, body);
}

}  // namespace laminate::sim

namespace laminate::gpu {

// mma.m16n8k32 (s8) and mma.m16n8k16 (f16/bf16): lane = 4 * group + t. The element each
// register holds, as the PTX ISA lays out these fragments:
//   A (16 x K, row): register i, byte/half e; row = group (+8 for odd i), column
//     = t * per + e (+ K/2 for i >= 2), per = 4 (s8) or 2 (f16) elements in a register;
//   B (K x 8, column): register i; row = t * per + e (+ K/2 for i = 1), column = group;
//   C, D (16 x 8): element i; row = group (+8 for i >= 2), column = 2 t + (i & 1).
namespace {
struct MmaFragments {
  uint32_t a[4], b[2];
};
template <class Acc, class Elem>
void mma_sim(Acc d[4], const uint32_t a[4], const uint32_t b[2], const Acc c[4], int k, int per, Elem elem) {
  MmaFragments mine;
  std::memcpy(mine.a, a, sizeof mine.a);
  std::memcpy(mine.b, b, sizeof mine.b);
  Acc out[4];
  const int lane = static_cast<int>((threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31);
  sim::warp_exchange(&mine, sizeof mine, [&](const unsigned char* all) {
    auto frag = [&](int l) {
      MmaFragments f;
      std::memcpy(&f, all + l * sizeof(MmaFragments), sizeof f);
      return f;
    };
    // A[row][col] and B[row][col] from the lanes that hold them
    auto a_at = [&](int row, int col) {
      const int half = col >= k / 2 ? 1 : 0, cc = col - half * k / 2;
      const int l = 4 * (row % 8) + cc / per;
      const int reg = (row >= 8 ? 1 : 0) + 2 * half;
      return elem(frag(l).a[reg], cc % per);
    };
    auto b_at = [&](int row, int col) {
      const int half = row >= k / 2 ? 1 : 0, rr = row - half * k / 2;
      const int l = 4 * col + rr / per;
      return elem(frag(l).b[half], rr % per);
    };
    const int group = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; i++) {
      const int row = group + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
      Acc s = c[i];
      for (int j = 0; j < k; j++) s += static_cast<Acc>(a_at(row, j) * b_at(j, col));
      out[i] = s;
    }
  });
  for (int i = 0; i < 4; i++) d[i] = out[i];
}
}  // namespace

void mma_s8_16x8x32(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4]) {
  mma_sim<int>(d, a, b, c, 32, 4, [](uint32_t r, int e) { return static_cast<int>(static_cast<int8_t>(r >> (8 * e))); });
}

void mma_f16_16x8x16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16) {
  // Products of fp16/bf16 values are exact in float; the hardware's order of the sum is
  // not specified, so this one is as good as any.
  mma_sim<float>(d, a, b, c, 16, 2, [bf16](uint32_t r, int e) {
    const uint16_t h = static_cast<uint16_t>(r >> (16 * e));
    return bf16 ? bf16_to_f32(h) : f16_to_f32(h);
  });
}

}  // namespace laminate::gpu
