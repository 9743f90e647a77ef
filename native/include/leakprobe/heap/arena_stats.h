// leakprobe/heap/arena_stats.h — bytes of pymalloc arenas mapped now, counted
// exactly by the arena allocator wrapper the bindings install
// (PyObject_SetArenaAllocator); read by the snapshot for the
// python_arena_free memory component.
//
//   AddArenaBytes(+size);  // the wrapper, after the real alloc
//   ArenaBytes();          // cold path
//
// Thread-safety: relaxed atomics (pymalloc calls the wrapper under the GIL).
#pragma once

#include <cstdint>

namespace leakprobe {

void AddArenaBytes(std::int64_t delta) noexcept;
// Arena bytes mapped now; 0 when no wrapper is installed.
std::uint64_t ArenaBytes() noexcept;
// A wrapper is installed (the figure means something).
bool ArenaBytesKnown() noexcept;
void SetArenaBytesKnown() noexcept;

}  // namespace leakprobe
