#include "leakprobe/snapshot.h"

#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/objects/containers.h"
#include "leakprobe/objects/object_registry.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/trend/trend_state.h"
#include "leakprobe/version.h"

namespace leakprobe {

Snapshot TakeSnapshot() {
  Snapshot snapshot;
  snapshot.process = ReadProcessStats();
  const RuntimeStats& runtime = RuntimeStats::Instance();
  snapshot.gc = runtime.Gc();
  if (const PythonInfo* info = runtime.python_info()) snapshot.python = *info;
  const HeapTracker& heap = HeapTracker::Instance();
  if (heap.enabled()) snapshot.heap = heap.Summary();
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
