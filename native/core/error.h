// Errors raised by native code. The addon turns them into JavaScript Errors.
#pragma once
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

}  // namespace laminate
