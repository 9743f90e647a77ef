// native/bindings/without_gil.h — releases the GIL for a scope, like
// py::gil_scoped_release, but lets the thread be ended while it takes the
// GIL back.
//
//   { const WithoutGil no_gil; TrendState::Instance().Sample(); }
//
// When the interpreter finalizes, a daemon thread (leakprobe's sampler)
// that takes the GIL back is ended by CPython with pthread_exit(), which
// unwinds the thread's stack (a "forced unwind"). py::gil_scoped_release
// takes the GIL back in a destructor, which is noexcept: the unwind reached
// it and std::terminate aborted the process at exit ("terminate called
// without an active exception", tests/test_cli.py's run-dir test, 1 exit in
// about 5). This destructor is noexcept(false): the unwind passes through
// it and pybind11's dispatcher, which rethrows abi::__forced_unwind, and the
// thread ends as CPython intends.
// Thread-safety: per thread; construct with the GIL held.
#pragma once

#include <Python.h>

namespace leakprobe {

class WithoutGil {
 public:
  WithoutGil() : state_(PyEval_SaveThread()) {}
  // NOLINTNEXTLINE(bugprone-exception-escape): the forced unwind must pass
  ~WithoutGil() noexcept(false) { PyEval_RestoreThread(state_); }
  WithoutGil(const WithoutGil&) = delete;
  WithoutGil& operator=(const WithoutGil&) = delete;
  WithoutGil(WithoutGil&&) = delete;
  WithoutGil& operator=(WithoutGil&&) = delete;

 private:
  PyThreadState* state_;
};

}  // namespace leakprobe
