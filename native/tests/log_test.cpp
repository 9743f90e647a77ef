#include "leakprobe/runtime/log.h"

#include <gtest/gtest.h>

#include <string>

namespace leakprobe {
namespace {

TEST(LogTest, ParsesOnlyDocumentedLevelNames) {
  EXPECT_EQ(ParseLogLevel("warning"), spdlog::level::warn);
  EXPECT_EQ(ParseLogLevel("off"), spdlog::level::off);
  EXPECT_FALSE(ParseLogLevel("WARNING").has_value());
  EXPECT_FALSE(ParseLogLevel("warn").has_value());
  EXPECT_FALSE(ParseLogLevel("").has_value());
  EXPECT_FALSE(SetLogLevel("verbose"));
}

TEST(LogTest, WritesOneLinePerMessageAndHonoursTheLevel) {
  ASSERT_TRUE(SetLogLevel("warning"));
  testing::internal::CaptureStderr();
  Log(spdlog::level::info, "hidden");
  Log(spdlog::level::warn, "LEAKPROBE_PORT='x' is not a port");
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "[leakprobe] [warning] LEAKPROBE_PORT='x' is not a port\n");
  ASSERT_TRUE(SetLogLevel("info"));
}

TEST(LogTest, LevelSurvivesLoggerReplacementAfterFork) {
  ASSERT_TRUE(SetLogLevel("error"));
  ResetLogAfterFork();
  testing::internal::CaptureStderr();
  Log(spdlog::level::warn, "hidden");
  Log(spdlog::level::err, "shown");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "[leakprobe] [error] shown\n");
  ASSERT_TRUE(SetLogLevel("info"));
}

}  // namespace
}  // namespace leakprobe
