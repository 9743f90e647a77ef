// The trend state on fake snapshots: which series it feeds, the sites and
// limits it gives verdicts, the zeroing of sites that left a short top list,
// the cap on site series, the window rule, the limit parsers, and a forked
// child forgetting the parent's history.
#include "leakprobe/trend/trend_state.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "leakprobe/fd/fd_kind.h"
#include "leakprobe/runtime/clock.h"

namespace leakprobe::trend {
namespace {

// The MonotonicNs() time `seconds` after now (just after a Start()).
class Clock {
 public:
  std::int64_t operator()(double seconds) const {
    return start_ + static_cast<std::int64_t>(seconds * 1e9);
  }

 private:
  std::int64_t start_ = MonotonicNs();
};

std::size_t KindIndex(FdKind kind) { return static_cast<std::size_t>(kind); }

// A process with heap, fd, object and container figures; `i` moves what leaks.
Snapshot FakeSnapshot(int i) {
  Snapshot s;
  s.process.ok = true;
  s.process.resident_memory_bytes = 100e6;
  s.process.threads = 5;
  s.process.open_fds = 20 + i;
  s.process.max_fds = 1024;
  HeapSummary heap;
  heap.enabled = true;
  heap.live_bytes = 10e6;
  heap.top_sites = {{"/app/a.py:1 in load", 6e6, 10}, {"/app/b.py:2 in f", 1e6, 3}};
  s.heap = heap;
  FdSummary fd;
  fd.open[KindIndex(FdKind::kTcp)] = 10 + static_cast<std::uint64_t>(i);
  fd.open[KindIndex(FdKind::kFile)] = 4;
  fd.top_sites = {{"/app/net.py:7 in connect", 10 + static_cast<std::uint64_t>(i)},
                  {"/app/io.py:3 in read", 4}};
  FdOwnerCount owned;
  owned.owner = "httpx.Client";
  owned.open_by_kind[KindIndex(FdKind::kTcp)] = 2;
  owned.kinds_seen = 1u << KindIndex(FdKind::kTcp);
  fd.owners = {owned};
  s.fd = fd;
  ObjectSummary objects;
  ObjectTypeSummary client;
  client.name = "app.Client";
  client.live = 3;
  client.created = 9;
  client.top_sites = {{"/app/c.py:5 in make", 3}};
  ObjectTypeSummary thread;
  thread.name = "threading.Thread";
  thread.live = 2;
  thread.created = 2;
  thread.top_sites = {{"/app/w.py:9 in spawn", 2}};
  ObjectTypeSummary unused;
  unused.name = "app.Unused";
  objects.types = {client, thread, unused};
  s.objects = objects;
  s.containers.containers = {{"app:cache", "lru_cache", 40, 128},
                             {"app:seen", "set", 7, -1}};
  return s;
}

TrendConfig TestConfig() {
  TrendConfig config;
  config.interval_seconds = 1;
  config.warmup_seconds = 0;
  config.memory_limit_bytes = 1e9;
  return config;
}

const SeriesVerdict* Find(const TrendSummary& summary, Resource resource,
                          const std::string& key) {
  for (const SeriesVerdict& s : summary.series) {
    if (s.resource == resource && s.key == key) return &s;
  }
  return nullptr;
}

TEST(TrendStateTest, FeedsEverySeriesOfTheContract) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  ASSERT_TRUE(state.Sample(FakeSnapshot(0), at(0)));
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  std::set<std::pair<std::string, std::string>> keys;
  for (const SeriesVerdict& s : summary->series) {
    keys.insert({std::string(ResourceName(s.resource)), s.key});
    EXPECT_EQ(s.unit, UnitName(s.resource));
    EXPECT_EQ(s.verdict.reason, Reason::kWarmup);
  }
  const std::set<std::pair<std::string, std::string>> expected = {
      {"rss", "total"},
      {"thread", "total"},
      {"heap", "total"},
      {"heap", "/app/a.py:1 in load"},
      {"heap", "/app/b.py:2 in f"},
      {"fd", "tcp"},
      {"fd", "file"},
      {"fd", "total"},
      {"fd", "site:/app/net.py:7 in connect"},
      {"fd", "site:/app/io.py:3 in read"},
      {"fd", "owner:httpx.Client"},
      {"object", "app.Client"},
      {"object", "threading.Thread"},
      {"container", "app:cache"},
      {"container", "app:seen"},
  };  // no fd kinds never used, no object type never created, no
      // collected_open series while none was collected open
  EXPECT_EQ(keys, expected);
  EXPECT_EQ(summary->series_count, expected.size());
  EXPECT_EQ(summary->samples, 1u);
  EXPECT_GT(summary->memory_bytes, 0u);
  EXPECT_EQ(Find(*summary, Resource::kFd, "total")->verdict.last_value, 14);
  EXPECT_EQ(state.Points(Resource::kFd, "total").at(0).v, 14);
}

TEST(TrendStateTest, CollectedOpenSeriesGetsTheTopCollectedSite) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 60; ++i) {
    Snapshot s = FakeSnapshot(i);
    // Dropped unclosed: none live, one more collected open every second.
    ObjectTypeSummary session;
    session.name = "app.Session";
    session.created = 1000 + static_cast<std::uint64_t>(i);
    session.collected_open = 1000 + static_cast<std::uint64_t>(i);
    session.collected_open_sites = {{kCollectedSitesOverflowName, 900, 0},
                                    {"/app/s.py:4 in open_session", 100, 7}};
    s.objects->types.push_back(session);
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  const SeriesVerdict* collected =
      Find(*summary, Resource::kObject, "app.Session:collected_open");
  ASSERT_NE(collected, nullptr);
  EXPECT_TRUE(collected->verdict.suspected);
  // The top site naming a line: the overflow entry names none.
  EXPECT_EQ(collected->site, "/app/s.py:4 in open_session");
  // The live series has no live site.
  EXPECT_FALSE(Find(*summary, Resource::kObject, "app.Session")->site.has_value());
  // A type with no collected-open site leaves it unnamed.
  EXPECT_EQ(Find(*summary, Resource::kObject, "app.Client:collected_open"), nullptr);
}

TEST(TrendStateTest, AUnitOfWorkThatKeepsASocketPerRunIsFlaggedItsTwinNot) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 60; ++i) {
    Snapshot s = FakeSnapshot(i);
    const auto runs = static_cast<std::uint64_t>(i + 1);
    s.containers.work = {{"task", "app.leaky", runs, i + 1, 0, 0},
                         {"task", "app.clean", runs, 0, 0, 0}};
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  const SeriesVerdict* leaky = Find(*summary, Resource::kWork, "task:app.leaky:fds");
  ASSERT_NE(leaky, nullptr);
  EXPECT_TRUE(leaky->verdict.suspected);
  EXPECT_EQ(leaky->unit, "fds");
  const SeriesVerdict* clean = Find(*summary, Resource::kWork, "task:app.clean:fds");
  ASSERT_NE(clean, nullptr);
  EXPECT_FALSE(clean->verdict.suspected);
  // Objects: a series only once some run left one.
  EXPECT_EQ(Find(*summary, Resource::kWork, "task:app.leaky:objects"), nullptr);
}

TEST(TrendStateTest, LeakGetsItsSiteAndTimeToExhaustion) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(state.Sample(FakeSnapshot(i), at(i)));
  }
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  EXPECT_EQ(summary->samples, 60u);
  const SeriesVerdict* tcp = Find(*summary, Resource::kFd, "tcp");
  ASSERT_NE(tcp, nullptr);
  EXPECT_TRUE(tcp->verdict.suspected);
  EXPECT_NEAR(tcp->verdict.slope_per_second, 1.0, 1e-9);
  EXPECT_EQ(tcp->site, "/app/net.py:7 in connect");  // the flagged site series
  EXPECT_EQ(tcp->limit, 1024);
  // 1024 - (20 + 59) fds left, at 1 fd/s.
  EXPECT_NEAR(tcp->verdict.time_to_exhaustion_seconds, 1024 - 79, 1e-6);
  EXPECT_TRUE(Find(*summary, Resource::kFd, "total")->verdict.suspected);
  const SeriesVerdict* file = Find(*summary, Resource::kFd, "file");
  EXPECT_FALSE(file->verdict.suspected);
  EXPECT_EQ(file->site, "/app/net.py:7 in connect");  // fd series share the fd sites
  // Flagged first.
  EXPECT_TRUE(summary->series.front().verdict.suspected);
  const SeriesVerdict* heap = Find(*summary, Resource::kHeap, "total");
  EXPECT_FALSE(heap->verdict.suspected);
  EXPECT_EQ(heap->site, "/app/a.py:1 in load");  // nothing flagged: the top live site
  EXPECT_EQ(heap->limit, 1e9);
  EXPECT_TRUE(std::isinf(heap->verdict.time_to_exhaustion_seconds));
  EXPECT_EQ(Find(*summary, Resource::kHeap, "/app/b.py:2 in f")->site,
            "/app/b.py:2 in f");
  EXPECT_EQ(Find(*summary, Resource::kObject, "app.Client")->site, "/app/c.py:5 in make");
  EXPECT_EQ(Find(*summary, Resource::kThread, "total")->site, "/app/w.py:9 in spawn");
  EXPECT_TRUE(std::isinf(Find(*summary, Resource::kThread, "total")->limit));
  EXPECT_EQ(Find(*summary, Resource::kContainer, "app:cache")->limit, 128);
  EXPECT_TRUE(std::isinf(Find(*summary, Resource::kContainer, "app:seen")->limit));
  EXPECT_FALSE(Find(*summary, Resource::kContainer, "app:cache")->site.has_value());
  EXPECT_FALSE(Find(*summary, Resource::kRss, "total")->site.has_value());
  EXPECT_EQ(Find(*summary, Resource::kRss, "total")->limit, 1e9);
  // The history, in seconds since start.
  const std::vector<Point> points = state.Points(Resource::kFd, "tcp");
  ASSERT_EQ(points.size(), 60u);
  EXPECT_NEAR(points[59].t, 59, 0.01);
  EXPECT_EQ(points[59].v, 69);
}

// The pool rows of one SQLAlchemy engine (its `checked_out` the in-use
// state) with `limit`, and an httpcore "all" without one.
void AddPools(Snapshot* s, std::uint64_t checked_out, std::int64_t limit,
              std::uint64_t active) {
  s->containers.pools = {
      {"sqlalchemy", "sqlite:///app.db", "open", checked_out + 1, limit},
      {"sqlalchemy", "sqlite:///app.db", "checked_in", 1, limit},
      {"sqlalchemy", "sqlite:///app.db", "checked_out", checked_out, limit},
      {"sqlalchemy", "sqlite:///app.db", "invalidated", 0, limit},
      {"httpcore", "all", "active", active, -1},
      {"httpcore", "all", "idle", 4, -1},
  };
}

TEST(TrendStateTest, PoolSeriesRunsOutAtThePoolsSize) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 60; ++i) {
    Snapshot s = FakeSnapshot(0);
    // One more connection checked out and never returned every 2 s, from 4.
    AddPools(&s, 4 + static_cast<std::uint64_t>(i / 2), 50, i == 0 ? 0 : 1);
    ObjectTypeSummary fairy;
    fairy.name = "sqlalchemy.PoolProxiedConnection";
    fairy.live = 4 + static_cast<std::uint64_t>(i / 2);
    fairy.created = fairy.live;
    fairy.top_sites = {{"/app/db.py:12 in get_session", fairy.live}};
    s.objects->types.push_back(fairy);
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  const SeriesVerdict* pool =
      Find(*summary, Resource::kPool, "sqlalchemy:sqlite:///app.db");
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(ResourceName(pool->resource), "pool");
  EXPECT_EQ(pool->unit, "connections");
  EXPECT_TRUE(pool->verdict.suspected);
  EXPECT_EQ(pool->limit, 50);
  EXPECT_EQ(pool->verdict.last_value, 33);
  EXPECT_NEAR(pool->verdict.slope_per_second, 0.5, 0.02);
  // (limit - last) / slope: 17 connections left at the fitted rate.
  EXPECT_NEAR(pool->verdict.time_to_exhaustion_seconds,
              (50 - 33) / pool->verdict.slope_per_second, 1e-6);
  EXPECT_NEAR(pool->verdict.time_to_exhaustion_seconds, 34, 2);
  EXPECT_EQ(pool->site, "/app/db.py:12 in get_session");
  // Only the in-use states make series.
  std::size_t pools = 0;
  for (const SeriesVerdict& v : summary->series)
    pools += v.resource == Resource::kPool ? 1 : 0;
  EXPECT_EQ(pools, 2u);
  const SeriesVerdict* http = Find(*summary, Resource::kPool, "httpcore:all");
  ASSERT_NE(http, nullptr);  // from its first connection in use
  EXPECT_EQ(state.Points(Resource::kPool, "httpcore:all").size(), 59u);
  EXPECT_FALSE(http->verdict.suspected);
  EXPECT_TRUE(std::isinf(http->limit));
  EXPECT_TRUE(std::isinf(http->verdict.time_to_exhaustion_seconds));
  EXPECT_FALSE(http->site.has_value());
}

TEST(TrendStateTest, PoolFullAndStayingFullIsAPlateau) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 90; ++i) {
    Snapshot s = FakeSnapshot(0);
    // Warms up to its size (10) within 20 s, then serves at its size.
    AddPools(&s, static_cast<std::uint64_t>(std::min(10, i / 2)), 10, 0);
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  const SeriesVerdict* pool =
      Find(*summary, Resource::kPool, "sqlalchemy:sqlite:///app.db");
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->limit, 10);
  EXPECT_FALSE(pool->verdict.suspected);
  EXPECT_EQ(pool->verdict.reason, Reason::kPlateau);
  EXPECT_TRUE(std::isinf(pool->verdict.time_to_exhaustion_seconds));
  EXPECT_EQ(Find(*summary, Resource::kPool, "httpcore:all"), nullptr);  // never used
}

TEST(TrendStateTest, PoolSeriesAreCappedAndTheRestCounted) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  constexpr std::size_t kPools = kMaxPoolSeries + 8;
  for (int i = 0; i < 3; ++i) {
    Snapshot s = FakeSnapshot(0);
    for (std::size_t p = 0; p < kPools; ++p) {
      s.containers.pools.push_back(
          {"sqlalchemy", "sqlite:///" + std::to_string(p) + ".db", "checked_out", 1, 5});
    }
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  std::size_t pools = 0;
  for (const SeriesVerdict& v : summary->series)
    pools += v.resource == Resource::kPool ? 1 : 0;
  EXPECT_EQ(pools, kMaxPoolSeries);
  EXPECT_EQ(summary->dropped_series, 3 * (kPools - kMaxPoolSeries));
  EXPECT_EQ(state.Points(Resource::kPool, "sqlalchemy:sqlite:///0.db").size(), 3u);
  EXPECT_TRUE(state.Points(Resource::kPool, "sqlalchemy:sqlite:///39.db").empty());
}

TEST(TrendStateTest, HeapTotalNamesTheGrowingSiteNotTheLargest) {
  // No heap site is flagged (b.py grows by less than the minimum effect):
  // heap/total still names the site that grows, not the largest one
  // (start-up code, flat).
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 60; ++i) {
    Snapshot s = FakeSnapshot(0);
    s.heap->top_sites = {{"/app/a.py:1 in load", 6e6, 10},
                         {"/app/b.py:2 in f", 1e6 + 1000.0 * i, 3}};
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  ASSERT_TRUE(summary.has_value());
  const SeriesVerdict* b = Find(*summary, Resource::kHeap, "/app/b.py:2 in f");
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(b->verdict.suspected);
  EXPECT_GT(b->verdict.slope_per_second, 0);
  EXPECT_EQ(Find(*summary, Resource::kHeap, "total")->site, "/app/b.py:2 in f");
}

TEST(TrendStateTest, SiteGoneFromAShortListIsZeroFromAFullOneUnknown) {
  TrendConfig config = TestConfig();
  config.fd_top_sites = 2;
  TrendState state;
  state.Start(config);
  const Clock at;
  ASSERT_TRUE(state.Sample(FakeSnapshot(0), at(0)));
  Snapshot full = FakeSnapshot(0);
  full.fd->top_sites = {{"/app/net.py:7 in connect", 10}, {"/app/other.py:1 in g", 5}};
  ASSERT_TRUE(state.Sample(full, at(1)));  // io.py left a full list: unknown
  EXPECT_EQ(state.Points(Resource::kFd, "site:/app/io.py:3 in read").size(), 1u);
  Snapshot short_list = FakeSnapshot(0);
  short_list.fd->top_sites = {{"/app/net.py:7 in connect", 10}};
  ASSERT_TRUE(state.Sample(short_list, at(2)));  // absent from a short list: 0
  const auto io = state.Points(Resource::kFd, "site:/app/io.py:3 in read");
  ASSERT_EQ(io.size(), 2u);
  EXPECT_EQ(io[1].v, 0);
  EXPECT_EQ(state.Points(Resource::kFd, "site:/app/other.py:1 in g").back().v, 0);
}

TEST(TrendStateTest, SiteSeriesAreCappedPerResource) {
  TrendState state;
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 100; ++i) {
    Snapshot s = FakeSnapshot(0);
    s.fd->top_sites = {{"/app/s.py:" + std::to_string(i) + " in f", 1}};
    ASSERT_TRUE(state.Sample(s, at(i)));
  }
  const auto summary = state.Summary();
  std::size_t sites = 0;
  for (const SeriesVerdict& s : summary->series) {
    sites += s.resource == Resource::kFd && s.key.starts_with("site:") ? 1 : 0;
  }
  EXPECT_EQ(sites, kMaxSiteSeries);
  EXPECT_EQ(state.Points(Resource::kFd, "site:/app/s.py:99 in f").size(), 0u);
  EXPECT_EQ(state.Points(Resource::kFd, "total").size(), 100u);
}

TEST(TrendStateTest, StopForgetsAndRefusesSamples) {
  TrendState state;
  const Clock at;
  EXPECT_FALSE(state.Sample(FakeSnapshot(0), at(0)));
  EXPECT_FALSE(state.Summary().has_value());
  state.Start(TestConfig());
  EXPECT_TRUE(state.Summary().has_value());
  EXPECT_TRUE(state.Summary()->series.empty());  // before the first sample
  ASSERT_TRUE(state.Sample(FakeSnapshot(0), at(0)));
  state.Stop();
  EXPECT_FALSE(state.running());
  EXPECT_FALSE(state.Summary().has_value());
  EXPECT_FALSE(state.Sample(FakeSnapshot(0), at(1)));
  EXPECT_TRUE(state.Points(Resource::kFd, "total").empty());
}

TEST(TrendStateTest, ForkedChildForgetsTheParentsHistory) {
  TrendState& state = TrendState::Instance();
  state.Start(TestConfig());
  const Clock at;
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(state.Sample(FakeSnapshot(i), at(i)));
  ASSERT_FALSE(state.Summary()->series.empty());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest assertions, an exit code per failed check.
    const auto summary = state.Summary();
    if (!summary || !summary->series.empty() || summary->samples != 0) _exit(10);
    if (!state.Points(Resource::kFd, "tcp").empty()) _exit(11);
    if (!state.Sample(FakeSnapshot(0), MonotonicNs()))
      _exit(12);  // still running, its own history
    if (state.Points(Resource::kFd, "tcp").size() != 1) _exit(13);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(state.Points(Resource::kFd, "tcp").size(), 30u);  // the parent keeps its own
  state.Stop();
}

TEST(TrendStateTest, WindowScalesWithTheInterval) {
  TrendConfig config;
  const TrendParams defaults;
  config.interval_seconds = 10;
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_window_seconds,
            defaults.min_window_seconds);
  config.interval_seconds = 0.5;
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_window_seconds, 10);
  config.interval_seconds = 2;
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_window_seconds, 24);
  config.interval_seconds = 5;
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_window_seconds, 150);
  config.interval_seconds = 300;
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_window_seconds,
            defaults.min_window_seconds);
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_points, defaults.min_points);
  config.params = DefaultResourceParams(1000, 4000);
  EXPECT_EQ(ParamsFor(config, Resource::kHeap).min_growth, 8000);
  EXPECT_EQ(ParamsFor(config, Resource::kHeap).sampling_unit, 1000);
  EXPECT_EQ(ParamsFor(config, Resource::kNativeHeap).sampling_unit, 4000);
  EXPECT_EQ(ParamsFor(config, Resource::kRss).sampling_unit, 0);
  EXPECT_EQ(ParamsFor(config, Resource::kFd).sampling_unit, 0);
  EXPECT_EQ(ParamsFor(config, Resource::kFd).min_growth, 3);
  EXPECT_EQ(ParamsFor(config, Resource::kRss).min_relative_growth, 0.05);
}

TEST(TrendStateTest, MemoryLimitParsers) {
  EXPECT_FALSE(ParseCgroupMemoryMax("max\n").has_value());
  EXPECT_EQ(ParseCgroupMemoryMax("1073741824\n"), 1073741824.0);
  EXPECT_FALSE(ParseCgroupMemoryMax("").has_value());
  EXPECT_FALSE(ParseCgroupMemoryMax("12abc").has_value());
  EXPECT_EQ(ParseMemTotal("MemTotal:       16318480 kB\nMemFree: 1 kB\n"),
            16318480.0 * 1024);
  EXPECT_FALSE(ParseMemTotal("MemFree: 1 kB\n").has_value());
  EXPECT_EQ(ParseCgroupV2Path("0::/user.slice/app.scope\n"), "/user.slice/app.scope");
  EXPECT_FALSE(ParseCgroupV2Path("2:cpu:/x\n").has_value());
  EXPECT_GT(MemoryLimitBytes(), 0);
}

}  // namespace
}  // namespace leakprobe::trend
