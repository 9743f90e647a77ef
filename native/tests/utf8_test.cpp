#include "leakprobe/runtime/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace leakprobe {
namespace {

using std::string_literals::operator""s;

TEST(Utf8Test, KeepsValidTextAsItIs) {
  for (const std::string& s :
       {""s, "/srv/app/main.py"s, "caf\xc3\xa9"s, "\xe2\x82\xac"s, "\xf0\x9d\x84\x9e"s,
        "a\0b"s, "\xed\x9f\xbf"s, "\xee\x80\x80"s, "\xf4\x8f\xbf\xbf"s, "back\\slash"s}) {
    EXPECT_TRUE(IsValidUtf8(s)) << s;
    EXPECT_EQ(ToValidUtf8(s), s);
  }
}

// The expected texts are what CPython's
// bytes.decode("utf-8", "backslashreplace") gives for the same bytes.
TEST(Utf8Test, EscapesEveryByteOutsideAWellFormedSequence) {
  const struct {
    std::string in;
    std::string out;
  } cases[] = {
      {"/tmp/x\xff.py", "/tmp/x\\xff.py"},
      {"\x80", "\\x80"},                             // lone continuation byte
      {"\xc0\xaf", "\\xc0\\xaf"},                    // overlong '/'
      {"\xe0\x80\xaf", "\\xe0\\x80\\xaf"},           // overlong, 3 bytes
      {"\xed\xa0\x80", "\\xed\\xa0\\x80"},           // a surrogate (CESU-8)
      {"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"},  // above U+10FFFF
      {"\xf8\x88\x80\x80\x80", "\\xf8\\x88\\x80\\x80\\x80"},
      {"ab\xe2\x82", "ab\\xe2\\x82"},  // truncated at the end
      {"\xe2\x82"
       "a\xc3\xa9",
       "\\xe2\\x82a\xc3\xa9"},  // truncated, then valid
      {"\xc3\xa9\xff\xc3\xa9", "\xc3\xa9\\xff\xc3\xa9"},
  };
  for (const auto& c : cases) {
    EXPECT_FALSE(IsValidUtf8(c.in)) << c.out;
    EXPECT_EQ(ToValidUtf8(c.in), c.out);
    EXPECT_TRUE(IsValidUtf8(ToValidUtf8(c.in)));
  }
}

// Every string of up to three bytes (16.8 million) comes out valid, and a
// valid one comes out unchanged.
TEST(Utf8Test, EveryShortByteStringComesOutValid) {
  int valid = 0;
  for (int a = 0; a < 256; ++a) {
    for (int b = -1; b < 256; ++b) {
      for (int c = -1; c < 256; ++c) {
        if (b < 0 && c >= 0) continue;
        std::string s(1, static_cast<char>(a));
        if (b >= 0) s += static_cast<char>(b);
        if (c >= 0) s += static_cast<char>(c);
        const std::string out = ToValidUtf8(s);
        ASSERT_TRUE(IsValidUtf8(out)) << a << " " << b << " " << c;
        if (IsValidUtf8(s)) {
          ASSERT_EQ(out, s);
          ++valid;
        } else {
          ASSERT_NE(out.find("\\x"), std::string::npos);
        }
      }
    }
  }
  // Valid strings of 1..3 bytes: 128 one-byte, 128^2 + 1920 two-byte (two
  // code points or one), and 128^3 + 2 * 128 * 1920 + 61440 three-byte.
  EXPECT_EQ(valid, 128 + (128 * 128 + 1920) + (128 * 128 * 128 + 2 * 128 * 1920 + 61440));
}

}  // namespace
}  // namespace leakprobe
