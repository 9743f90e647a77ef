// The native-memory functions of leakprobe._native (native_start,
// native_stop, native_freeze, native_summary, native_stacks,
// memory_components); see native_bindings.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterNativeBindings(pybind11::module_& m);

}  // namespace leakprobe
