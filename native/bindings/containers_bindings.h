// The container and census functions of leakprobe._native (set_containers,
// set_census, container_summary); see containers_bindings.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterContainerBindings(pybind11::module_& m);

}  // namespace leakprobe
