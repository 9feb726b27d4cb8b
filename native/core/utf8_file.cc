#include "utf8_file.h"

#include "error.h"

#ifdef _WIN32
#include "win32.h"

#include <cerrno>
#endif

namespace laminate {

#ifdef _WIN32
std::wstring utf8_to_wide(const std::string& utf8) {
  if (utf8.empty()) return std::wstring();
  const int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), static_cast<int>(utf8.size()), nullptr, 0);
  if (n <= 0) throw Error(utf8 + ": the path is not valid UTF-8");
  std::wstring wide(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), static_cast<int>(utf8.size()), &wide[0], n);
  return wide;
}

std::FILE* fopen_utf8(const std::string& path, const char* mode) {
  std::wstring wide_mode;
  for (const char* m = mode; *m; m++) wide_mode.push_back(static_cast<wchar_t>(*m));
  std::wstring wide_path;
  try {
    wide_path = utf8_to_wide(path);
  } catch (const Error&) {
    errno = EINVAL;
    return nullptr;
  }
  return _wfopen(wide_path.c_str(), wide_mode.c_str());
}
#else
std::FILE* fopen_utf8(const std::string& path, const char* mode) { return std::fopen(path.c_str(), mode); }
#endif

}  // namespace laminate
