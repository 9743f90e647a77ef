// Bindings of the container store (leakprobe/objects/containers.h): the
// sampler (python/leakprobe/_containers.py) pushes what it measured under
// the GIL; the exporter reads it without.
#include "containers_bindings.h"

#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "leakprobe/objects/containers.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

using ContainerTuple = std::tuple<std::string, std::string, std::uint64_t, std::int64_t>;
using CensusTuple = std::tuple<std::string, std::uint64_t, std::int64_t>;

void SetContainers(const std::vector<ContainerTuple>& rows, std::uint64_t watched) {
  std::vector<ContainerSize> converted;
  converted.reserve(rows.size());
  for (const auto& [name, kind, size, maxsize] : rows) {
    converted.push_back({name, kind, size, maxsize});
  }
  ContainerStore::Instance().SetContainers(converted, watched);
}

void SetCensus(const std::vector<CensusTuple>& rows, std::uint64_t runs,
               std::uint64_t objects, double pause_seconds, double duration_seconds) {
  std::vector<CensusType> converted;
  converted.reserve(rows.size());
  for (const auto& [type, count, growth] : rows) {
    converted.push_back({type, count, growth});
  }
  ContainerStore::Instance().SetCensus(converted,
                                       {runs, objects, pause_seconds, duration_seconds});
}

using PoolTuple =
    std::tuple<std::string, std::string, std::string, std::uint64_t, std::int64_t>;

void SetPools(const std::vector<PoolTuple>& rows) {
  std::vector<PoolConnections> converted;
  converted.reserve(rows.size());
  for (const auto& [library, pool, state, connections, limit] : rows) {
    converted.push_back({library, pool, state, connections, limit < 0 ? -1 : limit});
  }
  ContainerStore::Instance().SetPools(converted);
}

using WorkTuple = std::tuple<std::string, std::string, std::uint64_t, std::int64_t,
                             std::int64_t, double>;

void SetWork(const std::vector<WorkTuple>& rows) {
  std::vector<WorkUnit> converted;
  converted.reserve(rows.size());
  for (const auto& [kind, name, runs, fds, objects, bytes] : rows) {
    converted.push_back({kind, name, runs, fds, objects, bytes});
  }
  ContainerStore::Instance().SetWork(converted);
}

py::dict Summary() {
  const ContainerSummary s = ContainerStore::Instance().Summary();
  py::list containers;
  for (const ContainerSize& c : s.containers) {
    containers.append(py::make_tuple(c.name, c.kind, c.size, c.maxsize));
  }
  py::list census;
  for (const CensusType& t : s.census) {
    census.append(py::make_tuple(t.type, t.objects, t.growth));
  }
  py::dict d;
  d["containers"] = containers;
  d["watched"] = s.watched;
  d["census"] = census;
  d["census_runs"] = s.census_figures.runs;
  d["census_objects"] = s.census_figures.objects;
  d["census_pause_seconds"] = s.census_figures.pause_seconds;
  d["census_duration_seconds"] = s.census_figures.duration_seconds;
  py::list pools;
  for (const PoolConnections& p : s.pools) {
    pools.append(py::make_tuple(p.library, p.pool, p.state, p.connections, p.limit));
  }
  d["pools"] = pools;
  py::list work;
  for (const WorkUnit& w : s.work) {
    work.append(py::make_tuple(w.kind, w.name, w.runs, w.retained_fds, w.retained_objects,
                               w.retained_bytes));
  }
  d["work"] = work;
  d["torn_reads"] = s.torn_reads;
  return d;
}

}  // namespace

void RegisterContainerBindings(py::module_& m) {
  m.def("set_containers", &SetContainers, py::arg("rows"), py::arg("watched"),
        "Replace the exported container rows: (name, kind, size, maxsize or -1), "
        "largest first; rows beyond the store's 64 are ignored. `watched` is the total.");
  m.def("set_census", &SetCensus, py::arg("rows"), py::arg("runs"), py::arg("objects"),
        py::arg("pause_seconds"), py::arg("duration_seconds"),
        "Replace the census rows (type, objects, growth) and the census figures.");
  m.def("set_pools", &SetPools, py::arg("rows"),
        "Replace the pool-connection rows (library, pool, state, connections, limit "
        "or -1 for none); rows beyond the store's 128 are ignored.");
  m.def("set_work", &SetWork, py::arg("rows"),
        "Replace the per-unit-of-work rows (kind, name, runs, retained fds, retained "
        "objects, retained bytes); rows beyond the store's 128 are ignored.");
  m.def(
      "set_work_row",
      [](std::size_t index, const std::string& kind, const std::string& name,
         std::uint64_t runs, std::int64_t fds, std::int64_t objects, double bytes) {
        ContainerStore::Instance().SetWorkRow(index,
                                              {kind, name, runs, fds, objects, bytes});
      },
      py::arg("index"), py::arg("kind"), py::arg("name"), py::arg("runs"), py::arg("fds"),
      py::arg("objects"), py::arg("bytes"),
      "Write one per-unit-of-work row (rows are added in order: index at most the "
      "row count; from 128 on ignored), leaving the others.");
  m.def("container_summary", &Summary,
        "What the exporter reads from the container store.");
}

}  // namespace leakprobe
