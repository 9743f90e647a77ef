// leakprobe/runtime/clock.h — the one monotonic clock of the core, for
// record timestamps and durations.
//
//   const std::int64_t start = MonotonicNs();
//   double seconds = SecondsSince(start);
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

inline double SecondsSince(std::int64_t start_ns) noexcept {
  return static_cast<double>(MonotonicNs() - start_ns) / 1e9;
}

}  // namespace leakprobe
