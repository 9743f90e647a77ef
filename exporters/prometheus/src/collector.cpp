#include "leakprobe/prometheus/collector.h"

#include <unistd.h>

#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "leakprobe/prometheus/peers.h"
#include "leakprobe/trend/series_store.h"
#include "leakprobe/trend/trend_summary.h"

namespace leakprobe::prometheus_exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddSample(MetricFamily* family, double value,
               std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (family->type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family->metric.push_back(std::move(metric));
}

MetricFamily Single(std::string name, std::string help, MetricType type, double value) {
  MetricFamily family = Family(std::move(name), std::move(help), type);
  AddSample(&family, value);
  return family;
}

void AddProcessFamilies(const ProcessStats& p, std::vector<MetricFamily>* out) {
  if (p.ok) {
    out->push_back(Single("process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.",
                          MetricType::Counter, p.cpu_seconds));
    out->push_back(Single("process_resident_memory_bytes",
                          "Resident memory size in bytes.", MetricType::Gauge,
                          p.resident_memory_bytes));
    out->push_back(Single("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                          MetricType::Gauge, p.virtual_memory_bytes));
    out->push_back(Single("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.",
                          MetricType::Gauge, p.start_time_seconds));
    out->push_back(Single("process_threads", "Number of OS threads in the process.",
                          MetricType::Gauge, static_cast<double>(p.threads)));
  }
  if (p.open_fds >= 0) {
    out->push_back(Single("process_open_fds", "Number of open file descriptors.",
                          MetricType::Gauge, static_cast<double>(p.open_fds)));
  }
  if (p.max_fds >= 0) {
    out->push_back(Single("process_max_fds", "Maximum number of open file descriptors.",
                          MetricType::Gauge, static_cast<double>(p.max_fds)));
  }
}

void AddGcFamilies(const GcSnapshot& gc, std::vector<MetricFamily>* out) {
  if (gc.generations.empty()) return;
  MetricFamily collections =
      Family("python_gc_collections_total",
             "Number of times this generation was collected.", MetricType::Counter);
  MetricFamily collected = Family("python_gc_objects_collected_total",
                                  "Objects collected during gc.", MetricType::Counter);
  MetricFamily uncollectable =
      Family("python_gc_objects_uncollectable_total",
             "Uncollectable objects found during gc.", MetricType::Counter);
  for (std::size_t i = 0; i < gc.generations.size(); ++i) {
    const std::vector<ClientMetric::Label> labels = {{"generation", std::to_string(i)}};
    const GcGeneration& g = gc.generations[i];
    AddSample(&collections, static_cast<double>(g.collections), labels);
    AddSample(&collected, static_cast<double>(g.collected), labels);
    AddSample(&uncollectable, static_cast<double>(g.uncollectable), labels);
  }
  out->push_back(std::move(collections));
  out->push_back(std::move(collected));
  out->push_back(std::move(uncollectable));
}

void AddHeapFamilies(const HeapSummary& heap, std::vector<MetricFamily>* out) {
  out->push_back(Single("leakprobe_heap_live_bytes",
                        "Estimated bytes of live Python heap blocks (sampled).",
                        MetricType::Gauge, heap.live_bytes));
  out->push_back(
      Single("leakprobe_heap_allocated_bytes_total",
             "Estimated bytes allocated on the Python heap since tracking began.",
             MetricType::Counter, heap.allocated_bytes));
  out->push_back(Single("leakprobe_heap_freed_bytes_total",
                        "Estimated bytes freed on the Python heap since tracking began.",
                        MetricType::Counter, heap.freed_bytes));
  out->push_back(Single("leakprobe_heap_samples_total", "Allocations sampled.",
                        MetricType::Counter, static_cast<double>(heap.samples)));
  out->push_back(Single("leakprobe_heap_sampled_blocks",
                        "Sampled heap blocks alive now (the tracker's table size).",
                        MetricType::Gauge, static_cast<double>(heap.live_blocks)));
  out->push_back(Single("leakprobe_heap_dropped_samples_total",
                        "Samples dropped because the sampled-block table was full.",
                        MetricType::Counter, static_cast<double>(heap.dropped_samples)));
  out->push_back(Single("leakprobe_stack_table_overflows_total",
                        "Stacks recorded as '[stack table full]' because the stack "
                        "table was full.",
                        MetricType::Counter, static_cast<double>(heap.stack_overflows)));
  out->push_back(Single("leakprobe_heap_tracker_memory_bytes",
                        "Memory held by the heap tracker's own tables.",
                        MetricType::Gauge, static_cast<double>(heap.memory_bytes)));
  out->push_back(Single("leakprobe_heap_sample_interval_bytes",
                        "Mean number of bytes allocated between two samples.",
                        MetricType::Gauge, static_cast<double>(heap.sample_bytes)));
  MetricFamily bytes = Family("leakprobe_heap_site_live_bytes",
                              "Estimated live heap bytes by allocation site (top sites).",
                              MetricType::Gauge);
  MetricFamily blocks = Family(
      "leakprobe_heap_site_live_blocks",
      "Estimated live heap blocks by allocation site (top sites).", MetricType::Gauge);
  for (const HeapSite& site : heap.top_sites) {
    AddSample(&bytes, site.live_bytes, {{"site", site.site}});
    AddSample(&blocks, site.live_count, {{"site", site.site}});
  }
  out->push_back(std::move(bytes));
  out->push_back(std::move(blocks));
}

// Native memory (leakprobe/malloc/) and the RSS split into components.
void AddNativeFamilies(const NativeSummary& native,
                       const std::optional<MemoryComponents>& memory,
                       std::vector<MetricFamily>* out) {
  if (memory) {
    MetricFamily components =
        Family("leakprobe_memory_bytes",
               "Resident memory split into components: python_heap, python_arena_free, "
               "native_heap, mmap, and other (RSS minus the rest).",
               MetricType::Gauge);
    for (const auto& [name, value] :
         {std::pair<const char*, double>{"python_heap", memory->python_heap},
          {"python_arena_free", memory->python_arena_free},
          {"native_heap", memory->native_heap},
          {"mmap", memory->mmap},
          {"other", memory->other}}) {
      AddSample(&components, value, {{"component", name}});
    }
    out->push_back(std::move(components));
  }
  out->push_back(Single("leakprobe_native_samples_total",
                        "Native (malloc-family) allocations sampled.",
                        MetricType::Counter, static_cast<double>(native.samples)));
  out->push_back(
      Single("leakprobe_native_dropped_samples_total",
             "Native samples and mappings not recorded (a table full, or out of "
             "memory).",
             MetricType::Counter,
             static_cast<double>(native.dropped_samples + native.mmap_dropped +
                                 native.stacks_full)));
  out->push_back(
      Single("leakprobe_native_interpreter_samples_total",
             "Native sample points that fell in the interpreter's own allocations "
             "(the Python heap counts them).",
             MetricType::Counter, static_cast<double>(native.interpreter_samples)));
  out->push_back(Single("leakprobe_native_tracker_memory_bytes",
                        "Memory held by the native heap tracker's own tables.",
                        MetricType::Gauge, static_cast<double>(native.memory_bytes)));
  out->push_back(Single("leakprobe_native_sample_interval_bytes",
                        "Mean bytes between two native samples.", MetricType::Gauge,
                        static_cast<double>(native.sample_bytes)));
  MetricFamily bytes =
      Family("leakprobe_native_site_live_bytes",
             "Estimated live native memory (malloc family and anonymous mappings) by "
             "allocation site (top sites).",
             MetricType::Gauge);
  for (const NativeSite& site : native.top_sites) {
    AddSample(&bytes, site.live_bytes, {{"site", site.site}});
  }
  out->push_back(std::move(bytes));
}

void AddFdFamilies(const FdSummary& fd, std::vector<MetricFamily>* out) {
  MetricFamily open = Family("leakprobe_open_fds",
                             "Open file descriptors leakprobe has a record of, by kind.",
                             MetricType::Gauge);
  MetricFamily opened =
      Family("leakprobe_fds_opened_total",
             "File descriptors created (or found by reconciliation), by kind.",
             MetricType::Counter);
  MetricFamily closed =
      Family("leakprobe_fds_closed_total",
             "File descriptors closed (or found gone), by kind.", MetricType::Counter);
  // Every kind, even at 0: dashboards get a series per kind.
  for (std::size_t k = 0; k < kFdKindCount; ++k) {
    const std::vector<ClientMetric::Label> labels = {
        {"kind", FdKindName(static_cast<FdKind>(k))}};
    AddSample(&open, static_cast<double>(fd.open[k]), labels);
    AddSample(&opened, static_cast<double>(fd.opened[k]), labels);
    AddSample(&closed, static_cast<double>(fd.closed[k]), labels);
  }
  out->push_back(std::move(open));
  out->push_back(std::move(opened));
  out->push_back(std::move(closed));
  MetricFamily sites = Family("leakprobe_fd_site_open_fds",
                              "Open file descriptors by creation site (top sites only).",
                              MetricType::Gauge);
  for (const FdSite& site : fd.top_sites) {
    AddSample(&sites, static_cast<double>(site.open_fds), {{"site", site.site}});
  }
  out->push_back(std::move(sites));
  MetricFamily owned = Family("leakprobe_owner_open_fds",
                              "Open file descriptors held by tracked resource objects, "
                              "by the owner's type and the fd's kind.",
                              MetricType::Gauge);
  for (const FdOwnerCount& owner : fd.owners) {
    // The kinds the type has held: a series stays once it exists.
    for (std::size_t k = 0; k < kFdKindCount; ++k) {
      if ((owner.kinds_seen & (1u << k)) == 0) continue;
      AddSample(&owned, static_cast<double>(owner.open_by_kind[k]),
                {{"owner", owner.owner}, {"kind", FdKindName(static_cast<FdKind>(k))}});
    }
  }
  out->push_back(std::move(owned));
  out->push_back(Single("leakprobe_fd_owner_overflows_total",
                        "Resource objects whose fds could not be given their owner "
                        "(the owner table was full).",
                        MetricType::Counter, static_cast<double>(fd.owner_overflows)));
  out->push_back(Single("leakprobe_unattributed_fds",
                        "Open file descriptors found by reconciliation with "
                        "/proc/self/fd, their creation unseen.",
                        MetricType::Gauge, static_cast<double>(fd.unattributed)));
  MetricFamily tcp = Family("leakprobe_tcp_sockets",
                            "Open TCP sockets by state, as of the last reconciliation.",
                            MetricType::Gauge);
  for (int state = 1; state <= kTcpStateCount; ++state) {
    AddSample(&tcp, static_cast<double>(fd.tcp_states[static_cast<std::size_t>(state)]),
              {{"state", TcpStateName(state)}});
  }
  out->push_back(std::move(tcp));
  out->push_back(Single("leakprobe_fd_dropped_total",
                        "File descriptor creations not recorded: fd number beyond "
                        "the table's capacity.",
                        MetricType::Counter, static_cast<double>(fd.dropped)));
  out->push_back(Single("leakprobe_fd_reconcile_seconds",
                        "Wall time of the last reconciliation with /proc/self/fd.",
                        MetricType::Gauge, fd.reconcile_seconds));
}

void AddObjectFamilies(const ObjectSummary& objects, std::vector<MetricFamily>* out) {
  MetricFamily live =
      Family("leakprobe_objects_live", "Tracked objects alive and not closed, by type.",
             MetricType::Gauge);
  MetricFamily created = Family("leakprobe_objects_created_total",
                                "Tracked objects created, by type.", MetricType::Counter);
  MetricFamily closed = Family("leakprobe_objects_closed_total",
                               "Tracked objects closed, by type.", MetricType::Counter);
  MetricFamily collected =
      Family("leakprobe_objects_collected_while_open_total",
             "Tracked objects garbage-collected without being closed, by type.",
             MetricType::Counter);
  MetricFamily oldest = Family(
      "leakprobe_objects_oldest_age_seconds",
      "Age of the oldest live tracked object, by type (0 when none).", MetricType::Gauge);
  MetricFamily dropped = Family("leakprobe_objects_dropped_total",
                                "Tracked-object creations counted but not recorded: the "
                                "record cap was reached, by type.",
                                MetricType::Counter);
  MetricFamily errors =
      Family("leakprobe_object_tracking_errors_total",
             "Tracked-object creations that could not be recorded (no weak reference, "
             "out of memory) and internal errors of the wrappers, by type.",
             MetricType::Counter);
  MetricFamily sites = Family("leakprobe_objects_site_live",
                              "Live tracked objects by type and creation site (top sites "
                              "per type only).",
                              MetricType::Gauge);
  MetricFamily collected_sites =
      Family("leakprobe_objects_collected_open_site_total",
             "Tracked objects garbage-collected without being closed, by type and "
             "creation site (top sites per type only).",
             MetricType::Counter);
  for (const ObjectTypeSummary& t : objects.types) {
    // The overflow type only once something landed there.
    if (t.name == kOverflowTypeName && t.created == 0 && t.errors == 0) continue;
    const std::vector<ClientMetric::Label> labels = {{"type", t.name}};
    AddSample(&live, static_cast<double>(t.live), labels);
    AddSample(&created, static_cast<double>(t.created), labels);
    AddSample(&closed, static_cast<double>(t.closed), labels);
    AddSample(&collected, static_cast<double>(t.collected_open), labels);
    AddSample(&oldest, t.oldest_age_seconds, labels);
    AddSample(&dropped, static_cast<double>(t.dropped), labels);
    AddSample(&errors, static_cast<double>(t.errors), labels);
    for (const ObjectSite& site : t.top_sites) {
      AddSample(&sites, static_cast<double>(site.live),
                {{"type", t.name}, {"site", site.site}});
    }
    for (const ObjectCollectedSite& site : t.collected_open_sites) {
      AddSample(&collected_sites, static_cast<double>(site.collected_open),
                {{"type", t.name}, {"site", site.site}});
    }
  }
  out->push_back(std::move(live));
  out->push_back(std::move(created));
  out->push_back(std::move(closed));
  out->push_back(std::move(collected));
  out->push_back(std::move(oldest));
  out->push_back(std::move(dropped));
  out->push_back(std::move(errors));
  out->push_back(std::move(sites));
  out->push_back(std::move(collected_sites));
  out->push_back(Single("leakprobe_object_records",
                        "Live records in the tracked-object registry, all types.",
                        MetricType::Gauge, static_cast<double>(objects.records)));
  out->push_back(Single("leakprobe_object_records_limit",
                        "The registry's cap on live records (LEAKPROBE_OBJECT_RECORDS).",
                        MetricType::Gauge, static_cast<double>(objects.max_records)));
  out->push_back(Single("leakprobe_object_type_overflows_total",
                        "Type registrations beyond the type cap, counted under the type "
                        "'[type table full]'.",
                        MetricType::Counter,
                        static_cast<double>(objects.type_overflows)));
  out->push_back(Single("leakprobe_object_registry_memory_bytes",
                        "Memory held by the tracked-object registry's own tables.",
                        MetricType::Gauge, static_cast<double>(objects.memory_bytes)));
}

void AddHookPassFamily(const HookPasses& hooks, std::vector<MetricFamily>* out) {
  MetricFamily passes =
      Family("leakprobe_hook_passes_total",
             "Calls a hook passed through untracked because its thread was already in a "
             "hook, forking, or holding a tracker lock, by hook.",
             MetricType::Counter);
  // Every kind, even at 0: the series exist before the first pass.
  for (std::size_t k = 0; k < kGuardedHookCount; ++k) {
    const auto hook = static_cast<GuardedHook>(k);
    AddSample(&passes, static_cast<double>(hooks.of(hook)),
              {{"hook", GuardedHookName(hook)}});
  }
  out->push_back(std::move(passes));
}

// What each unit of work (a Celery task, an ASGI route) left behind, per
// (kind, name): python/leakprobe/_work.py, docs/metrics.md.
void AddWorkFamilies(const std::vector<WorkUnit>& work, std::vector<MetricFamily>* out) {
  MetricFamily runs = Family("leakprobe_work_runs_total",
                             "Units of work run and measured, by kind (task, route) and "
                             "name; name \"<other>\" counts the names beyond the cap.",
                             MetricType::Counter);
  MetricFamily fds =
      Family("leakprobe_work_retained_fds",
             "Open fds the runs of a unit of work left behind: the sum over "
             "its runs of open fds after minus before.",
             MetricType::Gauge);
  MetricFamily objects = Family("leakprobe_work_retained_objects",
                                "Live tracked objects the runs of a unit of work left "
                                "behind: the sum over its runs of after minus before.",
                                MetricType::Gauge);
  MetricFamily bytes =
      Family("leakprobe_work_retained_bytes",
             "Sampled live Python heap the runs of a unit of work left "
             "behind (an estimate): the sum over its runs of after minus "
             "before.",
             MetricType::Gauge);
  for (const WorkUnit& w : work) {
    const std::vector<ClientMetric::Label> labels = {{"kind", w.kind}, {"name", w.name}};
    AddSample(&runs, static_cast<double>(w.runs), labels);
    AddSample(&fds, static_cast<double>(w.retained_fds), labels);
    AddSample(&objects, static_cast<double>(w.retained_objects), labels);
    AddSample(&bytes, w.retained_bytes, labels);
  }
  out->push_back(std::move(runs));
  out->push_back(std::move(fds));
  out->push_back(std::move(objects));
  out->push_back(std::move(bytes));
}

void AddContainerFamilies(const ContainerSummary& c, std::vector<MetricFamily>* out) {
  MetricFamily size = Family(
      "leakprobe_container_size",
      "Length of a watched or discovered container (len(), or currsize of an lru_cache), "
      "by name and kind, as of the sampler's last pass.",
      MetricType::Gauge);
  MetricFamily maxsize =
      Family("leakprobe_container_maxsize",
             "Bound of a watched or discovered container (maxsize, maxlen), for those "
             "that have one.",
             MetricType::Gauge);
  for (const ContainerSize& row : c.containers) {
    const std::vector<ClientMetric::Label> labels = {{"name", row.name},
                                                     {"kind", row.kind}};
    AddSample(&size, static_cast<double>(row.size), labels);
    if (row.maxsize >= 0) AddSample(&maxsize, static_cast<double>(row.maxsize), labels);
  }
  out->push_back(std::move(size));
  out->push_back(std::move(maxsize));
  MetricFamily pools = Family(
      "leakprobe_pool_connections",
      "Connections of the instrumented pools by state (SQLAlchemy per engine; httpcore "
      "and urllib3 all pools together), as of the sampler's last pass.",
      MetricType::Gauge);
  MetricFamily invalidated =
      Family("leakprobe_pool_connections_invalidated_total",
             "Connections of a SQLAlchemy engine's pool invalidated since start.",
             MetricType::Counter);
  MetricFamily pool_limits =
      Family("leakprobe_pool_connections_limit",
             "Size limit of an instrumented pool: the connections in use (checked_out, "
             "active) at which it runs out, for pools that have one.",
             MetricType::Gauge);
  std::set<std::pair<std::string, std::string>> limited;  // one sample per pool
  for (const PoolConnections& row : c.pools) {
    if (row.limit >= 0 && limited.insert({row.library, row.pool}).second) {
      AddSample(&pool_limits, static_cast<double>(row.limit),
                {{"library", row.library}, {"pool", row.pool}});
    }
    if (row.state == "invalidated") {
      AddSample(&invalidated, static_cast<double>(row.connections),
                {{"library", row.library}, {"pool", row.pool}});
    } else {
      AddSample(&pools, static_cast<double>(row.connections),
                {{"library", row.library}, {"pool", row.pool}, {"state", row.state}});
    }
  }
  out->push_back(std::move(pools));
  out->push_back(std::move(invalidated));
  out->push_back(std::move(pool_limits));
  AddWorkFamilies(c.work, out);
  out->push_back(Single("leakprobe_containers_watched",
                        "Containers watched or discovered now, exported or not.",
                        MetricType::Gauge, static_cast<double>(c.watched)));
  MetricFamily census =
      Family("leakprobe_census_objects",
             "Live gc-tracked objects of a type at the last census (top types).",
             MetricType::Gauge);
  MetricFamily growth =
      Family("leakprobe_census_objects_growth",
             "Live objects of a type at the last census minus at the first (top types).",
             MetricType::Gauge);
  for (const CensusType& row : c.census) {
    AddSample(&census, static_cast<double>(row.objects), {{"type", row.type}});
    AddSample(&growth, static_cast<double>(row.growth), {{"type", row.type}});
  }
  out->push_back(std::move(census));
  out->push_back(std::move(growth));
  const CensusFigures& f = c.census_figures;
  out->push_back(Single("leakprobe_census_runs_total", "Object censuses run.",
                        MetricType::Counter, static_cast<double>(f.runs)));
  out->push_back(Single("leakprobe_census_tracked_objects",
                        "Objects the last census counted (all gc-tracked objects).",
                        MetricType::Gauge, static_cast<double>(f.objects)));
  out->push_back(Single("leakprobe_census_pause_seconds",
                        "Longest time the last census held the GIL in one stretch.",
                        MetricType::Gauge, f.pause_seconds));
  out->push_back(Single("leakprobe_census_duration_seconds",
                        "Wall time of the last census, pauses and gaps included.",
                        MetricType::Gauge, f.duration_seconds));
}

// Verdicts (docs/trends.md): one sample per series of the trend store, so
// the store's series cap bounds these families' cardinality.
void AddTrendFamilies(const trend::TrendSummary& t, std::vector<MetricFamily>* out) {
  MetricFamily suspected =
      Family("leakprobe_leak_suspected",
             "1 when the trend engine suspects a leak in this series (a significant, "
             "large enough growth after warm-up that does not flatten), else 0.",
             MetricType::Gauge);
  // The unit is in the name (Prometheus practice): one family per unit.
  constexpr const char* kUnits[] = {"bytes",   "fds",     "objects",
                                    "entries", "threads", "connections"};
  std::vector<MetricFamily> growth;
  for (const char* unit : kUnits) {
    growth.push_back(Family(std::string("leakprobe_growth_") + unit + "_per_second",
                            std::string("Robust growth rate of the series' per-window "
                                        "minima, in ") +
                                unit + " per second (series past warm-up).",
                            MetricType::Gauge));
  }
  MetricFamily exhaustion =
      Family("leakprobe_time_to_exhaustion_seconds",
             "Seconds until the series reaches its resource's limit at its growth rate "
             "(RLIMIT_NOFILE, memory.max or RAM, a container's maxsize, a pool's size); "
             "only series "
             "growing towards a known limit.",
             MetricType::Gauge);
  for (const trend::SeriesVerdict& s : t.series) {
    const std::vector<ClientMetric::Label> labels = {
        {"resource", std::string(trend::ResourceName(s.resource))}, {"key", s.key}};
    AddSample(&suspected, s.verdict.suspected ? 1 : 0, labels);
    if (s.verdict.reason != trend::Reason::kWarmup) {
      for (std::size_t u = 0; u < std::size(kUnits); ++u) {
        if (s.unit == kUnits[u]) {
          AddSample(&growth[u], s.verdict.slope_per_second, labels);
        }
      }
    }
    if (std::isfinite(s.verdict.time_to_exhaustion_seconds)) {
      AddSample(&exhaustion, s.verdict.time_to_exhaustion_seconds, labels);
    }
  }
  out->push_back(std::move(suspected));
  for (MetricFamily& family : growth) out->push_back(std::move(family));
  out->push_back(std::move(exhaustion));
  out->push_back(Single("leakprobe_trend_series", "Series in the trend store.",
                        MetricType::Gauge, static_cast<double>(t.series_count)));
  out->push_back(Single("leakprobe_trend_dropped_series_total",
                        "Series not recorded because the trend store was full.",
                        MetricType::Counter, static_cast<double>(t.dropped_series)));
  out->push_back(Single("leakprobe_trend_memory_bytes",
                        "Memory held by the trend store's series.", MetricType::Gauge,
                        static_cast<double>(t.memory_bytes)));
  out->push_back(Single("leakprobe_trend_samples_total",
                        "Trend samples taken since start (in a forked child: since the "
                        "fork).",
                        MetricType::Counter, static_cast<double>(t.samples)));
  out->push_back(
      Single("leakprobe_trend_sample_duration_seconds",
             "Wall time of the last trend sample (snapshot, store, evaluation).",
             MetricType::Gauge, t.sample_duration_seconds));
}

}  // namespace

SnapshotCollector::SnapshotCollector(Source source) : source_(std::move(source)) {}

std::vector<MetricFamily> SnapshotCollector::CollectOwn() const {
  if (closed_.load(std::memory_order_acquire)) return {};
  std::vector<MetricFamily> families = BuildFamilies(source_());
  AddProcessLabels(&families, getpid(), ProcessRole());
  return families;
}

void SnapshotCollector::JoinGroup(int group_port,
                                  std::chrono::milliseconds deadline) noexcept {
  deadline_ms_.store(deadline.count(), std::memory_order_relaxed);
  group_port_.store(group_port, std::memory_order_release);
}

std::vector<MetricFamily> SnapshotCollector::Collect() const {
  const int group_port = group_port_.load(std::memory_order_acquire);
  if (group_port <= 0 || closed_.load(std::memory_order_acquire)) return CollectOwn();
  PeerFetch peers =
      FetchPeers(group_port, getpid(),
                 std::chrono::milliseconds(deadline_ms_.load(std::memory_order_relaxed)));
  connect_failed_.fetch_add(static_cast<std::uint64_t>(peers.connect_failed),
                            std::memory_order_relaxed);
  timed_out_.fetch_add(static_cast<std::uint64_t>(peers.timed_out),
                       std::memory_order_relaxed);
  malformed_.fetch_add(static_cast<std::uint64_t>(peers.malformed),
                       std::memory_order_relaxed);
  foreign_.fetch_add(static_cast<std::uint64_t>(peers.foreign),
                     std::memory_order_relaxed);
  conflicts_.fetch_add(static_cast<std::uint64_t>(peers.conflicts),
                       std::memory_order_relaxed);

  std::vector<MetricFamily> group;
  group.push_back(Single("leakprobe_group_processes",
                         "leakprobe processes whose series this exposition carries: the "
                         "one serving it and the peers of its port that answered",
                         MetricType::Gauge, 1.0 + peers.collected));
  MetricFamily failures = Family(
      "leakprobe_group_peer_failures_total",
      "Peers of this port whose series could not be collected at a scrape, by reason",
      MetricType::Counter);
  const std::pair<const char*, const std::atomic<std::uint64_t>*> reasons[] = {
      {"connect", &connect_failed_},
      {"timeout", &timed_out_},
      {"malformed", &malformed_},
      {"foreign_user", &foreign_},
      {"conflict", &conflicts_}};
  for (const auto& [reason, count] : reasons) {
    AddSample(&failures, static_cast<double>(count->load(std::memory_order_relaxed)),
              {{"reason", reason}});
  }
  group.push_back(std::move(failures));
  AddProcessLabels(&group, getpid(), ProcessRole());

  std::vector<MetricFamily> families = CollectOwn();
  MergeFamilies(&families, std::move(group));
  MergeFamilies(&families, std::move(peers.families));
  return families;
}

std::vector<MetricFamily> BuildFamilies(const Snapshot& snapshot) {
  std::vector<MetricFamily> families;
  AddProcessFamilies(snapshot.process, &families);
  AddGcFamilies(snapshot.gc, &families);
  if (snapshot.heap) AddHeapFamilies(*snapshot.heap, &families);
  if (snapshot.native) AddNativeFamilies(*snapshot.native, snapshot.memory, &families);
  if (snapshot.fd) AddFdFamilies(*snapshot.fd, &families);
  if (snapshot.objects) AddObjectFamilies(*snapshot.objects, &families);
  AddHookPassFamily(snapshot.hook_passes, &families);
  AddContainerFamilies(snapshot.containers, &families);
  if (snapshot.trends) AddTrendFamilies(*snapshot.trends, &families);
  if (snapshot.python) {
    MetricFamily info =
        Family("python_info", "Python platform information.", MetricType::Gauge);
    AddSample(&info, 1,
              {{"implementation", snapshot.python->implementation},
               {"major", snapshot.python->major},
               {"minor", snapshot.python->minor},
               {"patchlevel", snapshot.python->patchlevel},
               {"version", snapshot.python->version}});
    families.push_back(std::move(info));
  }
  MetricFamily build =
      Family("leakprobe_build_info", "leakprobe build information; always 1.",
             MetricType::Gauge);
  AddSample(&build, 1, {{"version", snapshot.version ? snapshot.version : ""}});
  families.push_back(std::move(build));
  return families;
}

}  // namespace leakprobe::prometheus_exporter
