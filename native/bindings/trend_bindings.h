// The trend functions of leakprobe._native (trend_start, trend_stop,
// trend_active, trend_sample, trend_verdicts, trend_series, trend_params,
// trend_evaluate); see trend_bindings.cpp.
#pragma once

#include <pybind11/pybind11.h>

namespace leakprobe {

void RegisterTrendBindings(pybind11::module_& m);

}  // namespace leakprobe
