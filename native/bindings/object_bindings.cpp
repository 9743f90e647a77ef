// leakprobe._native's tracked objects: TrackedType.created/closed over the
// ObjectRegistry. An instance is tracked by a weak reference whose callback
// (a C function) tells the registry it was collected; nothing keeps it
// alive. The weak reference is the record's key: a close finds it again in
// the instance's own list of weak references (CPython's, which it keeps
// under the GIL), by its callback, so the registry needs no second key. Every call here
// runs with the GIL held (the weak reference C API needs it), so the registry's lock is
// only ever contended by a scrape. Nothing raises into the caller: a failure is counted
// (errors) and logged once. No HookGuard here: these functions run from Python code only,
// never inside one of our hooks, on a forking thread (Python's own fork handlers run
// before the fork protocol's) or under a tracker lock; the registry's lock is a
// TrackerLock, so a hook reached while it is held passes through. The weak reference's
// own allocation may be sampled by the heap tracker, like any allocation of the code that
// created the object.
#include "object_bindings.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/optimization.h"
#include "leakprobe/objects/object_registry.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/log.h"
#include "leakprobe/stacks/stack_table.h"
#include "without_gil.h"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>  // T_PYSSIZET, READONLY: Py_T_PYSSIZET, Py_READONLY from 3.12
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

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

// Made at module init, never freed: weakrefs of tracked objects point to it.
PyObject* g_collected_callback = nullptr;

void LogErrorOnce(const std::string& type, const char* what) {
  if (g_error_logged.exchange(true)) return;
  try {
    Log(spdlog::level::warn, "object tracking: " + std::string(what) + " (type " + type +
                                 "); counted in leakprobe_object_tracking_errors_total, "
                                 "logged once");
  } catch (...) {  // never raise into the application
  }
}

// The head of `obj`'s list of weak references, or nullptr when there is
// none to walk: a type without weak reference support, or a static
// builtin type object (CPython 3.12 and later keep their lists elsewhere;
// no resource owner is one). CPython changes the list under the GIL only.
PyWeakReference** WeakrefList(PyObject* obj) {
  const Py_ssize_t offset = Py_TYPE(obj)->tp_weaklistoffset;
  if (offset == 0) return nullptr;
  if (PyType_Check(obj) &&
      !PyType_HasFeature(reinterpret_cast<PyTypeObject*>(obj), Py_TPFLAGS_HEAPTYPE)) {
    return nullptr;
  }
  return reinterpret_cast<PyWeakReference**>(reinterpret_cast<char*>(obj) + offset);
}

// Our weak reference to `obj` that has a live record, or nullptr. One of
// ours without a record (given back by a close or by objects_stop, and
// still alive because somebody got it from weakref.getweakrefs) is passed
// over. Nothing here can run Python code or change the list.
PyObject* TrackedHandle(PyWeakReference** list, const ObjectRegistry& registry) {
  if (list == nullptr) return nullptr;
  for (PyWeakReference* ref = *list; ref != nullptr; ref = ref->wr_next) {
    if (ref->wr_callback == g_collected_callback && registry.Tracked(ref)) {
      return reinterpret_cast<PyObject*>(ref);
    }
  }
  return nullptr;
}

// TrackedType: a handle on one registered type; what register_type
// returns. A plain C type rather than a pybind11 class: its methods are
// METH_O functions that CPython calls directly (vectorcall), ~30 ns a call
// where pybind11's dispatch costs ~250 ns, on the path of every tracked
// creation and close.
struct TrackedTypeObject {
  PyObject_HEAD ObjectTypeId id;
  PyObject* name;  // str
};

std::string TypeNameOf(const TrackedTypeObject* self) {
  Py_ssize_t size = 0;
  const char* text = PyUnicode_AsUTF8AndSize(self->name, &size);
  if (text == nullptr) {
    PyErr_Clear();
    return "?";
  }
  return std::string(text, static_cast<std::size_t>(size));
}

PyObject* TrackedCreated(PyObject* py_self, PyObject* obj) {
  auto* self = reinterpret_cast<TrackedTypeObject*>(py_self);
  ObjectRegistry& registry = ObjectRegistry::Instance();
  if (!registry.enabled()) Py_RETURN_NONE;
  PyWeakReference** const list = WeakrefList(obj);
  if (ABSL_PREDICT_FALSE(list == nullptr)) {
    registry.CountError(self->id);
    LogErrorOnce(TypeNameOf(self),
                 "an instance that cannot be weakly referenced was not tracked");
    Py_RETURN_NONE;
  }
  // A fresh instance has none of ours (most have no weak reference at all).
  if (*list != nullptr && TrackedHandle(list, registry) != nullptr) Py_RETURN_NONE;
  if (registry.AtCapacity()) {
    registry.CountDropped(self->id);
    Py_RETURN_NONE;
  }
  PyObject* weakref = PyWeakref_NewRef(obj, g_collected_callback);
  if (ABSL_PREDICT_FALSE(weakref == nullptr)) {
    PyErr_Clear();
    registry.CountError(self->id);
    LogErrorOnce(TypeNameOf(self), "a weak reference to an instance could not be made");
    Py_RETURN_NONE;
  }
  const int max_frames = g_max_frames.load(std::memory_order_relaxed);
  const StackId stack = max_frames > 0 ? StackTable::Instance().CaptureAndIntern(
                                             max_frames, /*gil_held=*/true)
                                       : kEmptyStack;
  // The coarse clock: an age is reported in seconds, and this runs on every
  // tracked creation (a vDSO read of the time-stamp counter costs more).
  const auto result = registry.Add(self->id, weakref, stack, CoarseMonotonicNs());
  if (ABSL_PREDICT_FALSE(result != ObjectRegistry::AddResult::kAdded)) {
    Py_DECREF(weakref);
    if (result == ObjectRegistry::AddResult::kError) {
      LogErrorOnce(TypeNameOf(self), "out of memory recording an instance");
    }
  }
  Py_RETURN_NONE;
}

PyObject* TrackedClosed(PyObject* /*self*/, PyObject* obj) {
  ObjectRegistry& registry = ObjectRegistry::Instance();
  if (!registry.enabled()) Py_RETURN_NONE;
  PyWeakReference** const list = WeakrefList(obj);
  if (list == nullptr) Py_RETURN_NONE;
  for (PyWeakReference* ref = *list; ref != nullptr; ref = ref->wr_next) {
    if (ref->wr_callback == g_collected_callback && registry.Close(ref)) {
      // Given back: releasing it takes it out of the list walked here, so
      // the walk ends first.
      Py_DECREF(reinterpret_cast<PyObject*>(ref));
      break;
    }
  }
  Py_RETURN_NONE;
}

PyObject* TrackedCountError(PyObject* py_self, PyObject* /*unused*/) {
  ObjectRegistry::Instance().CountError(
      reinterpret_cast<TrackedTypeObject*>(py_self)->id);
  Py_RETURN_NONE;
}

PyObject* TrackedName(PyObject* py_self, void* /*closure*/) {
  return Py_NewRef(reinterpret_cast<TrackedTypeObject*>(py_self)->name);
}

PyObject* TrackedRepr(PyObject* py_self) {
  return PyUnicode_FromFormat("<leakprobe TrackedType %R>",
                              reinterpret_cast<TrackedTypeObject*>(py_self)->name);
}

void TrackedDealloc(PyObject* py_self) {
  PyTypeObject* type = Py_TYPE(py_self);
  Py_XDECREF(reinterpret_cast<TrackedTypeObject*>(py_self)->name);
  type->tp_free(py_self);
  Py_DECREF(type);
}

PyMethodDef g_tracked_methods[] = {
    {"created", &TrackedCreated, METH_O,
     "created(obj): start tracking obj (weakly), with the caller's stack; a second "
     "call for a tracked object, and any call while tracking is off, does nothing. "
     "Never raises."},
    {"closed", &TrackedClosed, METH_O,
     "closed(obj): obj was closed: count it and stop tracking it; does nothing for "
     "an object not tracked. Never raises."},
    {"count_error", &TrackedCountError, METH_NOARGS,
     "Count an internal error of a wrapper of this type."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef g_tracked_getset[] = {
    {"name", &TrackedName, nullptr, "The type's name in metrics.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot g_tracked_slots[] = {
    {Py_tp_doc,
     const_cast<char*>("A type of resource owner registered with leakprobe's "
                       "object registry (see leakprobe._objects.register_type).")},
    {Py_tp_methods, g_tracked_methods},
    {Py_tp_getset, g_tracked_getset},
    {Py_tp_repr, reinterpret_cast<void*>(&TrackedRepr)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&TrackedDealloc)},
    {0, nullptr}};

PyType_Spec g_tracked_spec = {
    "leakprobe._native.TrackedType", static_cast<int>(sizeof(TrackedTypeObject)), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, g_tracked_slots};

PyTypeObject* g_tracked_type = nullptr;  // set at module init, never freed

// TrackedMethod: a tracked class's __init__ or close method (track_type
// installs it in the class in place of the class's own Python function).
// A C callable rather than a generated Python function: a call forwards
// its arguments as they came (vectorcall, keywords included) to the
// wrapped function and reports the instance after it returned, without a
// Python frame of its own: ~1,330 instructions less per created and
// closed ORM session on CPython 3.11 (docs/benchmarks.md). It behaves as
// a function where callers look: a method descriptor (bound on access
// through an instance, called unbound by CPython's method calls), its
// __name__/__qualname__/__doc__/__wrapped__ in its own __dict__
// (functools.update_wrapper), every other attribute read from the wrapped
// function (__code__, __defaults__, ...), __signature__ that of the
// wrapped function, weakly referenceable, pickled by qualified name.
struct TrackedMethodObject {
  PyObject_HEAD vectorcallfunc vectorcall;
  PyObject* wrapped;    // the class's own function
  PyObject* tracked;    // TrackedTypeObject
  PyObject* owner;      // __init__: the class it was installed in; close: nullptr
  PyObject* self_name;  // the first parameter's name when it can be passed by
                        // keyword (Cls.close(self=obj)); else nullptr
  PyObject* dict;
  PyObject* weaklist;
};

// The instance a call was made for: the first positional argument, or the
// first parameter passed by keyword; nullptr if neither.
PyObject* InstanceOf(const TrackedMethodObject* method, PyObject* const* args,
                     std::size_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  if (nargs > 0) return args[0];
  if (kwnames == nullptr || method->self_name == nullptr) return nullptr;
  const Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t i = 0; i < nkw; ++i) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, i);
    if (name == method->self_name || PyUnicode_Compare(name, method->self_name) == 0) {
      return args[nargs + i];
    }
  }
  return nullptr;
}

// The name of `fn`'s first parameter if a caller may pass it by keyword
// (a Python function's, or the one a TrackedMethod wraps, through its
// forwarded __code__); nullptr otherwise. Never raises.
PyObject* KeywordSelfName(PyObject* fn) {
  PyObject* code = PyObject_GetAttrString(fn, "__code__");
  if (code == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  PyObject* name = nullptr;
  PyObject* argcount = PyObject_GetAttrString(code, "co_argcount");
  PyObject* posonly = PyObject_GetAttrString(code, "co_posonlyargcount");
  PyObject* varnames = PyObject_GetAttrString(code, "co_varnames");
  if (argcount != nullptr && posonly != nullptr && varnames != nullptr &&
      PyLong_AsLong(argcount) >= 1 && PyLong_AsLong(posonly) == 0 &&
      PyTuple_Check(varnames) && PyTuple_GET_SIZE(varnames) >= 1 &&
      PyUnicode_Check(PyTuple_GET_ITEM(varnames, 0))) {
    name = Py_NewRef(PyTuple_GET_ITEM(varnames, 0));
  }
  PyErr_Clear();
  Py_XDECREF(argcount);
  Py_XDECREF(posonly);
  Py_XDECREF(varnames);
  Py_DECREF(code);
  return name;
}

PyObject* g_tracked_attr = nullptr;  // "__leakprobe_tracked__", interned

// Whether `instance` counts under `method`'s tracked type: the nearest
// tracked class of its type is the one `method` was installed in (so a
// tracked base class's __init__, called by a tracked subclass's, does not
// count it twice).
bool CountsUnder(const TrackedMethodObject* method, PyObject* instance) {
  if (reinterpret_cast<PyObject*>(Py_TYPE(instance)) == method->owner) return true;
  PyObject* nearest =
      PyObject_GetAttr(reinterpret_cast<PyObject*>(Py_TYPE(instance)), g_tracked_attr);
  if (nearest == nullptr) {  // a metaclass's __getattr__: counted, not raised
    PyErr_Clear();
    ObjectRegistry::Instance().CountError(
        reinterpret_cast<TrackedTypeObject*>(method->tracked)->id);
    return false;
  }
  const bool same = nearest == method->tracked;
  Py_DECREF(nearest);
  return same;
}

PyObject* TrackedMethodCall(PyObject* callable, PyObject* const* args, std::size_t nargsf,
                            PyObject* kwnames) {
  auto* self = reinterpret_cast<TrackedMethodObject*>(callable);
  PyObject* result = PyObject_Vectorcall(self->wrapped, args, nargsf, kwnames);
  if (result == nullptr) return result;
  PyObject* instance = InstanceOf(self, args, nargsf, kwnames);
  if (instance == nullptr) return result;
  if (self->owner == nullptr) {
    Py_XDECREF(TrackedClosed(self->tracked, instance));
  } else if (CountsUnder(self, instance)) {
    Py_XDECREF(TrackedCreated(self->tracked, instance));
  }
  return result;
}

PyObject* TrackedMethodGet(PyObject* self, PyObject* obj, PyObject* /*type*/) {
  if (obj == nullptr || obj == Py_None) return Py_NewRef(self);
  return PyMethod_New(self, obj);
}

PyObject* TrackedMethodGetAttr(PyObject* self, PyObject* name) {
  PyObject* found = PyObject_GenericGetAttr(self, name);
  if (found != nullptr || !PyErr_ExceptionMatches(PyExc_AttributeError)) return found;
  PyErr_Clear();
  return PyObject_GetAttr(reinterpret_cast<TrackedMethodObject*>(self)->wrapped, name);
}

PyObject* TrackedMethodSignature(PyObject* self, void* /*closure*/) {
  PyObject* inspect = PyImport_ImportModule("inspect");
  if (inspect == nullptr) return nullptr;
  PyObject* signature = PyObject_CallMethod(
      inspect, "signature", "O", reinterpret_cast<TrackedMethodObject*>(self)->wrapped);
  Py_DECREF(inspect);
  return signature;
}

PyObject* TrackedMethodReduce(PyObject* self, PyObject* /*unused*/) {
  // A global's name: pickle and copy find the method by its qualified
  // name, as they do a function.
  return PyObject_GetAttrString(self, "__qualname__");
}

PyObject* TrackedMethodRepr(PyObject* self) {
  return PyUnicode_FromFormat("<leakprobe tracked %R>",
                              reinterpret_cast<TrackedMethodObject*>(self)->wrapped);
}

int TrackedMethodTraverse(PyObject* self, visitproc visit, void* arg) {
  auto* m = reinterpret_cast<TrackedMethodObject*>(self);
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(m->wrapped);
  Py_VISIT(m->tracked);
  Py_VISIT(m->owner);
  Py_VISIT(m->self_name);
  Py_VISIT(m->dict);
  return 0;
}

int TrackedMethodClear(PyObject* self) {
  auto* m = reinterpret_cast<TrackedMethodObject*>(self);
  Py_CLEAR(m->wrapped);
  Py_CLEAR(m->tracked);
  Py_CLEAR(m->owner);
  Py_CLEAR(m->self_name);
  Py_CLEAR(m->dict);
  return 0;
}

void TrackedMethodDealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  if (reinterpret_cast<TrackedMethodObject*>(self)->weaklist != nullptr) {
    PyObject_ClearWeakRefs(self);
  }
  TrackedMethodClear(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyMethodDef g_tracked_method_methods[] = {
    {"__reduce__", &TrackedMethodReduce, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef g_tracked_method_getset[] = {
    {"__dict__", &PyObject_GenericGetDict, &PyObject_GenericSetDict, nullptr, nullptr},
    {"__signature__", &TrackedMethodSignature, nullptr,
     "The wrapped function's signature.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyMemberDef g_tracked_method_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET,
     static_cast<Py_ssize_t>(offsetof(TrackedMethodObject, vectorcall)), Py_READONLY,
     nullptr},
    {"__dictoffset__", Py_T_PYSSIZET,
     static_cast<Py_ssize_t>(offsetof(TrackedMethodObject, dict)), Py_READONLY, nullptr},
    {"__weaklistoffset__", Py_T_PYSSIZET,
     static_cast<Py_ssize_t>(offsetof(TrackedMethodObject, weaklist)), Py_READONLY,
     nullptr},
    {nullptr, 0, 0, 0, nullptr}};

PyType_Slot g_tracked_method_slots[] = {
    {Py_tp_doc, const_cast<char*>("A tracked class's __init__ or close method "
                                  "(leakprobe.track_type): calls the wrapped function, "
                                  "then reports the instance created or closed.")},
    {Py_tp_call, reinterpret_cast<void*>(&PyVectorcall_Call)},
    {Py_tp_descr_get, reinterpret_cast<void*>(&TrackedMethodGet)},
    {Py_tp_getattro, reinterpret_cast<void*>(&TrackedMethodGetAttr)},
    {Py_tp_setattro, reinterpret_cast<void*>(&PyObject_GenericSetAttr)},
    {Py_tp_methods, g_tracked_method_methods},
    {Py_tp_getset, g_tracked_method_getset},
    {Py_tp_members, g_tracked_method_members},
    {Py_tp_repr, reinterpret_cast<void*>(&TrackedMethodRepr)},
    {Py_tp_traverse, reinterpret_cast<void*>(&TrackedMethodTraverse)},
    {Py_tp_clear, reinterpret_cast<void*>(&TrackedMethodClear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&TrackedMethodDealloc)},
    {0, nullptr}};

PyType_Spec g_tracked_method_spec = {
    "leakprobe._native.TrackedMethod", static_cast<int>(sizeof(TrackedMethodObject)), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_METHOD_DESCRIPTOR |
        Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    g_tracked_method_slots};

PyTypeObject* g_tracked_method_type = nullptr;  // set at module init, never freed

// tracked_method(wrapped, tracked, owner): the TrackedMethod for `wrapped`;
// owner is the class for an __init__, None for a close method.
py::object NewTrackedMethod(py::handle wrapped, py::handle tracked, py::handle owner) {
  if (!PyCallable_Check(wrapped.ptr())) {
    throw py::type_error("tracked_method() wraps a callable, not " +
                         std::string(Py_TYPE(wrapped.ptr())->tp_name));
  }
  if (Py_TYPE(tracked.ptr()) != g_tracked_type) {
    throw py::type_error("tracked_method() takes a TrackedType, not " +
                         std::string(Py_TYPE(tracked.ptr())->tp_name));
  }
  if (!owner.is_none() && !PyType_Check(owner.ptr())) {
    throw py::type_error(
        "tracked_method() takes the class (for __init__) or None (for a "
        "close method) as owner, not " +
        std::string(Py_TYPE(owner.ptr())->tp_name));
  }
  PyObject* self_name = KeywordSelfName(wrapped.ptr());
  auto* self = PyObject_GC_New(TrackedMethodObject, g_tracked_method_type);
  if (self == nullptr) {
    Py_XDECREF(self_name);
    throw py::error_already_set();
  }
  self->vectorcall = &TrackedMethodCall;
  self->wrapped = Py_NewRef(wrapped.ptr());
  self->tracked = Py_NewRef(tracked.ptr());
  self->owner = owner.is_none() ? nullptr : Py_NewRef(owner.ptr());
  self->self_name = self_name;
  self->dict = nullptr;
  self->weaklist = nullptr;
  PyObject_GC_Track(self);
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(self));
}

py::object NewTrackedType(const std::string& name) {
  const ObjectTypeId id = ObjectRegistry::Instance().RegisterType(name);
  py::str text(ObjectRegistry::Instance().TypeName(id));
  auto* self = PyObject_New(TrackedTypeObject, g_tracked_type);
  if (self == nullptr) throw py::error_already_set();
  self->id = id;
  self->name = text.release().ptr();
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(self));
}

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
    const WithoutGil no_gil;
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
    for (const ObjectSite& site : t.top_sites) {
      sites.append(py::make_tuple(site.site, site.live));
    }
    d["top_sites"] = sites;
    py::list collected;
    for (const ObjectCollectedSite& site : t.collected_open_sites) {
      collected.append(py::make_tuple(site.site, site.collected_open));
    }
    d["collected_open_sites"] = collected;
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

// The sites of `type_name`'s instances collected while open, most first:
// [(site, count, frames)], frames as (filename, line, function), innermost
// first, of the stack that contributed most to the site (empty for the
// overflow entry); [] for an unknown type.
py::list CollectedOpenSites(const std::string& type_name) {
  std::vector<std::tuple<std::string, std::uint64_t, std::vector<Frame>>> sites;
  {
    const WithoutGil no_gil;
    const ObjectSummary s = ObjectRegistry::Instance().Summary(MonotonicNs());
    const StackTable& table = StackTable::Instance();
    for (const ObjectTypeSummary& t : s.types) {
      if (t.name != type_name) continue;
      for (const ObjectCollectedSite& site : t.collected_open_sites) {
        sites.emplace_back(site.site, site.collected_open,
                           site.site == kCollectedSitesOverflowName
                               ? std::vector<Frame>()
                               : table.FramesOf(site.stack));
      }
      break;
    }
  }
  py::list out;
  for (const auto& [site, count, frames] : sites) {
    py::tuple stack(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
      stack[i] = py::make_tuple(frames[i].filename, frames[i].line, frames[i].function);
    }
    out.append(py::make_tuple(site, count, stack));
  }
  return out;
}

// (records, stacks, now_ns): records as (type name, stack id, created_ns,
// sequence) in creation order per type; stacks as {id: (site, site index,
// frames)} for the stacks the records name.
py::tuple RecordsTuple() {
  std::vector<ObjectRecord> records;
  std::vector<std::string> names;
  std::unordered_map<StackId,
                     std::pair<std::string, std::pair<std::size_t, std::vector<Frame>>>>
      stacks;
  std::int64_t now = 0;
  {
    const WithoutGil no_gil;
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
  g_tracked_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_tracked_spec));
  if (g_tracked_type == nullptr) throw py::error_already_set();
  m.add_object("TrackedType", reinterpret_cast<PyObject*>(g_tracked_type));
  g_tracked_method_type =
      reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_tracked_method_spec));
  if (g_tracked_method_type == nullptr) throw py::error_already_set();
  m.add_object("TrackedMethod", reinterpret_cast<PyObject*>(g_tracked_method_type));
  g_collected_callback = PyCFunction_New(&g_on_collected_def, nullptr);
  if (g_collected_callback == nullptr) throw py::error_already_set();
  g_tracked_attr = PyUnicode_InternFromString("__leakprobe_tracked__");
  if (g_tracked_attr == nullptr) throw py::error_already_set();
  m.def("tracked_method", &NewTrackedMethod, py::arg("wrapped"), py::arg("tracked"),
        py::arg("owner"),
        "The C wrapper track_type installs: calls wrapped, then reports its first "
        "argument created (owner: the class, for __init__) or closed (owner None).");
  m.def("object_register_type", &NewTrackedType, py::arg("name"),
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
      [](py::handle obj) {
        return TrackedHandle(WeakrefList(obj.ptr()), ObjectRegistry::Instance()) !=
               nullptr;
      },
      py::arg("obj"), "Whether obj has a live record.");
  m.def("object_summary", &SummaryDict,
        "Per type counts, oldest age and top sites, as the exporter sees them.");
  m.def("object_collected_open_sites", &CollectedOpenSites, py::arg("type_name"),
        "[(site, count, frames)] of type_name's instances collected while open, "
        "most first.");
  m.def(
      "object_record_of",
      [](py::handle obj) -> py::object {
        const ObjectRegistry& registry = ObjectRegistry::Instance();
        PyObject* handle = TrackedHandle(WeakrefList(obj.ptr()), registry);
        if (handle == nullptr) return py::none();
        const std::optional<ObjectRecord> r = registry.Find(handle);
        if (!r) return py::none();
        return py::make_tuple(registry.TypeName(r->type), r->stack);
      },
      py::arg("obj"),
      "(type name, creation stack id) of a tracked live object, or None.");
  m.def(
      "object_live",
      [](py::handle tracked, std::size_t limit) {
        if (g_tracked_type == nullptr || Py_TYPE(tracked.ptr()) != g_tracked_type) {
          throw py::type_error("object_live() takes a TrackedType");
        }
        const ObjectTypeId id = reinterpret_cast<TrackedTypeObject*>(tracked.ptr())->id;
        py::list out;
        // With the GIL held no record is removed meanwhile (Close and
        // Collected run under it), so the handles stay valid.
        for (void* handle : ObjectRegistry::Instance().LiveHandles(id, limit)) {
          auto* ref = static_cast<PyObject*>(handle);
#if PY_VERSION_HEX >= 0x030D0000
          PyObject* object = nullptr;
          if (PyWeakref_GetRef(ref, &object) == 1) {
            out.append(py::reinterpret_steal<py::object>(object));
          }
#else
          PyObject* object = PyWeakref_GetObject(ref);  // borrowed
          if (object != nullptr && object != Py_None) out.append(py::handle(object));
#endif
        }
        return out;
      },
      py::arg("tracked_type"), py::arg("limit"),
      "Up to `limit` live tracked objects of a type (strong references), oldest first.");
  m.def("object_records", &RecordsTuple,
        "(records, stacks, now_ns) of every live record, for object snapshots.");
}

}  // namespace leakprobe
