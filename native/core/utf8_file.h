// Opening files by UTF-8 path on every platform. POSIX takes the bytes as they are; Windows
// wants UTF-16, so there the path is converted and the wide API is used (the narrow one
// would read it in the ANSI code page and fail on any non-ASCII name).
#pragma once
#include <cstdio>
#include <string>

namespace laminate {

// std::fopen with a UTF-8 path; null with errno set on failure, as std::fopen.
std::FILE* fopen_utf8(const std::string& path, const char* mode);

#ifdef _WIN32
// UTF-8 to UTF-16 for the Win32 wide-character API; throws Error on invalid UTF-8.
std::wstring utf8_to_wide(const std::string& utf8);
#endif

}  // namespace laminate
