#include "leakprobe/objects/containers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "leakprobe/prometheus/collector.h"

namespace leakprobe {
namespace {

TEST(ContainerStoreTest, RowsRoundTripAndAreReplaced) {
  ContainerStore& store = ContainerStore::Instance();
  store.SetContainers({{"app:CACHE", "dict", 42, -1}, {"app:get", "lru_cache", 7, 128}},
                      3);
  ContainerSummary s = store.Summary();
  ASSERT_EQ(s.containers.size(), 2u);
  EXPECT_EQ(s.containers[0].name, "app:CACHE");
  EXPECT_EQ(s.containers[0].kind, "dict");
  EXPECT_EQ(s.containers[0].size, 42u);
  EXPECT_EQ(s.containers[0].maxsize, -1);
  EXPECT_EQ(s.containers[1].maxsize, 128);
  EXPECT_EQ(s.watched, 3u);

  store.SetContainers({{"b", "list", 1, -1}}, 1);
  s = store.Summary();
  ASSERT_EQ(s.containers.size(), 1u);
  EXPECT_EQ(s.containers[0].name, "b");
  store.SetContainers({}, 0);
}

TEST(ContainerStoreTest, CapsRowsAndCutsLongNamesAtAUtf8Boundary) {
  ContainerStore& store = ContainerStore::Instance();
  std::vector<ContainerSize> rows(ContainerStore::kMaxContainers + 5,
                                  {"x", "set", 1, -1});
  // 126 ASCII bytes then a 2-byte character: cut before it, not inside it.
  rows[0].name = std::string(126, 'a') + "\xc3\xa9" + "tail";
  store.SetContainers(rows, rows.size());
  const ContainerSummary s = store.Summary();
  EXPECT_EQ(s.containers.size(), ContainerStore::kMaxContainers);
  EXPECT_EQ(s.watched, rows.size());
  EXPECT_EQ(s.containers[0].name, std::string(126, 'a'));
  store.SetContainers({}, 0);
}

TEST(ContainerStoreTest, CensusRoundTrips) {
  ContainerStore& store = ContainerStore::Instance();
  store.SetCensus({{"dict", 1000, 10}, {"app.Order", 50, 50}}, {3, 123456, 0.01, 0.2});
  const ContainerSummary s = store.Summary();
  ASSERT_EQ(s.census.size(), 2u);
  EXPECT_EQ(s.census[1].type, "app.Order");
  EXPECT_EQ(s.census[1].objects, 50u);
  EXPECT_EQ(s.census[1].growth, 50);
  EXPECT_EQ(s.census_figures.runs, 3u);
  EXPECT_EQ(s.census_figures.objects, 123456u);
  EXPECT_DOUBLE_EQ(s.census_figures.pause_seconds, 0.01);
  store.SetCensus({}, {});
}

TEST(ContainerStoreTest, WorkRowsRoundTripCappedAndExported) {
  ContainerStore& store = ContainerStore::Instance();
  std::vector<WorkUnit> rows(ContainerStore::kMaxWorkRows + 3, {"task", "t", 1, 0, 0, 0});
  rows[0] = {"task", "app.fetch", 30, 30, 29, -512.5};
  store.SetWork(rows);
  ContainerSummary s = store.Summary();
  ASSERT_EQ(s.work.size(), ContainerStore::kMaxWorkRows);
  EXPECT_EQ(s.work[0].kind, "task");
  EXPECT_EQ(s.work[0].name, "app.fetch");
  EXPECT_EQ(s.work[0].runs, 30u);
  EXPECT_EQ(s.work[0].retained_fds, 30);
  EXPECT_EQ(s.work[0].retained_objects, 29);
  EXPECT_DOUBLE_EQ(s.work[0].retained_bytes, -512.5);

  Snapshot snapshot;
  snapshot.containers.work = {s.work[0]};
  const auto families = prometheus_exporter::BuildFamilies(snapshot);
  int found = 0;
  for (const auto& f : families) {
    if (f.name == "leakprobe_work_runs_total") {
      ASSERT_EQ(f.metric.size(), 1u);
      EXPECT_EQ(f.metric[0].counter.value, 30);
      EXPECT_EQ(f.metric[0].label[0].name, "kind");
      EXPECT_EQ(f.metric[0].label[1].value, "app.fetch");
      ++found;
    } else if (f.name == "leakprobe_work_retained_fds") {
      EXPECT_EQ(f.metric[0].gauge.value, 30);
      ++found;
    } else if (f.name == "leakprobe_work_retained_bytes") {
      EXPECT_EQ(f.metric[0].gauge.value, -512.5);
      ++found;
    }
  }
  EXPECT_EQ(found, 3);
  store.SetWork({});
  EXPECT_TRUE(store.Summary().work.empty());
}

TEST(ContainerStoreTest, OneWorkRowIsWrittenInPlaceOrAppended) {
  ContainerStore& store = ContainerStore::Instance();
  store.SetWork({});
  store.SetWorkRow(1, {"route", "GET /b", 1, 0, 0, 0});  // past the end: ignored
  EXPECT_TRUE(store.Summary().work.empty());
  store.SetWorkRow(0, {"route", "GET /a", 1, 0, 0, 0});
  store.SetWorkRow(1, {"route", "GET /b", 1, 1, 0, 16.5});
  store.SetWorkRow(0, {"route", "GET /a", 2, 0, 3, 0});  // in place
  ContainerSummary s = store.Summary();
  ASSERT_EQ(s.work.size(), 2u);
  EXPECT_EQ(s.work[0].name, "GET /a");
  EXPECT_EQ(s.work[0].runs, 2u);
  EXPECT_EQ(s.work[0].retained_objects, 3);
  EXPECT_EQ(s.work[1].name, "GET /b");
  EXPECT_EQ(s.work[1].retained_fds, 1);
  EXPECT_DOUBLE_EQ(s.work[1].retained_bytes, 16.5);
  // Up to the cap, then ignored.
  for (std::size_t i = 2; i < ContainerStore::kMaxWorkRows + 2; ++i) {
    store.SetWorkRow(i, {"route", "r", 1, 0, 0, 0});
  }
  EXPECT_EQ(store.Summary().work.size(), ContainerStore::kMaxWorkRows);
  store.SetWork({});
}

TEST(ContainerStoreTest, WorkCountsChangeAWrittenRowAndKeepItsName) {
  ContainerStore& store = ContainerStore::Instance();
  store.SetWork({});
  store.SetWorkCounts(0, 5, 1, 1, 1);  // not written yet: ignored
  EXPECT_TRUE(store.Summary().work.empty());
  store.SetWorkRow(0, {"task", "app.fetch", 1, 0, 0, 0});
  store.SetWorkCounts(0, 9, 4, -2, 64.5);
  store.SetWorkCounts(1, 3, 3, 3, 3);  // past the end: ignored, no row appended
  ContainerSummary s = store.Summary();
  ASSERT_EQ(s.work.size(), 1u);
  EXPECT_EQ(s.work[0].kind, "task");
  EXPECT_EQ(s.work[0].name, "app.fetch");
  EXPECT_EQ(s.work[0].runs, 9u);
  EXPECT_EQ(s.work[0].retained_fds, 4);
  EXPECT_EQ(s.work[0].retained_objects, -2);
  EXPECT_DOUBLE_EQ(s.work[0].retained_bytes, 64.5);
  store.SetWork({});
}

// A reader concurrent with a writer sees either the old or the new table,
// never a mix: every row of one write carries the same size.
TEST(ContainerStoreTest, ReadersNeverSeeATornTable) {
  ContainerStore& store = ContainerStore::Instance();
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (std::uint64_t i = 1; !stop.load(); ++i) {
      std::vector<ContainerSize> rows(8, {"n", "dict", i, static_cast<std::int64_t>(i)});
      store.SetContainers(rows, 8);
    }
  });
  int consistent = 0;
  // Until 2000 non-empty reads (the writer thread may start late).
  for (int i = 0; i < 10000000 && consistent < 2000; ++i) {
    const ContainerSummary s = store.Summary();
    if (s.containers.empty()) continue;
    for (const ContainerSize& c : s.containers) {
      ASSERT_EQ(c.size, s.containers[0].size);
      ASSERT_EQ(c.maxsize, static_cast<std::int64_t>(c.size));
    }
    ++consistent;
  }
  stop = true;
  writer.join();
  EXPECT_EQ(consistent, 2000);
  store.SetContainers({}, 0);
}

TEST(ContainerStoreTest, FamiliesHaveBoundedLabelsAndMaxsizeOnlyWhenBounded) {
  Snapshot snapshot;
  snapshot.containers.containers = {{"app:CACHE", "dict", 42, -1},
                                    {"app:get", "lru_cache", 7, 128}};
  snapshot.containers.watched = 2;
  snapshot.containers.census = {{"dict", 1000, 10}};
  snapshot.containers.census_figures = {2, 5000, 0.003, 0.05};
  const auto families = prometheus_exporter::BuildFamilies(snapshot);
  auto find = [&](const std::string& name) -> const prometheus::MetricFamily* {
    for (const auto& f : families) {
      if (f.name == name) return &f;
    }
    return nullptr;
  };
  const auto* size = find("leakprobe_container_size");
  ASSERT_NE(size, nullptr);
  ASSERT_EQ(size->metric.size(), 2u);
  EXPECT_EQ(size->metric[0].gauge.value, 42);
  EXPECT_EQ(size->metric[0].label[0].name, "name");
  EXPECT_EQ(size->metric[0].label[0].value, "app:CACHE");
  EXPECT_EQ(size->metric[0].label[1].value, "dict");
  const auto* maxsize = find("leakprobe_container_maxsize");
  ASSERT_NE(maxsize, nullptr);
  ASSERT_EQ(maxsize->metric.size(), 1u);
  EXPECT_EQ(maxsize->metric[0].gauge.value, 128);
  const auto* census = find("leakprobe_census_objects");
  ASSERT_NE(census, nullptr);
  ASSERT_EQ(census->metric.size(), 1u);
  EXPECT_EQ(census->metric[0].label[0].value, "dict");
  ASSERT_NE(find("leakprobe_census_runs_total"), nullptr);
  EXPECT_EQ(find("leakprobe_census_runs_total")->metric[0].counter.value, 2);
  EXPECT_EQ(find("leakprobe_containers_watched")->metric[0].gauge.value, 2);
}

TEST(ContainerStoreTest, PoolRowsCarryTheirLimit) {
  ContainerStore& store = ContainerStore::Instance();
  store.SetPools({{"sqlalchemy", "sqlite:///a.db", "checked_out", 3, 5},
                  {"httpcore", "all", "active", 1, -1}});
  const ContainerSummary s = store.Summary();
  ASSERT_EQ(s.pools.size(), 2u);
  EXPECT_EQ(s.pools[0].connections, 3u);
  EXPECT_EQ(s.pools[0].limit, 5);
  EXPECT_EQ(s.pools[1].limit, -1);
  store.SetPools({});
}

TEST(ContainerStoreTest, PoolLimitFamilyHasOneSamplePerPoolWithALimit) {
  Snapshot snapshot;
  snapshot.containers.pools = {{"sqlalchemy", "sqlite:///a.db", "open", 4, 5},
                               {"sqlalchemy", "sqlite:///a.db", "checked_out", 3, 5},
                               {"sqlalchemy", "sqlite:///a.db", "invalidated", 0, 5},
                               {"sqlalchemy", "sqlite:///b.db", "checked_out", 1, -1},
                               {"httpcore", "all", "active", 2, 200},
                               {"httpcore", "all", "idle", 1, 200}};
  const auto families = prometheus_exporter::BuildFamilies(snapshot);
  const prometheus::MetricFamily* limits = nullptr;
  for (const auto& f : families) {
    if (f.name == "leakprobe_pool_connections_limit") limits = &f;
  }
  ASSERT_NE(limits, nullptr);
  EXPECT_EQ(limits->type, prometheus::MetricType::Gauge);
  ASSERT_EQ(limits->metric.size(), 2u);  // b.db has none: no sample
  EXPECT_EQ(limits->metric[0].label.size(), 2u);
  EXPECT_EQ(limits->metric[0].label[0].value, "sqlalchemy");
  EXPECT_EQ(limits->metric[0].label[1].value, "sqlite:///a.db");
  EXPECT_EQ(limits->metric[0].gauge.value, 5);
  EXPECT_EQ(limits->metric[1].label[0].value, "httpcore");
  EXPECT_EQ(limits->metric[1].gauge.value, 200);
}

}  // namespace
}  // namespace leakprobe
