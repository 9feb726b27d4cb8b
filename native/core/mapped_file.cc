#include "mapped_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "error.h"

#ifdef _WIN32
#error "laminate: memory mapping is implemented for POSIX systems only"
#endif
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace laminate {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw Error(path + ": cannot map: " + std::strerror(e));
    }
    data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

void MappedFile::prefault(uint64_t offset, uint64_t length, const std::atomic<bool>* abort,
                          const std::function<void(uint64_t)>& progress) const {
  if (offset > size_ || length > size_ - offset) throw Error(path_ + ": prefault range past the end");
  const uint64_t page = 4096;
  const uint64_t report_every = 64ull << 20;
  uint64_t start = offset & ~(page - 1);
  uint64_t end = offset + length;
  if (length > 0) ::madvise(data_ + start, end - start, MADV_WILLNEED);
  volatile uint8_t sink = 0;
  uint64_t next_report = offset + report_every;
  for (uint64_t p = offset; p < end; p += page) {
    sink = sink + data_[p];
    if (p >= next_report) {
      if (abort && abort->load(std::memory_order_relaxed)) throw Aborted();
      progress(p - offset);
      next_report += report_every;
    }
  }
  (void)sink;
  progress(length);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_ || offset >= size_) return;
  const uint64_t page = 4096;
  const uint64_t start = (offset + page - 1) & ~(page - 1);  // whole pages inside the range only
  const uint64_t end = std::min(size_, offset + length) & ~(page - 1);
  if (end > start) ::madvise(data_ + start, end - start, MADV_DONTNEED);
}

}  // namespace laminate
