#include "thread_pool.h"

#include <chrono>
#include <fstream>
#include <set>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() {}
#endif

// Physical cores: Linux reads the affinity mask and /sys topology, macOS asks sysctl,
// Windows asks GetLogicalProcessorInformationEx; anything else takes the logical count.
#ifdef __linux__
#include <sched.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(_WIN32)
#include "win32.h"

#include <vector>
#endif

namespace laminate {

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) threads = 1;
  for (int i = 1; i < threads; i++) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_tasks(int thread) {
  for (;;) {
    int task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= tasks_) return;
    (*fn_)(task, thread);
  }
}

void ThreadPool::parallel_for(int tasks, const std::function<void(int, int)>& fn) {
  if (tasks <= 0) return;
  if (workers_.empty() || tasks == 1) {
    for (int t = 0; t < tasks; t++) fn(t, 0);
    return;
  }
  fn_ = &fn;
  tasks_ = tasks;
  next_task_.store(0, std::memory_order_relaxed);
  busy_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_tasks(0);
  // Spin for the stragglers; if one seems descheduled (other load on the cores), yield
  // so that it can run instead of burning our time slice.
  for (int spins = 0; busy_workers_.load(std::memory_order_acquire) != 0; spins++) {
    if (spins < 4096) cpu_relax();
    else std::this_thread::yield();
  }
  fn_ = nullptr;
}

void ThreadPool::worker_main(int thread) {
  using Clock = std::chrono::steady_clock;
  const auto spin_for = std::chrono::microseconds(300);
  uint64_t seen = 0;
  for (;;) {
    // Wait for a new generation: spin first, then sleep.
    auto start = Clock::now();
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      cpu_relax();
      if (++spins % 256 == 0 && Clock::now() - start > spin_for) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        break;
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return;
    }
    run_tasks(thread);
    busy_workers_.fetch_sub(1, std::memory_order_release);
  }
}

int default_thread_count() {
  int logical = static_cast<int>(std::thread::hardware_concurrency());
  if (logical < 1) logical = 1;
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    // Count distinct physical cores among the CPUs we may use.
    std::set<std::string> cores;
    int allowed = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
      if (!CPU_ISSET(cpu, &set)) continue;
      allowed++;
      std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
      std::string p, c;
      if (pkg >> p && core >> c) cores.insert(p + ":" + c);
      else cores.insert("cpu" + std::to_string(cpu));
    }
    if (!cores.empty()) return static_cast<int>(cores.size());
    if (allowed > 0) return allowed;
  }
#elif defined(__APPLE__)
  int physical = 0;
  size_t size = sizeof physical;
  if (sysctlbyname("hw.physicalcpu", &physical, &size, nullptr, 0) == 0 && physical > 0 && physical <= logical)
    return physical;
#elif defined(_WIN32)
  DWORD bytes = 0;
  GetLogicalProcessorInformationEx(RelationProcessorCore, nullptr, &bytes);
  if (bytes > 0) {
    std::vector<unsigned char> buffer(bytes);
    auto* info = reinterpret_cast<SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX*>(buffer.data());
    if (GetLogicalProcessorInformationEx(RelationProcessorCore, info, &bytes)) {
      int physical = 0;
      for (DWORD at = 0; at < bytes;) {
        auto* entry = reinterpret_cast<SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX*>(buffer.data() + at);
        if (entry->Size == 0) break;
        if (entry->Relationship == RelationProcessorCore) physical++;
        at += entry->Size;
      }
      if (physical > 0 && physical <= logical) return physical;
    }
  }
#endif
  return logical;
}

}  // namespace laminate
