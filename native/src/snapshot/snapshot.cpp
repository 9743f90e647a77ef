#include "leakprobe/snapshot.h"

#include <algorithm>

#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/heap/arena_stats.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/malloc/native_heap.h"
#include "leakprobe/objects/containers.h"
#include "leakprobe/objects/object_registry.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/trend/trend_state.h"
#include "leakprobe/version.h"

namespace leakprobe {
namespace {

MemoryComponents SplitMemory(const Snapshot& s) {
  MemoryComponents m;
  m.rss = s.process.resident_memory_bytes;
  if (s.heap) {
    m.python_heap = s.heap->live_bytes;
    m.python_arena_free =
        std::max(0.0, static_cast<double>(ArenaBytes()) - s.heap->small_live_bytes);
  } else {
    m.python_arena_free = static_cast<double>(ArenaBytes());
  }
  m.native_heap = s.native->live_bytes;
  m.mmap = static_cast<double>(s.native->mmap_bytes);
  m.other =
      std::max(0.0, m.rss - m.python_heap - m.python_arena_free - m.native_heap - m.mmap);
  return m;
}

}  // namespace

Snapshot TakeSnapshot() {
  Snapshot snapshot;
  snapshot.process = ReadProcessStats();
  const RuntimeStats& runtime = RuntimeStats::Instance();
  snapshot.gc = runtime.Gc();
  if (const PythonInfo* info = runtime.python_info()) snapshot.python = *info;
  const HeapTracker& heap = HeapTracker::Instance();
  if (heap.enabled()) snapshot.heap = heap.Summary();
  const NativeHeap& native = NativeHeap::Instance();
  if (native.enabled()) {
    snapshot.native = native.Summary();
    snapshot.memory = SplitMemory(snapshot);
  }
  if (FdHooksActive()) snapshot.fd = SummarizeFds(ProcessFdTable());
  const ObjectRegistry& objects = ObjectRegistry::Instance();
  if (objects.enabled()) snapshot.objects = objects.Summary(MonotonicNs());
  snapshot.hook_passes = ReadHookPasses();
  snapshot.containers = ContainerStore::Instance().Summary();
  snapshot.trends = trend::TrendState::Instance().Summary();
  snapshot.version = kVersion;
  return snapshot;
}

}  // namespace leakprobe
