// The unit-of-work functions of leakprobe._native (work_figures, work_end,
// set_work_counts); see work_bindings.cpp and leakprobe/_work.py.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterWorkBindings(pybind11::module_& m);

}  // namespace leakprobe
