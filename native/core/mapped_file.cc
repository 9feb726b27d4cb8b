#include "mapped_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "error.h"

// POSIX (Linux, macOS): open + fstat + mmap, madvise for prefetch and release (only
// MADV_WILLNEED and MADV_DONTNEED, which macOS has too). Windows: CreateFileW on the
// UTF-16 path, CreateFileMappingW + MapViewOfFile, PrefetchVirtualMemory for prefetch and
// VirtualUnlock to drop pages from the working set.
#ifdef _WIN32
#include "win32.h"

#include "utf8_file.h"
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace laminate {

#ifdef _WIN32
// The system's message for a Win32 error code, without the trailing line break.
static std::string win32_message(DWORD code) {
  char* buffer = nullptr;
  const DWORD n = FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                                 nullptr, code, 0, reinterpret_cast<char*>(&buffer), 0, nullptr);
  std::string message = n && buffer ? std::string(buffer, n) : "error " + std::to_string(code);
  if (buffer) LocalFree(buffer);
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r' || message.back() == '.')) message.pop_back();
  return message;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const std::wstring wide = utf8_to_wide(path);
  const DWORD attributes = GetFileAttributesW(wide.c_str());
  if (attributes != INVALID_FILE_ATTRIBUTES && (attributes & FILE_ATTRIBUTE_DIRECTORY))
    throw Error(path + ": not a regular file");
  // Other processes may read, write, rename or delete the file meanwhile, as on POSIX.
  HANDLE file = CreateFileW(wide.c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                            OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) throw Error(path + ": cannot open: " + win32_message(GetLastError()));
  if (GetFileType(file) != FILE_TYPE_DISK) {
    CloseHandle(file);
    throw Error(path + ": not a regular file");
  }
  LARGE_INTEGER size;
  if (!GetFileSizeEx(file, &size)) {
    const DWORD e = GetLastError();
    CloseHandle(file);
    throw Error(path + ": cannot stat: " + win32_message(e));
  }
  size_ = static_cast<uint64_t>(size.QuadPart);
  if (size_ > 0) {  // a mapping of an empty file is an error on Windows
    HANDLE mapping = CreateFileMappingW(file, nullptr, PAGE_READONLY, 0, 0, nullptr);
    void* p = mapping ? MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0) : nullptr;
    const DWORD e = GetLastError();
    if (mapping) CloseHandle(mapping);  // the view keeps the mapping alive
    if (!p) {
      CloseHandle(file);
      throw Error(path + ": cannot map: " + win32_message(e));
    }
    data_ = static_cast<uint8_t*>(p);
  }
  CloseHandle(file);
}

MappedFile::~MappedFile() {
  if (data_) UnmapViewOfFile(data_);
}

// Asks the system to read [start, start + bytes) in ahead of the page-by-page touch.
static void prefetch_pages(uint8_t* start, uint64_t bytes) {
  WIN32_MEMORY_RANGE_ENTRY range;
  range.VirtualAddress = start;
  range.NumberOfBytes = static_cast<SIZE_T>(bytes);
  PrefetchVirtualMemory(GetCurrentProcess(), 1, &range, 0);  // advisory, as madvise
}

// Removes [start, start + bytes) from the working set; the pages stay in the file cache.
// VirtualUnlock on pages that are not locked does exactly that (and reports
// ERROR_NOT_LOCKED, which is expected).
static void release_pages(uint8_t* start, uint64_t bytes) { VirtualUnlock(start, static_cast<SIZE_T>(bytes)); }

static uint64_t advice_page() { return 4096; }
#else
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

// madvise wants page-aligned ranges: 4 KiB on Linux x86-64, 16 KiB on Apple silicon.
#ifdef __APPLE__
static uint64_t advice_page() { return static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)); }
#else
static uint64_t advice_page() { return 4096; }
#endif

static void prefetch_pages(uint8_t* start, uint64_t bytes) { ::madvise(start, bytes, MADV_WILLNEED); }

static void release_pages(uint8_t* start, uint64_t bytes) { ::madvise(start, bytes, MADV_DONTNEED); }
#endif

void MappedFile::prefault(uint64_t offset, uint64_t length, const std::atomic<bool>* abort,
                          const std::function<void(uint64_t)>& progress) const {
  if (offset > size_ || length > size_ - offset) throw Error(path_ + ": prefault range past the end");
  const uint64_t page = advice_page();
  const uint64_t report_every = 64ull << 20;
  uint64_t start = offset & ~(page - 1);
  uint64_t end = offset + length;
  if (length > 0) prefetch_pages(data_ + start, end - start);
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
  const uint64_t page = advice_page();
  const uint64_t start = (offset + page - 1) & ~(page - 1);  // whole pages inside the range only
  const uint64_t end = std::min(size_, offset + length) & ~(page - 1);
  if (end > start) release_pages(data_ + start, end - start);
}

}  // namespace laminate
