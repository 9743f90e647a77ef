#include "leakprobe/trend/series_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace leakprobe::trend {
namespace {

SeriesStore::Limits Small() {
  SeriesStore::Limits limits;
  limits.max_series = 3;
  limits.points_per_level = 4;
  limits.factor = 2;
  limits.levels = 3;  // spans of 1, 2 and 4 samples
  return limits;
}

const SeriesKey kTcp{Resource::kFd, "tcp"};

std::vector<double> Values(const std::vector<Point>& pts) {
  std::vector<double> out;
  for (const Point& p : pts) out.push_back(p.v);
  return out;
}
std::vector<double> Times(const std::vector<Point>& pts) {
  std::vector<double> out;
  for (const Point& p : pts) out.push_back(p.t);
  return out;
}

TEST(SeriesStoreTest, NamesEveryResource) {
  EXPECT_EQ(ResourceName(Resource::kRss), "rss");
  EXPECT_EQ(ResourceName(Resource::kHeap), "heap");
  EXPECT_EQ(ResourceName(Resource::kFd), "fd");
  EXPECT_EQ(ResourceName(Resource::kObject), "object");
  EXPECT_EQ(ResourceName(Resource::kContainer), "container");
  EXPECT_EQ(ResourceName(Resource::kThread), "thread");
  EXPECT_EQ(ResourceName(Resource::kNativeHeap), "native_heap");
  EXPECT_EQ(ResourceName(Resource::kWork), "work");
}

TEST(SeriesStoreTest, KeepsEverySampleWhileLevelZeroHoldsThem) {
  SeriesStore store(Small());
  EXPECT_TRUE(store.Points(kTcp).empty());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(store.Append(kTcp, i, 10 + i));
  EXPECT_EQ(Values(store.Points(kTcp)), (std::vector<double>{10, 11, 12, 13}));
  EXPECT_EQ(Times(store.Points(kTcp)), (std::vector<double>{0, 1, 2, 3}));
}

// Past level 0's capacity, the finest level that still covers the whole
// history: level 1's closed buckets (pairs), as minima at their time; the
// open bucket (a lone last sample) is left out.
TEST(SeriesStoreTest, PastLevelZeroGivesTheMinimaOfTheFinestCoveringLevel) {
  SeriesStore store(Small());
  const double values[] = {5, 3, 4, 6, 2, 9, 8, 7, 1};
  for (int i = 0; i < 9; ++i) store.Append(kTcp, 100 + i, values[i]);
  // Pairs: (5,3) (4,6) (2,9) (8,7) | open: 1.
  EXPECT_EQ(Values(store.Points(kTcp)), (std::vector<double>{3, 4, 2, 7}));
  EXPECT_EQ(Times(store.Points(kTcp)), (std::vector<double>{101, 102, 104, 107}));
  // A tenth sample closes a fifth pair: level 1 no longer covers the start,
  // level 2 (quads: 5,3,4,6 | 2,9,8,7) does.
  store.Append(kTcp, 109, 0);
  EXPECT_EQ(Values(store.Points(kTcp)), (std::vector<double>{3, 2}));
  EXPECT_EQ(Times(store.Points(kTcp)), (std::vector<double>{101, 104}));
}

TEST(SeriesStoreTest, PastTheCoarsestSpanKeepsItsMostRecentBuckets) {
  SeriesStore store(Small());
  // 4 quads cover 16 samples; 40 samples keep the last 4 closed quads.
  for (int i = 0; i < 40; ++i) store.Append(kTcp, i, i);
  EXPECT_EQ(Values(store.Points(kTcp)), (std::vector<double>{24, 28, 32, 36}));
}

TEST(SeriesStoreTest, CapsTheSeriesAndCountsTheDropped) {
  SeriesStore store(Small());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(store.Append({Resource::kObject, "T" + std::to_string(i)}, 0, 1));
  }
  EXPECT_FALSE(store.Append({Resource::kObject, "T3"}, 0, 1));
  EXPECT_FALSE(store.Append({Resource::kObject, "T4"}, 0, 1));
  EXPECT_FALSE(store.Append({Resource::kObject, "T3"}, 1, 1));
  EXPECT_EQ(store.series(), 3u);
  EXPECT_EQ(store.dropped_series(), 3u);
  EXPECT_TRUE(store.Points({Resource::kObject, "T3"}).empty());
  // Known series still take samples.
  EXPECT_TRUE(store.Append({Resource::kObject, "T1"}, 1, 2));
  const std::vector<SeriesKey> keys = store.Keys();
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[0].key, "T0");
  EXPECT_EQ(keys[2].key, "T2");
}

TEST(SeriesStoreTest, TellsSeriesApartByResourceAndKey) {
  SeriesStore store(Small());
  store.Append({Resource::kHeap, "total"}, 0, 1);
  store.Append({Resource::kRss, "total"}, 0, 2);
  EXPECT_EQ(store.series(), 2u);
  EXPECT_EQ(Values(store.Points({Resource::kHeap, "total"})), (std::vector<double>{1}));
  EXPECT_EQ(Values(store.Points({Resource::kRss, "total"})), (std::vector<double>{2}));
  EXPECT_TRUE(store.Points({Resource::kThread, "total"}).empty());
}

TEST(SeriesStoreTest, IgnoresAndCountsEarlierTimesAndNonFiniteSamples) {
  SeriesStore store(Small());
  EXPECT_TRUE(store.Append(kTcp, 10, 1));
  EXPECT_FALSE(store.Append(kTcp, 9, 2));
  EXPECT_FALSE(store.Append(kTcp, 10, 3));
  EXPECT_FALSE(store.Append(kTcp, std::nan(""), 4));
  EXPECT_FALSE(store.Append(kTcp, 11, std::numeric_limits<double>::infinity()));
  EXPECT_TRUE(store.Append(kTcp, 11, 5));
  EXPECT_EQ(store.out_of_order(), 2u);
  EXPECT_EQ(store.invalid_samples(), 2u);
  EXPECT_EQ(Values(store.Points(kTcp)), (std::vector<double>{1, 5}));
}

TEST(SeriesStoreTest, ClearForgetsEverything) {
  SeriesStore store(Small());
  for (int i = 0; i < 5; ++i) store.Append({Resource::kObject, std::to_string(i)}, 0, 1);
  store.Append({Resource::kObject, "0"}, -1, 1);
  store.Clear();
  EXPECT_EQ(store.series(), 0u);
  EXPECT_EQ(store.dropped_series(), 0u);
  EXPECT_EQ(store.out_of_order(), 0u);
  EXPECT_TRUE(store.Keys().empty());
  EXPECT_TRUE(store.Points({Resource::kObject, "0"}).empty());
  EXPECT_TRUE(store.Append({Resource::kObject, "0"}, -5, 1));
}

// The budget of docs/trends.md: 48 hours at the default 10 s interval, in
// 512 series (the default cap), at most 29 KiB a series, and every series
// still covers its whole history (level 3: 17280 / 512 = 33 closed buckets).
TEST(SeriesStoreTest, FortyEightHoursOfTheDefaultCapFitTheBudget) {
  SeriesStore store(SeriesStore::Limits{});
  const std::size_t empty = store.MemoryBytes();
  constexpr int kSamples = 48 * 3600 / 10;
  for (int s = 0; s < 512; ++s) {
    // Names longer than the small-string buffer, as site keys are.
    const SeriesKey key{Resource::kHeap,
                        "/srv/app/service/handlers.py:" + std::to_string(s)};
    for (int i = 0; i < kSamples; ++i) store.Append(key, 10.0 * i, s + i % 7);
  }
  EXPECT_EQ(store.series(), 512u);
  const std::size_t bytes = store.MemoryBytes() - empty;
  // Rings alone: 256 * 16 (level 0) + 3 * 256 * 32 (levels 1..3).
  EXPECT_GE(bytes, 512u * 28672u);
  EXPECT_LE(bytes, 512u * 29u * 1024u);
  const auto pts = store.Points({Resource::kHeap, "/srv/app/service/handlers.py:7"});
  ASSERT_EQ(pts.size(), 33u);
  EXPECT_LT(pts.front().t, 512 * 10.0);
  EXPECT_GE(pts.back().t, (kSamples - 2 * 512) * 10.0);
  for (const Point& p : pts) EXPECT_EQ(p.v, 7);  // each bucket's minimum
}

// The store's coarse views still carry a verdict: 48 hours of a GC-like
// sawtooth (period 7 samples, amplitude 50) whose floor gains 1 every 10
// minutes is a leak; the same with a flat floor is not.
TEST(SeriesStoreTest, FortyEightHourViewsCarryTheVerdict) {
  SeriesStore store(SeriesStore::Limits{});
  const SeriesKey leak{Resource::kObject, "app.Session"};
  const SeriesKey flat{Resource::kObject, "app.Client"};
  for (int i = 0; i < 48 * 360; ++i) {
    const double t = 10.0 * i;
    const double saw = 50.0 * (i % 7) / 6;
    store.Append(leak, t, 100 + std::floor(t / 600) + saw);
    store.Append(flat, t, 100 + saw);
  }
  const Verdict leaking = Evaluate(store.Points(leak), TrendParams{});
  EXPECT_TRUE(leaking.suspected);
  EXPECT_NEAR(leaking.slope_per_second, 1.0 / 600, 1e-4);
  const Verdict steady = Evaluate(store.Points(flat), TrendParams{});
  EXPECT_FALSE(steady.suspected);
  EXPECT_EQ(steady.reason, Reason::kFlat);
}

TEST(SeriesStoreTest, ASingleLevelStoreKeepsTheLastSamples) {
  SeriesStore::Limits limits = Small();
  limits.levels = 1;
  SeriesStore store(limits);
  for (int i = 0; i < 6; ++i) store.Append(kTcp, i, i);
  EXPECT_EQ(Values(store.Points(kTcp)), (std::vector<double>{2, 3, 4, 5}));
}

}  // namespace
}  // namespace leakprobe::trend
