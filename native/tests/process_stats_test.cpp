#include "leakprobe/process/process_stats.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace leakprobe {
namespace {

// A real /proc/<pid>/stat line with a command name holding ") (" and spaces.
constexpr const char* kStat =
    "4242 (my (odd) name) S 1 4242 4242 0 -1 4194304 1200 0 3 0 "
    "250 50 0 0 20 0 7 0 1000 209715200 2560 18446744073709551615 1 1 0 0 0 "
    "0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

TEST(ParseProcStatTest, ReadsFieldsAfterTheLastParenthesis) {
  ProcessStats stats;
  ASSERT_TRUE(ParseProcStat(kStat, 4096, 100, 1'700'000'000.0, &stats));
  EXPECT_TRUE(stats.ok);
  EXPECT_DOUBLE_EQ(stats.cpu_seconds, 3.0);  // (250 + 50) ticks / 100
  EXPECT_EQ(stats.threads, 7);
  EXPECT_DOUBLE_EQ(stats.start_time_seconds, 1'700'000'010.0);  // +1000/100
  EXPECT_DOUBLE_EQ(stats.virtual_memory_bytes, 209715200.0);
  EXPECT_DOUBLE_EQ(stats.resident_memory_bytes, 2560.0 * 4096);
}

TEST(ParseProcStatTest, RejectsTruncatedAndGarbageInput) {
  ProcessStats stats;
  EXPECT_FALSE(ParseProcStat("", 4096, 100, 0, &stats));
  EXPECT_FALSE(ParseProcStat("12 (x) S 1 2 3", 4096, 100, 0, &stats));
  EXPECT_FALSE(ParseProcStat("no parenthesis here at all", 4096, 100, 0, &stats));
  std::string bad = kStat;
  bad.replace(bad.find(" 250 "), 5, " x50 ");
  EXPECT_FALSE(ParseProcStat(bad, 4096, 100, 0, &stats));
  EXPECT_FALSE(ParseProcStat(kStat, 4096, 0, 0, &stats));  // no clock ticks
  EXPECT_FALSE(stats.ok);
}

TEST(ParseBootTimeTest, FindsBtimeLine) {
  EXPECT_DOUBLE_EQ(ParseBootTime("cpu  1 2 3\nbtime 1699999999\nprocesses 5\n"),
                   1699999999.0);
  EXPECT_DOUBLE_EQ(ParseBootTime("cpu 1 2 3\n"), -1.0);
}

TEST(CountOpenFdsTest, CountsNewDescriptors) {
  const std::int64_t before = CountOpenFds();
  ASSERT_GT(before, 0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EXPECT_EQ(CountOpenFds(), before + 2);
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(CountOpenFds(), before);
}

TEST(ReadProcessStatsTest, DescribesThisProcess) {
  const ProcessStats stats = ReadProcessStats();
  ASSERT_TRUE(stats.ok);
  EXPECT_GT(stats.resident_memory_bytes, 1 << 20);
  EXPECT_GE(stats.virtual_memory_bytes, stats.resident_memory_bytes);
  EXPECT_GE(stats.threads, 1);
  EXPECT_GT(stats.start_time_seconds, 1.5e9);
  EXPECT_GT(stats.max_fds, 0);
}

}  // namespace
}  // namespace leakprobe
