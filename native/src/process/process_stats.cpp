#include "leakprobe/process/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "leakprobe/runtime/proc_fds.h"

namespace leakprobe {
namespace {

// Debian's abseil is built with its own string_view type.
absl::string_view ToAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

// Reads a small /proc file whole. /proc files report size 0, so read until
// EOF. Returns false on any error.
bool ReadSmallFile(const char* path, std::string* out) {
  std::FILE* f = std::fopen(path, "re");
  if (f == nullptr) return false;
  char buf[4096];
  out->clear();
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  return !failed;
}

}  // namespace

bool ParseProcStat(std::string_view stat, long page_size, long clock_ticks,
                   double boot_time, ProcessStats* out) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields start after the last ')'.
  const std::size_t close = stat.rfind(')');
  if (close == std::string_view::npos || clock_ticks <= 0 || page_size <= 0) {
    return false;
  }
  std::vector<absl::string_view> fields = absl::StrSplit(
      absl::StripAsciiWhitespace(ToAbsl(stat.substr(close + 1))), ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state) of proc(5); field N is fields[N - 3].
  constexpr std::size_t kUtime = 14 - 3, kStime = 15 - 3, kThreads = 20 - 3,
                        kStart = 22 - 3, kVsize = 23 - 3, kRss = 24 - 3;
  if (fields.size() <= kRss) return false;
  std::uint64_t utime = 0, stime = 0, start = 0, vsize = 0;
  std::int64_t threads = 0, rss = 0;
  if (!absl::SimpleAtoi(fields[kUtime], &utime) ||
      !absl::SimpleAtoi(fields[kStime], &stime) ||
      !absl::SimpleAtoi(fields[kThreads], &threads) ||
      !absl::SimpleAtoi(fields[kStart], &start) ||
      !absl::SimpleAtoi(fields[kVsize], &vsize) ||
      !absl::SimpleAtoi(fields[kRss], &rss)) {
    return false;
  }
  const auto ticks = static_cast<double>(clock_ticks);
  out->cpu_seconds = static_cast<double>(utime + stime) / ticks;
  out->threads = threads;
  out->start_time_seconds =
      boot_time >= 0 ? boot_time + static_cast<double>(start) / ticks : 0;
  out->virtual_memory_bytes = static_cast<double>(vsize);
  out->resident_memory_bytes = static_cast<double>(rss) * static_cast<double>(page_size);
  out->ok = true;
  return true;
}

double ParseBootTime(std::string_view proc_stat) {
  for (absl::string_view line : absl::StrSplit(ToAbsl(proc_stat), '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) {
      std::uint64_t value = 0;
      if (absl::SimpleAtoi(line, &value)) return static_cast<double>(value);
    }
  }
  return -1;
}

std::int64_t CountOpenFds() {
  std::vector<int> fds;
  if (!ListOwnFds(&fds)) return -1;
  return static_cast<std::int64_t>(fds.size());
}

ProcessStats ReadProcessStats() {
  ProcessStats stats;
  std::string text;
  // The boot time does not change: /proc/stat (a line per CPU and one of
  // every interrupt's count, which the kernel sums at each read) is read at
  // the first call only, not at every scrape.
  static const double boot_time = [] {
    std::string proc_stat;
    return ReadSmallFile("/proc/stat", &proc_stat) ? ParseBootTime(proc_stat) : -1.0;
  }();
  if (ReadSmallFile("/proc/self/stat", &text)) {
    ParseProcStat(text, sysconf(_SC_PAGESIZE), sysconf(_SC_CLK_TCK), boot_time, &stats);
  }
  stats.open_fds = CountOpenFds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    stats.max_fds = static_cast<std::int64_t>(limit.rlim_cur);
  }
  return stats;
}

}  // namespace leakprobe
