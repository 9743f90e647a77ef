// leakprobe/trend/trend_summary.h — the trend section of the snapshot: one
// verdict per series the process keeps (leakprobe/trend/trend_state.h), with
// its unit, the attribution site the verdict points at and the limit its
// time to exhaustion was measured against, plus the store's own figures.
// Plain values, copied out of the TrendState at one moment.
//
//   const auto& t = leakprobe::TakeSnapshot().trends;
//   if (t) for (const SeriesVerdict& s : t->series) if (s.verdict.suspected) ...
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "leakprobe/trend/series_store.h"
#include "leakprobe/trend/trend_engine.h"

namespace leakprobe::trend {

// The unit of a resource's values: "bytes", "fds", "objects", "entries",
// "threads", "connections".
std::string_view UnitName(Resource resource);

struct SeriesVerdict {
  Resource resource = Resource::kRss;
  std::string key;   // "total", "tcp", "site:<site>", "httpx.Client", ...
  std::string unit;  // UnitName(resource)
  Verdict verdict;   // the engine's (Evaluate) conclusion
  // The attribution site "path:line in function" the verdict points at, or
  // none (rules: docs/trends.md, "Series and verdicts in the process").
  std::optional<std::string> site;
  // The real limit of the resource (RLIMIT_NOFILE, memory.max or RAM, a
  // container's maxsize, a pool's size), +inf when none is known.
  double limit = std::numeric_limits<double>::infinity();
};

struct TrendSummary {
  double interval_seconds = 0;         // the trend interval
  double warmup_seconds = 0;           // warm-up after start
  std::uint64_t samples = 0;           // samples taken since start (or the fork)
  double last_sample_seconds = 0;      // since start, of the latest sample
  double sample_duration_seconds = 0;  // wall time of the latest sample
  // Every series of the store, flagged first, then by resource and key.
  std::vector<SeriesVerdict> series;
  std::size_t series_count = 0;      // series in the store
  std::uint64_t dropped_series = 0;  // series not created: the store's cap
  std::size_t memory_bytes = 0;      // the store's own memory
};

}  // namespace leakprobe::trend
