// leakprobe._native's tracked objects: TrackedType.created/closed over the
// ObjectRegistry. An instance is tracked by a weak reference whose callback
// (a C function) tells the registry it was collected; nothing keeps it
// alive. Every call here runs with the GIL held (the weak reference C API
// needs it), so the registry's lock is only ever contended by a scrape.
// Nothing raises into the caller: a failure is counted (errors) and logged
// once.
#include "object_bindings.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "leakprobe/objects/object_registry.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/log.h"
#include "leakprobe/stacks/stack_table.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

std::atomic<int> g_max_frames{0};
std::atomic<bool> g_error_logged{false};

// The handle's callback: the tracked instance is being collected.
PyObject* OnCollected(PyObject* /*self*/, PyObject* weakref) {
  // The registry gave up the reference it held: drop it. The weakref may
  // be freed here, inside its own callback, as when a WeakValueDictionary
  // entry removes itself.
  if (ObjectRegistry::Instance().Collected(weakref)) Py_DECREF(weakref);
  Py_RETURN_NONE;
}

PyMethodDef g_on_collected_def = {"_leakprobe_object_collected", &OnCollected, METH_O,
                                  nullptr};

PyObject* CollectedCallback() {
  static PyObject* const callback = PyCFunction_New(&g_on_collected_def, nullptr);
  return callback;  // never freed: weakrefs of tracked objects point to it
}

void LogErrorOnce(const std::string& type, const char* what) {
  if (g_error_logged.exchange(true)) return;
  try {
    Log(spdlog::level::warn, "object tracking: " + std::string(what) + " (type " + type +
                                 "); counted in leakprobe_object_tracking_errors_total, "
                                 "logged once");
  } catch (...) {  // never raise into the application
  }
}

// A handle on one registered type; what register_type returns.
class TrackedType {
 public:
  TrackedType(ObjectTypeId id, std::string name) : id_(id), name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  ObjectTypeId id() const { return id_; }

  void Created(py::handle obj) const noexcept {
    ObjectRegistry& registry = ObjectRegistry::Instance();
    if (!registry.enabled()) return;
    if (registry.AtCapacity()) {
      if (!registry.Tracked(obj.ptr())) registry.CountDropped(id_);
      return;
    }
    PyObject* weakref = PyWeakref_NewRef(obj.ptr(), CollectedCallback());
    if (weakref == nullptr) {
      PyErr_Clear();
      registry.CountError(id_);
      LogErrorOnce(name_, "an instance that cannot be weakly referenced was not tracked");
      return;
    }
    const int max_frames = g_max_frames.load(std::memory_order_relaxed);
    const StackId stack =
        max_frames > 0 ? StackTable::Instance().CaptureAndIntern(max_frames) : kEmptyStack;
    const auto result = registry.Add(id_, obj.ptr(), weakref, stack, MonotonicNs());
    if (result != ObjectRegistry::AddResult::kAdded) Py_DECREF(weakref);
    if (result == ObjectRegistry::AddResult::kError) {
      LogErrorOnce(name_, "out of memory recording an instance");
    }
  }

  void Closed(py::handle obj) const noexcept {
    ObjectRegistry& registry = ObjectRegistry::Instance();
    if (!registry.enabled()) return;
    if (void* weakref = registry.Close(obj.ptr())) Py_DECREF(static_cast<PyObject*>(weakref));
  }

  void CountError() const noexcept { ObjectRegistry::Instance().CountError(id_); }

 private:
  const ObjectTypeId id_;
  const std::string name_;
};

void ObjectsStart(int max_frames, int top_sites, std::int64_t max_records) {
  if (max_frames < 0 || max_frames > static_cast<int>(StackTable::kMaxDepth)) {
    throw Error("object tracking: max_frames must be between 0 and " +
                std::to_string(StackTable::kMaxDepth) + ", not " +
                std::to_string(max_frames));
  }
  if (top_sites < 0) {
    throw Error("object tracking: top_sites must be 0 or more, not " +
                std::to_string(top_sites));
  }
  if (max_records < 0) {
    throw Error("object tracking: max_records must be 0 or more, not " +
                std::to_string(max_records));
  }
  CollectedCallback();
  g_max_frames.store(max_frames, std::memory_order_relaxed);
  ObjectRegistry::Instance().Start(static_cast<std::size_t>(max_records),
                                   static_cast<std::size_t>(top_sites));
}

void ObjectsStop() {
  for (void* weakref : ObjectRegistry::Instance().Stop()) {
    Py_DECREF(static_cast<PyObject*>(weakref));
  }
}

py::dict SummaryDict() {
  ObjectSummary s;
  {
    py::gil_scoped_release no_gil;
    s = ObjectRegistry::Instance().Summary(MonotonicNs());
  }
  py::list types;
  for (const ObjectTypeSummary& t : s.types) {
    py::dict d;
    d["name"] = t.name;
    d["live"] = t.live;
    d["created"] = t.created;
    d["closed"] = t.closed;
    d["collected_while_open"] = t.collected_open;
    d["dropped"] = t.dropped;
    d["errors"] = t.errors;
    d["oldest_age_seconds"] = t.oldest_age_seconds;
    py::list sites;
    for (const ObjectSite& site : t.top_sites) sites.append(py::make_tuple(site.site, site.live));
    d["top_sites"] = sites;
    types.append(std::move(d));
  }
  py::dict d;
  d["types"] = types;
  d["records"] = s.records;
  d["max_records"] = s.max_records;
  d["type_overflows"] = s.type_overflows;
  d["memory_bytes"] = s.memory_bytes;
  return d;
}

// (records, stacks, now_ns): records as (type name, stack id, created_ns,
// sequence) in creation order per type; stacks as {id: (site, site index,
// frames)} for the stacks the records name.
py::tuple RecordsTuple() {
  std::vector<ObjectRecord> records;
  std::vector<std::string> names;
  std::unordered_map<StackId, std::pair<std::string, std::pair<std::size_t, std::vector<Frame>>>>
      stacks;
  std::int64_t now = 0;
  {
    py::gil_scoped_release no_gil;
    const ObjectRegistry& registry = ObjectRegistry::Instance();
    records = registry.Records();
    const StackTable& table = StackTable::Instance();
    for (const ObjectRecord& r : records) {
      if (stacks.find(r.stack) == stacks.end()) {
        stacks.emplace(r.stack, std::make_pair(table.SiteOf(r.stack),
                                               std::make_pair(table.SiteIndex(r.stack),
                                                              table.FramesOf(r.stack))));
      }
      if (r.type >= names.size()) names.resize(r.type + 1);
      if (names[r.type].empty()) names[r.type] = registry.TypeName(r.type);
    }
    now = MonotonicNs();
  }
  std::vector<py::str> type_names;
  type_names.reserve(names.size());
  for (const std::string& name : names) type_names.emplace_back(name);
  py::list out;
  for (const ObjectRecord& r : records) {
    out.append(py::make_tuple(type_names[r.type], r.stack, r.created_ns, r.sequence));
  }
  py::dict stack_dict;
  for (const auto& [id, entry] : stacks) {
    py::tuple frames(entry.second.second.size());
    for (std::size_t i = 0; i < entry.second.second.size(); ++i) {
      const Frame& f = entry.second.second[i];
      frames[i] = py::make_tuple(f.filename, f.line, f.function);
    }
    stack_dict[py::int_(id)] = py::make_tuple(entry.first, entry.second.first, frames);
  }
  return py::make_tuple(out, stack_dict, now);
}

}  // namespace

void RegisterObjectBindings(py::module_& m) {
  py::class_<TrackedType>(m, "TrackedType",
                          "A type of resource owner registered with leakprobe's object "
                          "registry (see leakprobe._objects.register_type).")
      .def_property_readonly("name", &TrackedType::name, "The type's name in metrics.")
      .def("created", &TrackedType::Created,
           "Start tracking obj (weakly), with the caller's stack; a second call "
           "for a tracked object, and any call while tracking is off, does nothing. "
           "Never raises.")
      .def("closed", &TrackedType::Closed,
           "obj was closed: count it and stop tracking it; does nothing for an "
           "object not tracked. Never raises.")
      .def("count_error", &TrackedType::CountError,
           "Count an internal error of a wrapper of this type.")
      .def("__repr__", [](const TrackedType& t) {
        return "<leakprobe TrackedType " + py::repr(py::str(t.name())).cast<std::string>() + ">";
      });
  m.def(
      "object_register_type",
      [](const std::string& name) {
        const ObjectTypeId id = ObjectRegistry::Instance().RegisterType(name);
        return TrackedType(id, ObjectRegistry::Instance().TypeName(id));
      },
      py::arg("name"),
      "Register a type by name (idempotent); beyond the type cap, the overflow type.");
  m.def("objects_start", &ObjectsStart, py::arg("max_frames"), py::arg("top_sites"),
        py::arg("max_records"),
        "Start object tracking: creation stacks of up to max_frames frames, top_sites "
        "sites per type in the metrics, at most max_records live records.");
  m.def("objects_stop", &ObjectsStop,
        "Stop object tracking: forget every record and count (type names stay).");
  m.def(
      "objects_active", [] { return ObjectRegistry::Instance().enabled(); },
      "Whether object tracking is on.");
  m.def(
      "object_tracked",
      [](py::handle obj) { return ObjectRegistry::Instance().Tracked(obj.ptr()); },
      py::arg("obj"), "Whether obj has a live record.");
  m.def("object_summary", &SummaryDict,
        "Per type counts, oldest age and top sites, as the exporter sees them.");
  m.def("object_records", &RecordsTuple,
        "(records, stacks, now_ns) of every live record, for object snapshots.");
}

}  // namespace leakprobe
