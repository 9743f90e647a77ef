// leakprobe/heap/heap_summary.h — the heap section of the snapshot: plain
// values, copied out of HeapTracker (leakprobe/heap/heap_tracker.h) at one
// moment; what the exporter and the API read.
//
//   HeapSummary s = HeapTracker::Instance().Summary(10);
//   for (const HeapSite& site : s.top_sites) use(site.site, site.live_bytes);
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "leakprobe/stacks/stack_stats.h"

namespace leakprobe {

struct HeapSite {
  std::string site;  // "path:line in function"
  double live_bytes = 0;
  double live_count = 0;
};

struct HeapSummary {
  bool enabled = false;
  std::uint64_t sample_bytes = 0;
  double live_bytes = 0;       // estimate
  double allocated_bytes = 0;  // estimate, since start
  double freed_bytes = 0;      // estimate, since start
  double small_live_bytes =
      0;  // live blocks of pymalloc's sizes (<= 512 bytes), estimate
  std::uint64_t samples = 0;
  std::uint64_t live_blocks = 0;  // sampled blocks alive now
  std::uint64_t dropped_samples = 0;
  std::uint64_t own_thread_samples = 0;  // on leakprobe's own threads, not recorded
  std::uint64_t stack_overflows =
      0;                            // stack_table.frames_full + stacks_full + unresolved
  StackTableStats stack_table;      // the shared stack table's indexes
  std::size_t memory_bytes = 0;     // the tracker's own tables
  std::vector<HeapSite> top_sites;  // by live bytes, descending
};

}  // namespace leakprobe
