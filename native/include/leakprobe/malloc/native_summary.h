// leakprobe/malloc/native_summary.h — the native-memory section of the
// snapshot: plain values copied out of NativeHeap (leakprobe/malloc/native_heap.h)
// at one moment; what the exporter and the API read.
//
//   NativeSummary s = NativeHeap::Instance().Summary(10);
//   for (const NativeSite& site : s.top_sites) use(site.site, site.live_bytes);
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace leakprobe {

struct NativeSite {
  // The innermost application Python line that led to the allocation
  // ("path:line in function"), or, for a thread with no Python frames, the
  // innermost native frame outside the C/C++ runtime ("symbol+0x12 (object)").
  std::string site;
  double live_bytes = 0;
  double live_count = 0;
};

struct NativeSummary {
  bool enabled = false;
  std::uint64_t sample_bytes = 0;
  double live_bytes = 0;       // malloc family, estimate
  double allocated_bytes = 0;  // estimate, since start
  double freed_bytes = 0;      // estimate, since start
  std::uint64_t samples = 0;
  std::uint64_t live_blocks = 0;      // sampled blocks alive now
  std::uint64_t dropped_samples = 0;  // table full or out of memory
  // Sample points that fell in an allocation the interpreter made for its
  // own allocators (PyMem_Raw*, pymalloc's large blocks): the Python heap
  // counts those, so they are not counted twice.
  std::uint64_t interpreter_samples = 0;
  std::uint64_t own_thread_samples = 0;  // on leakprobe's own threads, not recorded
  std::uint64_t stacks_full = 0;         // samples whose native stack did not fit
  std::uint64_t mmap_bytes = 0;          // anonymous mappings alive now, exact
  std::uint64_t mmap_regions = 0;        // their number
  std::uint64_t mmap_dropped = 0;        // mappings not recorded (table full, memory)
  std::size_t memory_bytes = 0;          // the tracker's own tables
  std::vector<NativeSite> top_sites;     // by live bytes, descending (mmap included)
};

// RSS split into components (leakprobe_memory_bytes{component}); filled by
// TakeSnapshot from the heap, native heap, arena and process figures. A
// component whose tracker is off is 0 and its memory falls into `other`.
struct MemoryComponents {
  double rss = 0;
  double python_heap = 0;        // sampled live PyMem blocks (estimate)
  double python_arena_free = 0;  // pymalloc arena bytes minus live small blocks
  double native_heap = 0;        // sampled live malloc-family blocks (estimate)
  double mmap = 0;   // anonymous mappings made outside the interpreter (exact)
  double other = 0;  // rss minus the above, at least 0
};

}  // namespace leakprobe
