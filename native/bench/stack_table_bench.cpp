// Memory of the stack table after a million distinct code objects or code
// positions, for docs/heap.md and docs/benchmarks.md. A benchmark, not a
// test: built with the tests, never run by ctest (the bound itself is
// asserted by StackTableBoundsTest).
//
//   build/native/leakprobe_stack_table_bench [count=1000000]
//
// Each scenario runs in a forked child, so that one scenario's freed memory
// does not hide the next one's growth. It prints the table's own estimate
// (MemoryBytes) beside the growth of the child's resident set, and the mean
// cost of an Intern. Frames come from the fake source of the native tests:
// code object N resolves to "/app/fileN.py" (or "/lib/fileN.py") in "fN".
//   codes      `count` distinct code objects, each in a new two-frame stack
//   positions  `count` distinct positions on one line (code compiled again
//              and again: new code objects, same text)
// Both at the process-wide table's limits, then with limits above `count`
// (what the table would hold without caps).
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fake_frames.h"
#include "leakprobe/stacks/stack_table.h"

namespace {

using leakprobe::StackTable;
using leakprobe::StackTableLimits;
using leakprobe::StackTableStats;
using leakprobe::testing::FakeFrame;

double Now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

long RssBytes() {
  long pages = 0;
  long resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

void Run(const char* name, const StackTableLimits& limits, bool positions, int count) {
  const long rss_before = RssBytes();
  auto* table = new StackTable(limits);
  table->SetSource(leakprobe::testing::FakeSource());
  const LeakprobeRawFrame outer = FakeFrame(1, 4);
  const double start = Now();
  for (int i = 0; i < count; ++i) {
    if (positions) {
      LeakprobeRawFrame frame = outer;
      frame.filename = reinterpret_cast<const void*>(std::uintptr_t{1} + i);
      table->Intern(&frame, 1);
    } else {
      const LeakprobeRawFrame frames[] = {FakeFrame(2 + i, 2), outer};
      table->Intern(frames, 2);
    }
  }
  const double seconds = Now() - start;
  const StackTableStats s = table->Stats();
  const long rss_growth = RssBytes() - rss_before;
  std::printf(
      "%-23s frames %7zu positions %8zu stacks %7zu | full: frames %7llu positions "
      "%8llu stacks %7llu | MemoryBytes %6.1f MiB  RSS growth %6.1f MiB | %5.2f "
      "us/Intern\n",
      name, s.frames, s.positions, s.stacks,
      static_cast<unsigned long long>(s.frames_full),
      static_cast<unsigned long long>(s.positions_full),
      static_cast<unsigned long long>(s.stacks_full),
      static_cast<double>(s.memory_bytes) / (1 << 20),
      static_cast<double>(rss_growth) / (1 << 20), seconds * 1e6 / count);
  std::fflush(stdout);
}

void RunForked(const char* name, const StackTableLimits& limits, bool positions,
               int count) {
  std::fflush(stdout);  // or the child prints our buffer again
  const pid_t pid = fork();
  if (pid == 0) {
    Run(name, limits, positions, count);
    _exit(0);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s: the child failed\n", name);
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  if (count <= 0) {
    std::fprintf(stderr, "usage: %s [count > 0], not %s\n", argv[0], argv[1]);
    return 2;
  }
  std::printf("%d distinct code objects / positions\n", count);
  const StackTableLimits capped;  // the process-wide table's
  StackTableLimits uncapped;
  uncapped.frames = uncapped.positions = uncapped.stacks =
      static_cast<std::size_t>(count) + 16;
  uncapped.name_bytes = std::size_t{1} << 40;
  RunForked("codes, default caps", capped, false, count);
  RunForked("positions, default caps", capped, true, count);
  RunForked("codes, no caps", uncapped, false, count);
  RunForked("positions, no caps", uncapped, true, count);
  return 0;
}
