// Errors raised by native code. The addon turns them into JavaScript Errors.
#pragma once
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace laminate {

struct Error : std::runtime_error {
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Thrown when a job sees its abort flag set.
struct Aborted : Error {
  Aborted() : Error("aborted") {}
};

// Throws Aborted when the flag (may be null) is set.
inline void throw_if_aborted(const std::atomic<int32_t>* abort) {
  if (abort && abort->load(std::memory_order_relaxed)) throw Aborted();
}

}  // namespace laminate
