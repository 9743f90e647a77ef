// leakprobe/runtime/clock.h — the one monotonic clock of the core, for
// record timestamps and durations.
//
//   const std::int64_t start = MonotonicNs();
//   double seconds = SecondsSince(start);
//   record.created_ns = CoarseMonotonicNs();  // hot path, tick resolution
//
// Thread-safety: stateless; any thread, async-signal-safe (clock_gettime).
#pragma once

#include <time.h>

#include <cstdint>

namespace leakprobe {

// CLOCK_MONOTONIC in nanoseconds.
inline std::int64_t MonotonicNs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// CLOCK_MONOTONIC_COARSE in nanoseconds: the same clock as MonotonicNs(),
// read without the time-stamp counter, so it lags it by a few milliseconds
// (the last timekeeping tick: up to 6 ms seen with 4 ms ticks) and never
// leads it. For record timestamps on hot paths,
// where an age is reported, not a duration measured (fd records: 2-3x
// cheaper than MonotonicNs() per creation).
inline std::int64_t CoarseMonotonicNs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline double SecondsSince(std::int64_t start_ns) noexcept {
  return static_cast<double>(MonotonicNs() - start_ns) / 1e9;
}

}  // namespace leakprobe
