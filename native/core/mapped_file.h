// A read-only memory mapping of a whole file. Pages are loaded on first touch; the
// mapping is shared with the page cache, so weights never pass through the JS heap.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace laminate {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

  // Reads one byte of every page in [offset, offset + length) so that the first forward
  // pass does not stall on page faults. Calls progress(bytes_done) now and then and
  // throws Aborted when *abort becomes true.
  void prefault(uint64_t offset, uint64_t length, const std::atomic<bool>* abort,
                const std::function<void(uint64_t)>& progress) const;

  // Drops the pages of [offset, offset + length) from this process (they stay in the page
  // cache): streaming readers call it so that resident memory does not grow with the file.
  void release(uint64_t offset, uint64_t length) const;

 private:
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace laminate
