// leakprobe/stacks/stack_stats.h — the stack table's figures as plain values,
// for snapshots (leakprobe/heap/heap_summary.h) without the table itself.
//
//   StackTableStats s = StackTable::Instance().Stats();
//   if (s.frames_full > 0) warn("stack table full");
//
// Thread-safety: plain values.
#pragma once

#include <cstddef>
#include <cstdint>

namespace leakprobe {

// Sizes and overflows of a StackTable's indexes (plain values).
struct StackTableStats {
  std::size_t frames = 0;            // distinct (file, line, function)
  std::size_t positions = 0;         // raw code positions remembered
  std::size_t stacks = 0;            // including the two reserved ids
  std::uint64_t frames_full = 0;     // a stack had a new frame that did not fit
  std::uint64_t positions_full = 0;  // a position was resolved, not remembered
  std::uint64_t stacks_full = 0;     // a new stack did not fit
  std::uint64_t unresolved = 0;      // the frame source could not resolve a frame
  std::uint64_t out_of_memory = 0;   // an allocation failed: nothing was added
  std::size_t memory_bytes = 0;      // MemoryBytes()
};

}  // namespace leakprobe
