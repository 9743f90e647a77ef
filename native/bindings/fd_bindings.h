// The fd-tracking functions of leakprobe._native (fd_start, fd_stop,
// fd_active, fd_reconcile, open_fds, fd_counters); see fd_bindings.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterFdBindings(pybind11::module_& m);

}  // namespace leakprobe
