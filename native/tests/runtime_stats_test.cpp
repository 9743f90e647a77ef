#include "leakprobe/process/runtime_stats.h"

#include <gtest/gtest.h>

namespace leakprobe {
namespace {

TEST(RuntimeStatsTest, GcRoundTripsAndTruncatesExtraGenerations) {
  RuntimeStats& stats = RuntimeStats::Instance();
  stats.SetGc({{5, 100, 1}, {2, 20, 0}, {1, 3, 0}, {0, 0, 0}, {9, 9, 9}});
  const GcSnapshot gc = stats.Gc();
  ASSERT_EQ(gc.generations.size(), RuntimeStats::kMaxGenerations);
  EXPECT_EQ(gc.generations[0].collections, 5u);
  EXPECT_EQ(gc.generations[0].collected, 100u);
  EXPECT_EQ(gc.generations[0].uncollectable, 1u);
  EXPECT_EQ(gc.generations[2].collected, 3u);

  stats.SetGc({{6, 101, 1}});
  EXPECT_EQ(stats.Gc().generations.size(), 1u);
  EXPECT_EQ(stats.Gc().generations[0].collections, 6u);
}

TEST(RuntimeStatsTest, PythonInfoIsWriteOnce) {
  RuntimeStats& stats = RuntimeStats::Instance();
  stats.SetPythonInfo({"CPython", "3", "11", "7", "3.11.7"});
  stats.SetPythonInfo({"PyPy", "3", "10", "0", "3.10.0"});
  ASSERT_NE(stats.python_info(), nullptr);
  EXPECT_EQ(stats.python_info()->implementation, "CPython");
  EXPECT_EQ(stats.python_info()->version, "3.11.7");
}

}  // namespace
}  // namespace leakprobe
