// leakprobe/runtime/utf8.h — turns raw byte strings (paths read from the kernel,
// code file names that Python decoded with surrogateescape) into valid
// UTF-8, so that they can become Python str objects and Prometheus label
// values without failing. Valid sequences are kept; every other byte is
// written as the four characters "\xNN", as Python's
// bytes.decode("utf-8", "backslashreplace") does.
//
//   std::string text = ToValidUtf8("/tmp/x\xff.py");  // "/tmp/x\\xff.py"
//   IsValidUtf8(text);                                 // true
//
// Thread-safety: pure functions; any thread.
#pragma once

#include <string>
#include <string_view>

namespace leakprobe {

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF). NUL bytes are valid.
bool IsValidUtf8(std::string_view s) noexcept;

// `s` itself when it is valid UTF-8; otherwise a copy in which every byte
// that does not belong to a well-formed sequence is replaced by "\xNN"
// (lower-case hex). Backslashes already in `s` are kept as they are.
std::string ToValidUtf8(std::string_view s);

}  // namespace leakprobe
