#include "leakprobe/prometheus/collector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>
#include <vector>

namespace leakprobe::prometheus_exporter {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

Snapshot FakeSnapshot() {
  Snapshot s;
  s.process.ok = true;
  s.process.resident_memory_bytes = 1000;
  s.process.virtual_memory_bytes = 5000;
  s.process.cpu_seconds = 1.5;
  s.process.start_time_seconds = 1.7e9;
  s.process.threads = 4;
  s.process.open_fds = 12;
  s.process.max_fds = 1024;
  s.gc.generations = {{10, 500, 0}, {2, 40, 1}, {1, 7, 0}};
  s.python = PythonInfo{"CPython", "3", "12", "1", "3.12.1"};
  s.version = "9.9.9";
  return s;
}

const MetricFamily* Find(const std::vector<MetricFamily>& families,
                         const std::string& name) {
  auto it = std::find_if(families.begin(), families.end(),
                         [&](const MetricFamily& f) { return f.name == name; });
  return it == families.end() ? nullptr : &*it;
}

TEST(BuildFamiliesTest, ProcessFiguresUseStandardNamesAndTypes) {
  const auto families = BuildFamilies(FakeSnapshot());
  const MetricFamily* cpu = Find(families, "process_cpu_seconds_total");
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->type, MetricType::Counter);
  EXPECT_DOUBLE_EQ(cpu->metric.at(0).counter.value, 1.5);
  const MetricFamily* fds = Find(families, "process_open_fds");
  ASSERT_NE(fds, nullptr);
  EXPECT_EQ(fds->type, MetricType::Gauge);
  EXPECT_DOUBLE_EQ(fds->metric.at(0).gauge.value, 12);
  EXPECT_DOUBLE_EQ(Find(families, "process_max_fds")->metric.at(0).gauge.value, 1024);
  EXPECT_DOUBLE_EQ(
      Find(families, "process_resident_memory_bytes")->metric.at(0).gauge.value, 1000);
}

TEST(BuildFamiliesTest, GcFamiliesHaveOneSamplePerGeneration) {
  const auto families = BuildFamilies(FakeSnapshot());
  const MetricFamily* collected = Find(families, "python_gc_objects_collected_total");
  ASSERT_NE(collected, nullptr);
  ASSERT_EQ(collected->metric.size(), 3u);
  EXPECT_EQ(collected->metric[1].label.at(0).name, "generation");
  EXPECT_EQ(collected->metric[1].label.at(0).value, "1");
  EXPECT_DOUBLE_EQ(collected->metric[1].counter.value, 40);
  EXPECT_DOUBLE_EQ(
      Find(families, "python_gc_objects_uncollectable_total")->metric[1].counter.value,
      1);
  EXPECT_DOUBLE_EQ(Find(families, "python_gc_collections_total")->metric[0].counter.value,
                   10);
}

TEST(BuildFamiliesTest, MissingSourcesOmitTheirFamilies) {
  Snapshot s;  // process unreadable, gc never sampled, no python info
  s.version = "1.0";
  const auto families = BuildFamilies(s);
  EXPECT_EQ(Find(families, "process_cpu_seconds_total"), nullptr);
  EXPECT_EQ(Find(families, "process_open_fds"), nullptr);
  EXPECT_EQ(Find(families, "python_gc_collections_total"), nullptr);
  EXPECT_EQ(Find(families, "python_info"), nullptr);
  const MetricFamily* build = Find(families, "leakprobe_build_info");
  ASSERT_NE(build, nullptr);
  EXPECT_EQ(build->metric.at(0).label.at(0).value, "1.0");
}

TEST(BuildFamiliesTest, FdFamiliesListEveryKindAndTcpStateOnlyWhenTracking) {
  Snapshot s = FakeSnapshot();
  EXPECT_EQ(Find(BuildFamilies(s), "leakprobe_open_fds"), nullptr);
  FdSummary fd;
  fd.open[static_cast<std::size_t>(FdKind::kTcp)] = 3;
  fd.opened[static_cast<std::size_t>(FdKind::kPipe)] = 8;
  fd.closed[static_cast<std::size_t>(FdKind::kPipe)] = 6;
  fd.unattributed = 2;
  fd.tcp_states[8] = 1;  // CLOSE_WAIT
  fd.top_sites = {{"app.py:3 in leak", 5}, {"<unattributed>", 2}};
  fd.reconcile_seconds = 0.004;
  s.fd = fd;
  const auto families = BuildFamilies(s);
  auto value = [&](const char* name, const std::string& label) {
    const MetricFamily* f = Find(families, name);
    EXPECT_NE(f, nullptr) << name;
    if (f == nullptr) return -1.0;
    for (const auto& m : f->metric) {
      if (label.empty() ? m.label.empty()
                        : !m.label.empty() && m.label[0].value == label) {
        return f->type == MetricType::Counter ? m.counter.value : m.gauge.value;
      }
    }
    ADD_FAILURE() << name << "{" << label << "} missing";
    return -1.0;
  };
  EXPECT_EQ(Find(families, "leakprobe_open_fds")->metric.size(), kFdKindCount);
  EXPECT_EQ(value("leakprobe_open_fds", "tcp"), 3);
  EXPECT_EQ(value("leakprobe_open_fds", "memfd"), 0);
  EXPECT_EQ(value("leakprobe_fds_opened_total", "pipe"), 8);
  EXPECT_EQ(value("leakprobe_fds_closed_total", "pipe"), 6);
  EXPECT_EQ(Find(families, "leakprobe_fds_opened_total")->type, MetricType::Counter);
  EXPECT_EQ(value("leakprobe_unattributed_fds", ""), 2);
  EXPECT_EQ(value("leakprobe_fd_site_open_fds", "app.py:3 in leak"), 5);
  EXPECT_EQ(Find(families, "leakprobe_tcp_sockets")->metric.size(), 11u);
  EXPECT_EQ(value("leakprobe_tcp_sockets", "CLOSE_WAIT"), 1);
  EXPECT_EQ(value("leakprobe_tcp_sockets", "TIME_WAIT"), 0);
  EXPECT_EQ(value("leakprobe_fd_reconcile_seconds", ""), 0.004);
  EXPECT_EQ(value("leakprobe_fd_dropped_total", ""), 0);
}

TEST(BuildFamiliesTest, HookPassesAreOneCounterWithEveryHookLabelled) {
  Snapshot s = FakeSnapshot();
  s.hook_passes.passes[static_cast<std::size_t>(GuardedHook::kHeapAlloc)] = 7;
  s.hook_passes.passes[static_cast<std::size_t>(GuardedHook::kHeapFree)] = 3;
  s.hook_passes.passes[static_cast<std::size_t>(GuardedHook::kFd)] = 11;
  s.hook_passes.passes[static_cast<std::size_t>(GuardedHook::kNativeAlloc)] = 5;
  s.hook_passes.passes[static_cast<std::size_t>(GuardedHook::kNativeFree)] = 2;
  const auto families = BuildFamilies(s);
  const MetricFamily* passes = Find(families, "leakprobe_hook_passes_total");
  ASSERT_NE(passes, nullptr);
  EXPECT_EQ(passes->type, MetricType::Counter);
  std::vector<std::pair<std::string, double>> got;
  for (const auto& m : passes->metric) {
    ASSERT_EQ(m.label.size(), 1u);
    EXPECT_EQ(m.label[0].name, "hook");
    got.emplace_back(m.label[0].value, m.counter.value);
  }
  const std::vector<std::pair<std::string, double>> want = {{"heap_alloc", 7},
                                                            {"heap_free", 3},
                                                            {"fd", 11},
                                                            {"native_alloc", 5},
                                                            {"native_free", 2}};
  EXPECT_EQ(got, want);
}

TEST(BuildFamiliesTest, VerdictFamiliesOnePerSeriesUnitInTheName) {
  EXPECT_EQ(Find(BuildFamilies(FakeSnapshot()), "leakprobe_leak_suspected"), nullptr);
  Snapshot s = FakeSnapshot();
  trend::TrendSummary t;
  trend::SeriesVerdict tcp;
  tcp.resource = trend::Resource::kFd;
  tcp.key = "tcp";
  tcp.unit = "fds";
  tcp.verdict.suspected = true;
  tcp.verdict.reason = trend::Reason::kGrowing;
  tcp.verdict.slope_per_second = 0.25;
  tcp.verdict.time_to_exhaustion_seconds = 4000;
  trend::SeriesVerdict heap;
  heap.resource = trend::Resource::kHeap;
  heap.key = "/app/a.py:1 in f";
  heap.unit = "bytes";
  heap.verdict.reason = trend::Reason::kFlat;
  heap.verdict.slope_per_second = -2;
  trend::SeriesVerdict warming;
  warming.resource = trend::Resource::kObject;
  warming.key = "app.Client";
  warming.unit = "objects";  // reason kWarmup: no rate yet
  t.series = {tcp, heap, warming};
  t.series_count = 3;
  t.dropped_series = 2;
  t.memory_bytes = 4096;
  t.samples = 17;
  s.trends = t;
  const auto families = BuildFamilies(s);
  const MetricFamily* suspected = Find(families, "leakprobe_leak_suspected");
  ASSERT_NE(suspected, nullptr);
  EXPECT_EQ(suspected->type, MetricType::Gauge);
  ASSERT_EQ(suspected->metric.size(), 3u);
  EXPECT_EQ(suspected->metric[0].label.at(0).name, "resource");
  EXPECT_EQ(suspected->metric[0].label.at(0).value, "fd");
  EXPECT_EQ(suspected->metric[0].label.at(1).name, "key");
  EXPECT_EQ(suspected->metric[0].label.at(1).value, "tcp");
  EXPECT_EQ(suspected->metric[0].gauge.value, 1);
  EXPECT_EQ(suspected->metric[1].gauge.value, 0);
  EXPECT_EQ(suspected->metric[2].gauge.value, 0);
  const MetricFamily* fds = Find(families, "leakprobe_growth_fds_per_second");
  ASSERT_NE(fds, nullptr);
  ASSERT_EQ(fds->metric.size(), 1u);
  EXPECT_DOUBLE_EQ(fds->metric[0].gauge.value, 0.25);
  const MetricFamily* bytes = Find(families, "leakprobe_growth_bytes_per_second");
  ASSERT_EQ(bytes->metric.size(), 1u);
  EXPECT_EQ(bytes->metric[0].label.at(1).value, "/app/a.py:1 in f");
  EXPECT_DOUBLE_EQ(bytes->metric[0].gauge.value, -2);
  EXPECT_TRUE(Find(families, "leakprobe_growth_objects_per_second")->metric.empty());
  const MetricFamily* tte = Find(families, "leakprobe_time_to_exhaustion_seconds");
  ASSERT_EQ(tte->metric.size(), 1u);  // only the finite one
  EXPECT_DOUBLE_EQ(tte->metric[0].gauge.value, 4000);
  EXPECT_DOUBLE_EQ(Find(families, "leakprobe_trend_series")->metric.at(0).gauge.value, 3);
  const MetricFamily* dropped = Find(families, "leakprobe_trend_dropped_series_total");
  EXPECT_EQ(dropped->type, MetricType::Counter);
  EXPECT_DOUBLE_EQ(dropped->metric.at(0).counter.value, 2);
  EXPECT_DOUBLE_EQ(
      Find(families, "leakprobe_trend_memory_bytes")->metric.at(0).gauge.value, 4096);
  EXPECT_DOUBLE_EQ(
      Find(families, "leakprobe_trend_samples_total")->metric.at(0).counter.value, 17);
}

TEST(SnapshotCollectorTest, StopsCallingTheSourceWhenClosed) {
  std::atomic<int> calls{0};
  SnapshotCollector collector([&] {
    ++calls;
    return FakeSnapshot();
  });
  EXPECT_FALSE(collector.Collect().empty());
  EXPECT_FALSE(collector.Collect().empty());
  collector.Close();
  EXPECT_TRUE(collector.Collect().empty());
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace leakprobe::prometheus_exporter
