// leakprobe._native's units of work (leakprobe/_work.py): the figures a
// run reads as it begins and ends, and the exporter's per-unit row.
//
// Plain METH_FASTCALL functions rather than pybind11 definitions: each
// runs on every HTTP request of an app under the ASGI middleware and every
// Celery task, where pybind11's dispatch and argument conversion (strings
// copied into std::string on every call) cost more than the work itself.
// None of them releases the GIL but work_end when it counts fds: the
// others read a few counters under locks that no holder keeps while it
// waits for the GIL (the tracked-object hooks take the registry's lock
// with the GIL held as well), where a release and re-acquisition of the
// GIL would cost more than the read.
#include "work_bindings.h"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "leakprobe/fd/fd_kind.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/objects/containers.h"
#include "leakprobe/objects/object_registry.h"
#include "without_gil.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

bool ArgCount(const char* name, Py_ssize_t nargs, Py_ssize_t expected) {
  if (nargs == expected) return true;
  PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, expected,
               nargs);
  return false;
}

// A non-negative int argument; false with a ValueError naming `what`.
bool ToU64(PyObject* value, const char* what, std::uint64_t* out) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(value);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "%s must be a non-negative int, not %R", what, value);
    return false;
  }
  *out = v;
  return true;
}

bool ToI64(PyObject* value, const char* what, std::int64_t* out) {
  const long long v = PyLong_AsLongLong(value);
  if (v == -1 && PyErr_Occurred() != nullptr) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "%s must be an int, not %R", what, value);
    return false;
  }
  *out = v;
  return true;
}

// Runs in progress (work_figures to work_end) and runs that began while
// another was in progress. Changed only with the GIL held, so each begin's
// test-and-count is atomic with respect to the other Python threads; atomic
// all the same, as work_end lets go of the GIL while it counts fds.
std::atomic<std::int64_t> g_in_progress{0};
std::atomic<std::uint64_t> g_overlapped{0};

PyObject* U64Tuple(const std::uint64_t* values, std::size_t n) {
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(n));
  if (tuple == nullptr) return nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    PyObject* item = PyLong_FromUnsignedLongLong(values[i]);
    if (item == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), item);
  }
  return tuple;
}

PyObject* U64Tuple(const std::vector<std::uint64_t>& values) {
  return U64Tuple(values.data(), values.size());
}

// A tuple of three new references, which it steals; nullptr (with the
// exception set) when one of them is nullptr, the others then released.
PyObject* StealTriple(PyObject* a, PyObject* b, PyObject* c) {
  PyObject* tuple =
      a != nullptr && b != nullptr && c != nullptr ? PyTuple_New(3) : nullptr;
  if (tuple == nullptr) {
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(c);
    return nullptr;
  }
  PyTuple_SET_ITEM(tuple, 0, a);
  PyTuple_SET_ITEM(tuple, 1, b);
  PyTuple_SET_ITEM(tuple, 2, c);
  return tuple;
}

// work_figures(fds, objects, heap) -> (fd mark | None, live | None, heap | None)
PyObject* WorkFigures(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (!ArgCount("work_figures", nargs, 3)) return nullptr;
  const int fds = PyObject_IsTrue(args[0]);
  const int objects = PyObject_IsTrue(args[1]);
  const int heap = PyObject_IsTrue(args[2]);
  if (fds < 0 || objects < 0 || heap < 0) return nullptr;
  PyObject* mark_tuple = Py_NewRef(Py_None);
  if (fds != 0) {
    FdTable& table = ProcessFdTable();
    table.KeepLogs(1);  // before the mark: every creation after it is logged
    const FdTable::WorkMark mark = table.Mark();
    const std::uint64_t parts[] = {mark.sequence, mark.closes, mark.opens};
    Py_SETREF(mark_tuple, U64Tuple(parts, std::size(parts)));
  }
  // Each part only once the one before it was made (no call with an
  // exception set).
  PyObject* live = nullptr;
  if (mark_tuple != nullptr) {
    try {
      live = objects != 0 ? U64Tuple(ObjectRegistry::Instance().LiveCounts())
                          : Py_NewRef(Py_None);
    } catch (const std::bad_alloc&) {
      PyErr_NoMemory();
    }
  }
  PyObject* bytes = nullptr;
  if (live != nullptr) {
    bytes = heap != 0 ? PyFloat_FromDouble(HeapTracker::Instance().LiveBytes())
                      : Py_NewRef(Py_None);
  }
  PyObject* result = StealTriple(mark_tuple, live, bytes);
  if (result == nullptr) {
    if (fds != 0) ProcessFdTable().KeepLogs(-1);  // no run began
    return nullptr;
  }
  if (g_in_progress.fetch_add(1, std::memory_order_relaxed) > 0) {
    g_overlapped.fetch_add(1, std::memory_order_relaxed);
  }
  return result;
}

// A dict of the nonzero changes, or None when there is none (the common
// case: a run that left nothing behind makes no dict).
template <typename Items, typename Name>
PyObject* ChangesOrNone(const Items& items, Name name_of) {
  PyObject* dict = nullptr;
  for (const auto& item : items) {
    if (item.second == 0) continue;
    if (dict == nullptr && (dict = PyDict_New()) == nullptr) return nullptr;
    const std::string_view name = name_of(item.first);  // allocates nothing
    PyObject* key = PyUnicode_DecodeUTF8(name.data(),
                                         static_cast<Py_ssize_t>(name.size()), "replace");
    PyObject* value = key != nullptr ? PyLong_FromLongLong(item.second) : nullptr;
    const int failed = value == nullptr || PyDict_SetItem(dict, key, value) < 0;
    Py_XDECREF(key);
    Py_XDECREF(value);
    if (failed != 0) {
      Py_DECREF(dict);
      return nullptr;
    }
  }
  return dict != nullptr ? dict : Py_NewRef(Py_None);
}

// Ends what work_figures(fds=True) began, when it goes out of scope.
class LogRelease {
 public:
  explicit LogRelease(bool release) noexcept : release_(release) {}
  ~LogRelease() {
    if (release_) ProcessFdTable().KeepLogs(-1);
  }
  LogRelease(const LogRelease&) = delete;
  LogRelease& operator=(const LogRelease&) = delete;

 private:
  const bool release_;
};

// work_end(fds, live, release_logs) -> (fd changes | None, object changes |
// None, heap bytes)
PyObject* WorkEnd(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (!ArgCount("work_end", nargs, 3)) return nullptr;
  const int release_logs = PyObject_IsTrue(args[2]);
  if (release_logs < 0) return nullptr;
  // On every way out, once the fds are counted: a bad argument or a
  // failed allocation must not leave the fd table logging for good.
  const LogRelease release(release_logs != 0);
  bool count_fds = false;
  FdTable::WorkMark mark;
  if (args[0] != Py_None) {
    if (!PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 3) {
      PyErr_Format(
          PyExc_TypeError,
          "fds must be work_figures()'s mark (a tuple of 3 ints) or None, not %R",
          args[0]);
      return nullptr;
    }
    if (!ToU64(PyTuple_GET_ITEM(args[0], 0), "the mark's sequence", &mark.sequence) ||
        !ToU64(PyTuple_GET_ITEM(args[0], 1), "the mark's close-log position",
               &mark.closes) ||
        !ToU64(PyTuple_GET_ITEM(args[0], 2), "the mark's creation-log position",
               &mark.opens)) {
      return nullptr;
    }
    count_fds = true;
  }
  std::vector<std::uint64_t> before;
  const bool count_objects = args[1] != Py_None;
  if (count_objects) {
    if (!PyTuple_Check(args[1])) {
      PyErr_Format(PyExc_TypeError,
                   "live must be work_figures()'s live counts (a tuple) or None, not %R",
                   args[1]);
      return nullptr;
    }
    try {
      before.resize(static_cast<std::size_t>(PyTuple_GET_SIZE(args[1])));
    } catch (const std::bad_alloc&) {
      return PyErr_NoMemory();
    }
    for (std::size_t i = 0; i < before.size(); ++i) {
      if (!ToU64(PyTuple_GET_ITEM(args[1], static_cast<Py_ssize_t>(i)), "a live count",
                 &before[i])) {
        return nullptr;
      }
    }
  }
  // The arguments are good: the run is over (counted once, never below 0).
  for (std::int64_t n = g_in_progress.load(std::memory_order_relaxed);
       n > 0 &&
       !g_in_progress.compare_exchange_weak(n, n - 1, std::memory_order_relaxed);) {
  }
  std::array<std::int64_t, kFdKindCount> fd_counts{};
  std::vector<std::pair<std::string, std::int64_t>> objects;
  double heap = 0;
  try {
    if (count_fds) {
      // Each created fd is checked open (a system call), and a run whose
      // logs overflowed reads the whole table: without the GIL.
      const WithoutGil no_gil;
      fd_counts = CountApplicationFdsSince(ProcessFdTable(), mark);
    }
    if (count_objects) objects = ObjectRegistry::Instance().LiveChangesSince(before);
    heap = HeapTracker::Instance().LiveBytes();
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
  std::array<std::pair<std::size_t, std::int64_t>, kFdKindCount> by_kind;
  for (std::size_t k = 0; k < kFdKindCount; ++k) by_kind[k] = {k, fd_counts[k]};
  PyObject* fd_changes = ChangesOrNone(by_kind, [](std::size_t k) {
    return std::string_view(FdKindName(static_cast<FdKind>(k)));
  });
  if (fd_changes == nullptr) return nullptr;
  PyObject* object_changes = ChangesOrNone(
      objects, [](const std::string& name) { return std::string_view(name); });
  if (object_changes == nullptr) {
    Py_DECREF(fd_changes);
    return nullptr;
  }
  return StealTriple(fd_changes, object_changes, PyFloat_FromDouble(heap));
}

// set_work_counts(index, runs, fds, objects, bytes): a row set_work_row
// named already.
PyObject* SetWorkCounts(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (!ArgCount("set_work_counts", nargs, 5)) return nullptr;
  std::uint64_t index = 0;
  std::uint64_t runs = 0;
  std::int64_t fds = 0;
  std::int64_t objects = 0;
  if (!ToU64(args[0], "index", &index) || !ToU64(args[1], "runs", &runs) ||
      !ToI64(args[2], "fds", &fds) || !ToI64(args[3], "objects", &objects)) {
    return nullptr;
  }
  const double bytes = PyFloat_AsDouble(args[4]);
  if (bytes == -1.0 && PyErr_Occurred() != nullptr) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "bytes must be a float, not %R", args[4]);
    return nullptr;
  }
  ContainerStore::Instance().SetWorkCounts(index, runs, fds, objects, bytes);
  Py_RETURN_NONE;
}

// work_overlapped() -> runs that began while another was in progress.
PyObject* WorkOverlapped(PyObject* /*module*/, PyObject* /*unused*/) {
  return PyLong_FromUnsignedLongLong(g_overlapped.load(std::memory_order_relaxed));
}

// work_reset_runs(): no run in progress, none overlapped (a forked child).
PyObject* WorkResetRuns(PyObject* /*module*/, PyObject* /*unused*/) {
  g_in_progress.store(0, std::memory_order_relaxed);
  g_overlapped.store(0, std::memory_order_relaxed);
  Py_RETURN_NONE;
}

PyMethodDef g_work_methods[] = {
    {"work_figures", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(&WorkFigures)),
     METH_FASTCALL,
     "work_figures(fds, objects, heap)\n--\n\n"
     "As a unit of work begins: (the fd table's mark (creation sequence, close-log "
     "position, creation-log position), live tracked objects by type id, sampled live "
     "heap bytes), each None when its flag is false. With fds, the fd table logs "
     "creations and closes from then on, until work_end(..., release_logs=True)."},
    {"work_end", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(&WorkEnd)),
     METH_FASTCALL,
     "work_end(fds, live, release_logs)\n--\n\n"
     "What a unit of work left behind since work_figures(): ({fd kind: net change of "
     "the application's open fds since the mark `fds`} or None, {type: live objects now "
     "less `live`} or None, sampled live heap bytes now); nonzero changes only, None "
     "when there is none; a None argument skips its part. release_logs ends what "
     "work_figures(fds=True) began."},
    {"set_work_counts",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(&SetWorkCounts)),
     METH_FASTCALL,
     "set_work_counts(index, runs, fds, objects, bytes)\n--\n\n"
     "Update the figures of per-unit-of-work row `index`, which set_work_row wrote "
     "(an index it did not write is ignored)."},
    {"work_overlapped", &WorkOverlapped, METH_NOARGS,
     "work_overlapped()\n--\n\n"
     "Runs that work_figures() began while another run was in progress (between its "
     "work_figures() and its work_end())."},
    {"work_reset_runs", &WorkResetRuns, METH_NOARGS,
     "work_reset_runs()\n--\n\n"
     "Forget the runs in progress and the overlapped count (a forked child's runs are "
     "its own)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

void RegisterWorkBindings(py::module_& m) {
  for (PyMethodDef* def = g_work_methods; def->ml_name != nullptr; ++def) {
    m.add_object(def->ml_name, py::reinterpret_steal<py::object>(
                                   PyCFunction_NewEx(def, nullptr, m.ptr())));
  }
}

}  // namespace leakprobe
