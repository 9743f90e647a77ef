// Valid UTF-8 from raw bytes (see leakprobe/utf8.h).
#include "leakprobe/runtime/utf8.h"

#include <cstddef>

namespace leakprobe {
namespace {

bool InRange(unsigned char c, unsigned char lo, unsigned char hi) noexcept {
  return c >= lo && c <= hi;
}

// The length (1..4) of the well-formed sequence at the start of `s`, or 0.
// The ranges are those of the Unicode standard's table of well-formed
// UTF-8 byte sequences (Table 3-7).
std::size_t SequenceLength(std::string_view s) noexcept {
  const auto at = [&s](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = at(0);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  unsigned char lo = 0x80;  // the range of the second byte
  unsigned char hi = 0xBF;
  if (InRange(b0, 0xC2, 0xDF)) {
    len = 2;
  } else if (InRange(b0, 0xE0, 0xEF)) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (InRange(b0, 0xF0, 0xF4)) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0, C1 or F5..FF
  }
  if (s.size() < len || !InRange(at(1), lo, hi)) return 0;
  for (std::size_t i = 2; i < len; ++i) {
    if (!InRange(at(i), 0x80, 0xBF)) return 0;
  }
  return len;
}

}  // namespace

bool IsValidUtf8(std::string_view s) noexcept {
  while (!s.empty()) {
    const std::size_t len = SequenceLength(s);
    if (len == 0) return false;
    s.remove_prefix(len);
  }
  return true;
}

std::string ToValidUtf8(std::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 16);
  while (!s.empty()) {
    const std::size_t len = SequenceLength(s);
    if (len > 0) {
      out.append(s.data(), len);
      s.remove_prefix(len);
      continue;
    }
    const auto byte = static_cast<unsigned char>(s[0]);
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 0xF];
    s.remove_prefix(1);
  }
  return out;
}

}  // namespace leakprobe
