// A native job that runs off the JS thread with progress callbacks and an abort flag, and
// settles a promise: the shape of loading (prefault) and of merges and exports.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <utility>

#include "args.h"

namespace laminate {

class ProgressJob : public Napi::AsyncProgressWorker<Progress> {
 public:
  using Work = std::function<void(const std::atomic<int32_t>* abort, const std::function<void(uint64_t, uint64_t)>& progress)>;
  // Makes the promise's value on the JS thread once the work is done.
  using Finish = std::function<Napi::Value(Napi::Env)>;

  // Queues the job; returns its promise (resolved with finish's value, or undefined;
  // rejected with the error, named AbortError when aborted).
  static Napi::Promise start(Napi::Env env, Work work, const Napi::Value& on_progress, const Napi::Value& abort,
                             Finish finish = nullptr) {
    auto* job = new ProgressJob(env, std::move(work), on_progress, abort);
    job->finish_ = std::move(finish);
    Napi::Promise promise = job->deferred_.Promise();
    job->Queue();
    return promise;
  }

 private:
  ProgressJob(Napi::Env env, Work work, const Napi::Value& on_progress, const Napi::Value& abort)
      : Napi::AsyncProgressWorker<Progress>(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        abort_(abort) {
    if (on_progress.IsFunction()) callback_ = Napi::Persistent(on_progress.As<Napi::Function>());
  }

  void Execute(const ExecutionProgress& progress) override {
    try {
      work_(abort_.flag, [&](uint64_t done, uint64_t total) {
        Progress p{static_cast<double>(done), static_cast<double>(total)};
        progress.Send(&p, 1);
      });
    } catch (const Aborted&) {
      aborted_ = true;
      SetError("aborted");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnProgress(const Progress* p, size_t count) override {
    if (callback_.IsEmpty() || count == 0) return;
    callback_.Call({Napi::Number::New(Env(), p[count - 1].done), Napi::Number::New(Env(), p[count - 1].total)});
  }
  void OnOK() override {
    if (!finish_) return deferred_.Resolve(Env().Undefined());
    try {
      deferred_.Resolve(finish_(Env()));
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(Env(), e.what()).Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    if (aborted_) e.Set("name", Napi::String::New(Env(), "AbortError"));
    deferred_.Reject(e.Value());
  }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Finish finish_;
  Napi::FunctionReference callback_;
  AbortFlag abort_;
  bool aborted_ = false;
};

}  // namespace laminate
