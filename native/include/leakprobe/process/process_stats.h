// leakprobe/process/process_stats.h — the process figures every exporter shows
// (resident and virtual memory, fds, CPU time, threads, start time), read
// from /proc at the moment they are asked for.
//
//   leakprobe::ProcessStats s = leakprobe::ReadProcessStats();
//   if (s.ok) use(s.resident_memory_bytes);
//
// The parsing functions take the file contents, so tests feed them text.
// Thread-safety: ReadProcessStats is reentrant; it neither allocates in a
// hook nor takes the GIL, so a scrape thread may call it at any time.
#pragma once

#include <cstdint>
#include <string_view>

namespace leakprobe {

struct ProcessStats {
  bool ok = false;  // false when /proc/self/stat could not be read or parsed
  double resident_memory_bytes = 0;
  double virtual_memory_bytes = 0;
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // since the Unix epoch
  std::int64_t threads = 0;
  std::int64_t open_fds = -1;  // -1 when /proc/self/fd is unreadable
  std::int64_t max_fds = -1;   // soft RLIMIT_NOFILE; -1 when unlimited
};

// Parses the contents of /proc/<pid>/stat into `out` (memory, CPU, threads,
// start time). `boot_time` is the `btime` line of /proc/stat. Returns false,
// leaving `out` untouched, when the text is not a stat line.
bool ParseProcStat(std::string_view stat, long page_size, long clock_ticks,
                   double boot_time, ProcessStats* out);

// Returns the `btime` value of /proc/stat contents, or -1 if absent.
double ParseBootTime(std::string_view proc_stat);

// Counts the open file descriptors of this process.
std::int64_t CountOpenFds();

// Reads everything above for the calling process.
ProcessStats ReadProcessStats();

}  // namespace leakprobe
