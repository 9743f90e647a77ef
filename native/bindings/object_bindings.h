// The tracked-object functions of leakprobe._native (TrackedType,
// object_register_type, objects_start, objects_stop, objects_active,
// object_summary, object_records); see object_bindings.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterObjectBindings(pybind11::module_& m);

}  // namespace leakprobe
