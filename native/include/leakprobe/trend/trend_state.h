// leakprobe/trend/trend_state.h — the process-wide trend state: every trend
// interval the sampler thread calls Sample(), which takes a snapshot
// (TakeSnapshot(), without the GIL), appends every watched figure to the
// SeriesStore, evaluates every series with the trend engine, picks each
// verdict's attribution site and limit, and caches a TrendSummary that the
// snapshot (Snapshot::trends), the exporter and leakprobe.verdicts() read.
//
//   TrendConfig config;
//   config.interval_seconds = 10;
//   TrendState::Instance().Start(config);
//   TrendState::Instance().Sample();                 // sampler thread
//   std::optional<TrendSummary> s = TrendState::Instance().Summary();
//
// Series keys, units, site and limit rules: docs/trends.md, "Series and
// verdicts in the process".
//
// Thread-safety: every member may be called from any thread, without the
// GIL. Two locks that no hook ever takes: `sample_mu_` serializes samples
// (held while a sample appends and evaluates), `mu_` guards the store and the
// cached summary (held briefly; taken under sample_mu_). Both are held across
// fork (ForkStage::kTrends, before every lock TakeSnapshot takes); the child
// forgets the history (its verdicts describe the child) on its next use.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/snapshot.h"
#include "leakprobe/trend/series_store.h"
#include "leakprobe/trend/trend_engine.h"
#include "leakprobe/trend/trend_summary.h"

namespace leakprobe::trend {

// The minimum effect a resource's series must show to be suspected (see
// TrendParams::min_growth and min_relative_growth).
struct ResourceParams {
  double min_growth = 0;           // base units over the evaluated window
  double min_relative_growth = 0;  // fraction of the window's starting level
  double sampling_unit = 0;        // a sample's worth, for sampled estimates
};
using ResourceParamTable = std::array<ResourceParams, kResourceCount>;

// The defaults: fds, objects, threads and pool connections 3; heap 8
// sample intervals (`heap_sample_bytes` each) and 5 %; rss 16 MiB and 5 %;
// containers 20 entries (docs/trends.md says why). The heap and the native
// heap are sampled estimates: their sampling unit is their mean interval.
ResourceParamTable DefaultResourceParams(std::uint64_t heap_sample_bytes,
                                         std::uint64_t native_sample_bytes);

// Site series (heap/<site>, fd/site:<site>) ever created per resource: the
// top sites change over a long run, and each change would add a series the
// store keeps for good, crowding out the rest under its cap.
inline constexpr std::size_t kMaxSiteSeries = 64;

// Pool series (pool/<library>:<pool>) ever created: the adapters cap their
// pool labels (20 per library, then "other"), this caps what they can cost
// the store; samples of pools beyond it are counted in dropped_series.
inline constexpr std::size_t kMaxPoolSeries = 32;

struct TrendConfig {
  double interval_seconds = 10;
  double warmup_seconds = 300;
  ResourceParamTable params =
      DefaultResourceParams(std::uint64_t{128} * 1024, std::uint64_t{256} * 1024);
  // N of the heap and fd top-site lists: a known site absent from a list
  // shorter than N holds nothing now (0 is appended); absent from a full
  // list, its value is unknown (nothing is appended).
  std::size_t heap_top_sites = 10;
  std::size_t fd_top_sites = 10;
  SeriesStore::Limits limits{};
  // The memory limit of rss and heap series, bytes; 0: read it at Start()
  // (MemoryLimitBytes()).
  double memory_limit_bytes = 0;
};

// The engine's parameters for `resource`'s series under `config`: the
// resource's minimum effect; warm-up as configured; 12 points and a window
// of max(10 s, 12 intervals, 600 s x (interval / 10 s)^2), at most the
// engine's default 600 s (600 s at the 10 s default interval, 10 s at 0.5 s).
TrendParams ParamsFor(const TrendConfig& config, Resource resource);

// The cgroup v2 memory.max of this process's cgroup if set, else MemTotal;
// +inf when neither can be read.
double MemoryLimitBytes();
// Parsers (tests feed them text): memory.max's contents ("max" or bytes)
// and /proc/meminfo's; nullopt when absent or unlimited.
std::optional<double> ParseCgroupMemoryMax(std::string_view text);
std::optional<double> ParseMemTotal(std::string_view meminfo);
// The cgroup v2 path ("/user.slice/...") of /proc/self/cgroup's contents.
std::optional<std::string> ParseCgroupV2Path(std::string_view proc_self_cgroup);

class TrendState {
 public:
  // The process's state (registers its fork stage on first use).
  static TrendState& Instance();
  TrendState();  // a private one, for tests (no fork stage)
  TrendState(const TrendState&) = delete;
  TrendState& operator=(const TrendState&) = delete;
  ~TrendState();

  // Starts a new history (the old one is forgotten). The time origin of the
  // series is now.
  void Start(const TrendConfig& config);
  // Forgets everything; Summary() is empty until the next Start().
  void Stop();
  bool running() const;

  // Takes TakeSnapshot() and records it; false when not running.
  bool Sample();
  // Records `snapshot`, taken at `now_ns` (MonotonicNs() clock); for tests.
  bool Sample(const Snapshot& snapshot, std::int64_t now_ns);

  // The verdicts of the latest sample; empty when not running. Before the
  // first sample: no series.
  std::optional<TrendSummary> Summary() const;
  // A series' history as (seconds since start, per-bucket minimum).
  std::vector<Point> Points(Resource resource, const std::string& key) const;

  // fork(): the handlers of ForkStage::kTrends.
  void PrepareFork() ABSL_NO_THREAD_SAFETY_ANALYSIS;
  void ParentAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS;
  void ChildAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS;

 private:
  void ClearIfForkedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex sample_mu_;
  mutable Mutex mu_ ABSL_ACQUIRED_AFTER(sample_mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool forked_ ABSL_GUARDED_BY(mu_) = false;           // the child forgets on next use
  std::uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Start/Stop/fork
  TrendConfig config_ ABSL_GUARDED_BY(mu_);
  std::int64_t origin_ns_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<SeriesStore> store_ ABSL_GUARDED_BY(mu_);
  std::optional<TrendSummary> summary_ ABSL_GUARDED_BY(mu_);
  // Samples of pool series not created (kMaxPoolSeries), since Start().
  std::uint64_t dropped_pool_samples_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace leakprobe::trend
