// leakprobe/trend/series_store.h — bounded time series of every watched
// figure, kept at several resolutions so that 48 hours at the default
// interval fit a fixed memory budget (docs/trends.md states and measures it).
//
//   SeriesStore store(SeriesStore::Limits{});
//   store.Append({Resource::kFd, "tcp"}, now_seconds, 42);
//   std::vector<Point> pts = store.Points({Resource::kFd, "tcp"});
//
// Each level keeps, per bucket, the minimum, maximum and last value of the
// samples it merged; Points() returns the per-bucket minima (the GC-sawtooth
// rule) of the finest level that still covers the series' whole history.
// One level only, closed buckets only: the minimum of more samples is lower
// (noise, GC), so finer recent points after coarser old ones, or a partly
// filled last bucket, would read as growth; a view of one resolution cannot.
// The cost is the open bucket's samples (at most factor^i - 1) missing from
// the end of a coarse view. Past the coarsest level's span, Points() gives
// the coarsest level's buckets (the most recent span).
// Series beyond max_series are not created (counted in dropped_series).
// Thread-safety: a SeriesStore is not synchronized; its owner serializes
// calls (TrendState does, with one mutex that no hook ever takes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "leakprobe/trend/trend_engine.h"

namespace leakprobe::trend {

// The resource a series measures; its name is the report's `resource`.
enum class Resource : std::uint8_t {
  kRss,         // key "total": resident memory, bytes
  kHeap,        // key "total" or a site: sampled live Python heap, bytes
  kFd,          // key a kind ("tcp", "pipe", "file", ... as in the fd
                // metrics) or "total"; attribution series "site:<site>"
                // and "owner:<type>"; open fds
  kObject,      // key a tracked type ("httpx.Client"): live objects; key
                // "<type>:collected_open": collected-while-open total
  kContainer,   // key a watched or discovered name: entries
  kThread,      // key "total": OS threads of the process
  kNativeHeap,  // key "total": sampled live native heap (malloc family), bytes
  kPool,        // key "<library>:<pool>" (as leakprobe_pool_connections'
                // labels): connections in use (SQLAlchemy checked_out,
                // httpcore and urllib3 active)
  kWork,        // key "<kind>:<name>:fds" or "<kind>:<name>:objects": what
                // the runs of a unit of work (a Celery task, a route) left
                // behind, summed over its runs (python/leakprobe/_work.py)
};
inline constexpr std::size_t kResourceCount = 9;
// Arrays are indexed by Resource: a resource added without raising the
// count would index past them (two branches each adding one did).
static_assert(static_cast<std::size_t>(Resource::kWork) + 1 == kResourceCount,
              "kResourceCount must follow the last Resource");
std::string_view ResourceName(Resource resource);  // "rss", "heap", ...

struct SeriesKey {
  Resource resource = Resource::kRss;
  std::string key;
  bool operator==(const SeriesKey&) const = default;
};

class SeriesStore {
 public:
  struct Limits {
    std::size_t max_series = 512;
    std::size_t points_per_level = 256;
    // Samples merged per bucket at each level after the first (level 0
    // keeps every sample): level i merges factor^i samples.
    std::size_t factor = 8;
    std::size_t levels = 4;
  };
  explicit SeriesStore(Limits limits);
  ~SeriesStore();
  SeriesStore(const SeriesStore&) = delete;
  SeriesStore& operator=(const SeriesStore&) = delete;
  SeriesStore(SeriesStore&&) noexcept;
  SeriesStore& operator=(SeriesStore&&) noexcept;

  // Adds one sample. Returns false (and counts it) when the series is new
  // and the store already holds max_series series. t must not decrease
  // within a series (an earlier t, or the same t again, is ignored and
  // counted in out_of_order). A NaN or infinite t or v is ignored and
  // counted in invalid_samples. Returns true when the sample was stored.
  bool Append(const SeriesKey& key, double t, double v);

  // The series' history as per-bucket minima (level 0: the samples
  // themselves), oldest first; empty when unknown.
  std::vector<Point> Points(const SeriesKey& key) const;
  // Every series' key, in creation order.
  std::vector<SeriesKey> Keys() const;

  std::size_t series() const;
  std::uint64_t dropped_series() const;
  std::uint64_t out_of_order() const;
  std::uint64_t invalid_samples() const;
  // Bytes this store holds now (tables and names); bounded by
  // max_series * (names + levels * points_per_level * bucket size).
  std::size_t MemoryBytes() const;
  // Forgets everything (a forked child starts its own history).
  void Clear();

 private:
  struct Series;
  struct Index;
  Series* Find(const SeriesKey& key) const;

  Limits limits_;
  std::vector<std::unique_ptr<Series>> series_;  // creation order
  std::unique_ptr<Index> index_;                 // key -> position in series_
  std::uint64_t dropped_series_ = 0;
  std::uint64_t out_of_order_ = 0;
  std::uint64_t invalid_samples_ = 0;
};

}  // namespace leakprobe::trend
