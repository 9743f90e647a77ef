// leakprobe/snapshot.h — the read-only view of everything leakprobe knows,
// taken at one moment. Exporters, the Python API and reports consume it; it
// is the only interface they use, and it knows nothing of Prometheus.
//
//   leakprobe::Snapshot s = leakprobe::TakeSnapshot();
//   for (const auto& g : s.gc.generations) ...
//
// Thread-safety: TakeSnapshot may be called concurrently from any thread
// without the GIL; a Snapshot is a plain value.
#pragma once

#include <optional>

#include "leakprobe/fd/fd_summary.h"
#include "leakprobe/heap/heap_summary.h"
#include "leakprobe/malloc/native_summary.h"
#include "leakprobe/objects/containers_summary.h"
#include "leakprobe/objects/object_summary.h"
#include "leakprobe/process/process_stats.h"
#include "leakprobe/process/runtime_stats.h"
#include "leakprobe/runtime/hook_passes.h"
#include "leakprobe/trend/trend_summary.h"

namespace leakprobe {

struct Snapshot {
  ProcessStats process;
  GcSnapshot gc;
  std::optional<HeapSummary> heap;  // empty unless heap tracking is on
  std::optional<FdSummary> fd;      // empty unless fd tracking is on
  // Empty unless native tracking is on (LEAKPROBE_NATIVE); then `memory`
  // splits RSS into components too.
  std::optional<NativeSummary> native;
  std::optional<MemoryComponents> memory;
  std::optional<PythonInfo> python;  // empty until the bindings set it
  HookPasses hook_passes;            // calls the hooks passed through untracked
  ContainerSummary containers;       // container sizes and census, as last sampled
  const char* version = nullptr;     // leakprobe's own version

  // Empty unless object tracking is on.
  std::optional<ObjectSummary> objects;

  // Empty unless trends are on (LEAKPROBE_TRENDS): the verdicts of the
  // latest trend sample (leakprobe/trend/trend_state.h).
  std::optional<trend::TrendSummary> trends;
};

Snapshot TakeSnapshot();

}  // namespace leakprobe
