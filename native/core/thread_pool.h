// A fixed pool of worker threads for data-parallel kernels. The calling thread takes part
// in the work. Idle workers spin briefly (kernels follow each other closely within a
// forward pass) and then sleep.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace laminate {

class ThreadPool {
 public:
  // threads: total number of threads that run work, the caller included (>= 1).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task, thread) for every task in [0, tasks), spread over the pool, and returns
  // when all calls have returned. thread is in [0, size()). Not reentrant: one caller at a time.
  void parallel_for(int tasks, const std::function<void(int, int)>& fn);

 private:
  void worker_main(int thread);
  void run_tasks(int thread);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_task_{0};
  std::atomic<int> busy_workers_{0};
  const std::function<void(int, int)>* fn_ = nullptr;
  int tasks_ = 0;
  bool stop_ = false;
};

// Number of physical cores this process may run on (hyper-threads counted once).
int default_thread_count();

}  // namespace laminate
