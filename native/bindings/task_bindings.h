// The async-attribution functions of leakprobe._native (capture_stack_id,
// set_task_parent, spawned_coroutine, SpawnedCoroutine); see
// task_bindings.cpp and leakprobe/_tasks.py.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterTaskBindings(pybind11::module_& m);

}  // namespace leakprobe
