// leakprobe._native's async attribution (leakprobe/_tasks.py): the stack
// that creates a library's task, and the coroutine wrapper that makes it
// the thread's task parent while each step of that task runs
// (StackTable's SetTaskParent, leakprobe/stacks/stack_table.h).
//
// SpawnedCoroutine is a C type rather than a Python class: asyncio's C Task
// steps a coroutine with PyIter_Send, which reaches am_send directly, so a
// step costs four thread-local stores (the task parent and the step's base
// frame) around the wrapped coroutine's own send; the Python class it replaces
// ran two Python frames and two calls into the module per step (about 17,000
// instructions per request of a FastAPI app under uvicorn, whose request tasks
// are library tasks: docs/benchmarks.md). Everything else a library or asyncio asks of a
// task's coroutine (cr_code, cr_frame, __qualname__, ...) is read from the
// wrapped coroutine. Every call here runs with the GIL held.
#include "task_bindings.h"

#include <cstdint>
#include <limits>
#include <string>

#include "leakprobe/stacks/python_frames.h"
#include "leakprobe/stacks/stack_table.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

// set_task_parent(stack_id): a METH_O function that CPython calls directly.
PyObject* SetTaskParentCall(PyObject* /*module*/, PyObject* arg) {
  const unsigned long long value = PyLong_AsUnsignedLongLong(arg);
  if (value == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr) {
    return nullptr;
  }
  if (value > std::numeric_limits<std::uint32_t>::max()) {
    const std::string message =
        "stack_id " + std::to_string(value) + " is not a stack id (below 2**32)";
    PyErr_SetString(PyExc_OverflowError, message.c_str());
    return nullptr;
  }
  return PyLong_FromUnsignedLong(SetTaskParent(static_cast<std::uint32_t>(value)));
}

PyMethodDef g_set_task_parent_def = {
    "set_task_parent", &SetTaskParentCall, METH_O,
    "set_task_parent(stack_id)\n--\n\nMake captures on this thread the running "
    "coroutine chain followed by stack `stack_id` (0: off); returns the previous "
    "parent, to restore."};

struct SpawnedObject {
  PyObject_HEAD PyObject* coro;  // the library's coroutine
  std::uint32_t parent;          // the stack that created the task
};

// Runs the wrapped coroutine's next step (send `value`) with the task's
// creating stack as the thread's task parent.
PySendResult SpawnedSend(PyObject* self, PyObject* value, PyObject** result) {
  auto* s = reinterpret_cast<SpawnedObject*>(self);
  const std::uint32_t previous = SetTaskParent(s->parent);
  const LeakprobeTaskStep step = LeakprobeTaskStepBegin();
  const PySendResult status = PyIter_Send(s->coro, value, result);
  LeakprobeTaskStepEnd(step);
  SetTaskParent(previous);
  return status;
}

// A step's outcome as the iterator protocol has it: the value yielded, or
// NULL with StopIteration(return value) (or the step's exception) set.
PyObject* AsIteratorResult(PySendResult status, PyObject* result) {
  if (status != PYGEN_RETURN) return result;  // the yielded value, or NULL
  if (result == Py_None) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
    return nullptr;
  }
  // StopIteration(value) made explicitly: a tuple or an exception as the
  // value must not be taken for the exception's arguments.
  PyObject* stop = PyObject_CallOneArg(PyExc_StopIteration, result);
  Py_DECREF(result);
  if (stop != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
  }
  return nullptr;
}

PyObject* SpawnedSendMethod(PyObject* self, PyObject* value) {
  PyObject* result = nullptr;
  const PySendResult status = SpawnedSend(self, value, &result);
  return AsIteratorResult(status, result);
}

PyObject* SpawnedNext(PyObject* self) { return SpawnedSendMethod(self, Py_None); }

PyObject* SpawnedThrow(PyObject* self, PyObject* args) {
  auto* s = reinterpret_cast<SpawnedObject*>(self);
  PyObject* method = PyObject_GetAttrString(s->coro, "throw");
  if (method == nullptr) return nullptr;
  const std::uint32_t previous = SetTaskParent(s->parent);
  const LeakprobeTaskStep step = LeakprobeTaskStepBegin();
  PyObject* result = PyObject_Call(method, args, nullptr);
  LeakprobeTaskStepEnd(step);
  SetTaskParent(previous);
  Py_DECREF(method);
  return result;
}

PyObject* SpawnedClose(PyObject* self, PyObject* /*unused*/) {
  return PyObject_CallMethod(reinterpret_cast<SpawnedObject*>(self)->coro, "close",
                             nullptr);
}

PyObject* SpawnedSelf(PyObject* self) { return Py_NewRef(self); }

PyObject* SpawnedSelfMethod(PyObject* self, PyObject* /*unused*/) {
  return Py_NewRef(self);
}

PyObject* SpawnedGetAttr(PyObject* self, PyObject* name) {
  PyObject* found = PyObject_GenericGetAttr(self, name);
  if (found != nullptr || !PyErr_ExceptionMatches(PyExc_AttributeError)) return found;
  PyErr_Clear();
  return PyObject_GetAttr(reinterpret_cast<SpawnedObject*>(self)->coro, name);
}

PyObject* SpawnedRepr(PyObject* self) {
  return PyObject_Repr(reinterpret_cast<SpawnedObject*>(self)->coro);
}

int SpawnedTraverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(reinterpret_cast<SpawnedObject*>(self)->coro);
  return 0;
}

int SpawnedClear(PyObject* self) {
  Py_CLEAR(reinterpret_cast<SpawnedObject*>(self)->coro);
  return 0;
}

void SpawnedDealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  SpawnedClear(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyMethodDef g_spawned_methods[] = {
    {"send", &SpawnedSendMethod, METH_O, "Run the next step with `value` sent in."},
    {"throw", &SpawnedThrow, METH_VARARGS, "Raise an exception into the coroutine."},
    {"close", &SpawnedClose, METH_NOARGS, "Close the wrapped coroutine."},
    {"__await__", &SpawnedSelfMethod, METH_NOARGS, "The wrapper itself."},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot g_spawned_slots[] = {
    {Py_tp_doc, const_cast<char*>("A library task's coroutine, each step of which runs "
                                  "with the task's creating stack as the thread's task "
                                  "parent (leakprobe._tasks).")},
    {Py_am_await, reinterpret_cast<void*>(&SpawnedSelf)},
    {Py_am_send, reinterpret_cast<void*>(&SpawnedSend)},
    {Py_tp_iter, reinterpret_cast<void*>(&SpawnedSelf)},
    {Py_tp_iternext, reinterpret_cast<void*>(&SpawnedNext)},
    {Py_tp_methods, g_spawned_methods},
    {Py_tp_getattro, reinterpret_cast<void*>(&SpawnedGetAttr)},
    {Py_tp_repr, reinterpret_cast<void*>(&SpawnedRepr)},
    {Py_tp_traverse, reinterpret_cast<void*>(&SpawnedTraverse)},
    {Py_tp_clear, reinterpret_cast<void*>(&SpawnedClear)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&SpawnedDealloc)},
    {0, nullptr}};

PyType_Spec g_spawned_spec = {
    "leakprobe._native.SpawnedCoroutine", static_cast<int>(sizeof(SpawnedObject)), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    g_spawned_slots};

PyTypeObject* g_spawned_type = nullptr;  // set at module init, never freed

py::object NewSpawned(py::handle coro, std::uint32_t parent) {
  auto* self = PyObject_GC_New(SpawnedObject, g_spawned_type);
  if (self == nullptr) throw py::error_already_set();
  self->coro = Py_NewRef(coro.ptr());
  self->parent = parent;
  PyObject_GC_Track(self);
  return py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(self));
}

}  // namespace

void RegisterTaskBindings(py::module_& m) {
  m.add_object("set_task_parent", py::reinterpret_steal<py::object>(PyCFunction_NewEx(
                                      &g_set_task_parent_def, nullptr, m.ptr())));
  m.def(
      "capture_stack_id",
      [](int max_frames) {
        // The hooks' path: a stack seen before is found by its raw hash in
        // the recent-stack cache, without the table's lock.
        return StackTable::Instance().CaptureAndIntern(max_frames);
      },
      py::arg("max_frames") = 32,
      "The stack table id of the calling thread's stack (0: no Python frame).");
  g_spawned_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_spawned_spec));
  if (g_spawned_type == nullptr) throw py::error_already_set();
  m.add_object("SpawnedCoroutine", reinterpret_cast<PyObject*>(g_spawned_type));
  m.def("spawned_coroutine", &NewSpawned, py::arg("coro"), py::arg("parent"),
        "coro wrapped so that each of its steps runs with stack `parent` as the "
        "thread's task parent.");
}

}  // namespace leakprobe
