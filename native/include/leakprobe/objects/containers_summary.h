// leakprobe/objects/containers_summary.h — the value types of the container
// store (leakprobe/objects/containers.h) that the snapshot, the exporter and
// the bindings read: container sizes and the last object census.
//
//   const ContainerSummary& c = leakprobe::TakeSnapshot().containers;
//   for (const ContainerSize& row : c.containers) use(row.name, row.size);
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace leakprobe {

struct ContainerSize {
  std::string name;  // "module:qualname", "Type.attribute" or watch()'s name
  std::string kind;  // "dict", "list", "set", "deque", "OrderedDict", ...
  std::uint64_t size = 0;
  std::int64_t maxsize = -1;  // -1: unbounded
};

struct CensusType {
  std::string type;  // "dict", "app.models.Order"
  std::uint64_t objects = 0;
  std::int64_t growth = 0;  // objects minus the first census's count
};

struct CensusFigures {
  std::uint64_t runs = 0;
  std::uint64_t objects = 0;    // gc-tracked objects seen by the last run
  double pause_seconds = 0;     // longest GIL hold of the last run
  double duration_seconds = 0;  // wall time of the last run
};

// Connections of the instrumented pools by state (the adapters'
// pool_connections(): SQLAlchemy per engine, httpcore and urllib3 together).
struct PoolConnections {
  std::string library;  // "sqlalchemy", "httpcore", "urllib3"
  std::string pool;     // the engine's URL without password, or "all"
  std::string
      state;  // "open", "checked_out", "checked_in", "invalidated", "active", "idle"
  std::uint64_t connections = 0;
  // The pool's size limit, the same on each of its rows: the connections in
  // use (checked_out, active) at which it runs out; -1: none (unbounded, or
  // not known). Rules per library: docs/objects.md, "Pool size limits".
  std::int64_t limit = -1;
};

// What the units of work of one (kind, name) left behind, accumulated over
// their runs (python/leakprobe/_work.py: after minus before of each run).
// Name "<other>": the runs of names beyond the per-kind cap.
struct WorkUnit {
  std::string kind;  // "task" (Celery), "route" (ASGI), ...
  std::string name;  // the task's or route's name
  std::uint64_t runs = 0;
  std::int64_t retained_fds = 0;      // open fds, all kinds
  std::int64_t retained_objects = 0;  // live tracked objects, all types
  double retained_bytes = 0;          // sampled live heap (an estimate)
};

struct ContainerSummary {
  std::vector<ContainerSize> containers;  // at most ContainerStore::kMaxContainers
  std::uint64_t watched = 0;              // watched or discovered, exported or not
  std::vector<CensusType> census;         // at most kMaxCensusTypes
  CensusFigures census_figures;
  std::vector<PoolConnections> pools;  // at most ContainerStore::kMaxPoolRows
  std::vector<WorkUnit> work;          // at most ContainerStore::kMaxWorkRows
  std::uint64_t torn_reads = 0;        // reads that gave up on the rows (writer busy)
};

}  // namespace leakprobe
