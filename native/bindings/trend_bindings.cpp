// Bindings of the trend state (leakprobe/trend/trend_state.h) and of the
// trend engine (leakprobe/trend/trend_engine.h): the sampler thread calls
// trend_sample() every trend interval (without the GIL); leakprobe.verdicts()
// and leakprobe.series() read the cached verdicts and the store; tests and
// benchmarks drive the engine directly with trend_evaluate().
#include "trend_bindings.h"

#include <pybind11/stl.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "leakprobe/runtime/error.h"
#include "leakprobe/trend/series_store.h"
#include "leakprobe/trend/trend_engine.h"
#include "leakprobe/trend/trend_state.h"
#include "without_gil.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

using trend::Point;
using trend::Resource;
using trend::TrendState;

constexpr double kInf = std::numeric_limits<double>::infinity();

Resource ParseResource(const std::string& name) {
  std::string known;
  for (std::size_t i = 0; i < trend::kResourceCount; ++i) {
    const auto resource = static_cast<Resource>(i);
    if (trend::ResourceName(resource) == name) return resource;
    known += (i == 0 ? "" : ", ") + std::string(trend::ResourceName(resource));
  }
  throw Error("unknown resource '" + name + "'; known: " + known);
}

py::object FiniteOrNone(double value) {
  if (!std::isfinite(value)) return py::none();
  return py::float_(value);
}

void PutVerdict(const trend::Verdict& v, py::dict* d) {
  (*d)["suspected"] = v.suspected;
  (*d)["reason"] = std::string(trend::ReasonName(v.reason));
  (*d)["growth_per_second"] = v.slope_per_second;
  (*d)["slope_low"] = v.slope_low;
  (*d)["slope_high"] = v.slope_high;
  (*d)["p_value"] = v.p_value;
  (*d)["confidence"] = v.confidence;
  (*d)["growth"] = v.growth;
  (*d)["window_seconds"] = v.window_seconds;
  (*d)["points"] = v.points;
  (*d)["last_value"] = v.last_value;
  (*d)["time_to_exhaustion_seconds"] = FiniteOrNone(v.time_to_exhaustion_seconds);
}

trend::TrendConfig MakeConfig(
    double interval, double warmup, std::uint64_t heap_sample_bytes,
    std::uint64_t native_sample_bytes, std::size_t heap_top_sites,
    std::size_t fd_top_sites,
    const std::map<std::string, std::pair<double, double>>& params,
    double memory_limit_bytes) {
  if (!(interval > 0) || !std::isfinite(interval)) {
    throw Error("trend interval must be a positive number of seconds");
  }
  if (!(warmup >= 0) || !std::isfinite(warmup)) {
    throw Error("trend warm-up must be a non-negative number of seconds");
  }
  trend::TrendConfig config;
  config.interval_seconds = interval;
  config.warmup_seconds = warmup;
  config.params = trend::DefaultResourceParams(heap_sample_bytes, native_sample_bytes);
  for (const auto& [name, effect] : params) {
    trend::ResourceParams& to =
        config.params[static_cast<std::size_t>(ParseResource(name))];
    to.min_growth = effect.first;
    to.min_relative_growth = effect.second;
  }
  config.heap_top_sites = heap_top_sites;
  config.fd_top_sites = fd_top_sites;
  config.memory_limit_bytes = memory_limit_bytes;
  return config;
}

void Start(double interval, double warmup, std::uint64_t heap_sample_bytes,
           std::uint64_t native_sample_bytes, std::size_t heap_top_sites,
           std::size_t fd_top_sites,
           const std::map<std::string, std::pair<double, double>>& params,
           double memory_limit_bytes) {
  const trend::TrendConfig config =
      MakeConfig(interval, warmup, heap_sample_bytes, native_sample_bytes, heap_top_sites,
                 fd_top_sites, params, memory_limit_bytes);
  const WithoutGil no_gil;  // reads the cgroup's memory.max
  TrendState::Instance().Start(config);
}

bool Sample() {
  const WithoutGil no_gil;  // a snapshot and every series' statistics
  return TrendState::Instance().Sample();
}

py::object Verdicts() {
  std::optional<trend::TrendSummary> summary;
  {
    const WithoutGil no_gil;
    summary = TrendState::Instance().Summary();
  }
  if (!summary) return py::none();
  py::list series;
  for (const trend::SeriesVerdict& s : summary->series) {
    py::dict d;
    d["resource"] = std::string(trend::ResourceName(s.resource));
    d["key"] = s.key;
    d["unit"] = s.unit;
    PutVerdict(s.verdict, &d);
    d["site"] = s.site ? py::object(py::str(*s.site)) : py::none();
    d["limit"] = FiniteOrNone(s.limit);
    series.append(d);
  }
  py::dict out;
  out["interval_seconds"] = summary->interval_seconds;
  out["warmup_seconds"] = summary->warmup_seconds;
  out["samples"] = summary->samples;
  out["last_sample_seconds"] = summary->last_sample_seconds;
  out["sample_duration_seconds"] = summary->sample_duration_seconds;
  out["series_count"] = summary->series_count;
  out["dropped_series"] = summary->dropped_series;
  out["memory_bytes"] = summary->memory_bytes;
  out["series"] = series;
  return out;
}

std::vector<std::pair<double, double>> Series(const std::string& resource,
                                              const std::string& key) {
  const Resource parsed = ParseResource(resource);
  std::vector<Point> points;
  {
    const WithoutGil no_gil;
    points = TrendState::Instance().Points(parsed, key);
  }
  std::vector<std::pair<double, double>> out;
  out.reserve(points.size());
  for (const Point& p : points) out.emplace_back(p.t, p.v);
  return out;
}

py::dict ParamsDict(const trend::TrendParams& p) {
  py::dict d;
  d["warmup_seconds"] = p.warmup_seconds;
  d["min_points"] = p.min_points;
  d["min_window_seconds"] = p.min_window_seconds;
  d["alpha"] = p.alpha;
  d["min_growth"] = p.min_growth;
  d["min_relative_growth"] = p.min_relative_growth;
  d["sampling_unit"] = p.sampling_unit;
  return d;
}

py::dict Params(double interval, double warmup, std::uint64_t heap_sample_bytes,
                std::uint64_t native_sample_bytes) {
  const trend::TrendConfig config =
      MakeConfig(interval, warmup, heap_sample_bytes, native_sample_bytes, 10, 10, {}, 0);
  py::dict out;
  for (std::size_t i = 0; i < trend::kResourceCount; ++i) {
    const auto resource = static_cast<Resource>(i);
    out[py::str(std::string(trend::ResourceName(resource)))] =
        ParamsDict(trend::ParamsFor(config, resource));
  }
  return out;
}

py::dict EvaluatePoints(const std::vector<std::pair<double, double>>& points,
                        double warmup_seconds, std::size_t min_points,
                        double min_window_seconds, double alpha, double min_growth,
                        double min_relative_growth, double sampling_unit, double limit) {
  std::vector<Point> converted;
  converted.reserve(points.size());
  for (std::size_t i = 0; i < points.size(); ++i) {
    if (i > 0 && points[i].first < points[i - 1].first) {
      throw Error("points must be in increasing time order (point " + std::to_string(i) +
                  " is earlier than the one before)");
    }
    converted.push_back({points[i].first, points[i].second});
  }
  trend::TrendParams params;
  params.warmup_seconds = warmup_seconds;
  params.min_points = min_points;
  params.min_window_seconds = min_window_seconds;
  params.alpha = alpha;
  params.min_growth = min_growth;
  params.min_relative_growth = min_relative_growth;
  params.sampling_unit = sampling_unit;
  trend::Verdict verdict;
  {
    const WithoutGil no_gil;
    verdict = trend::Evaluate(converted, params, limit);
  }
  py::dict d;
  PutVerdict(verdict, &d);
  return d;
}

}  // namespace

void RegisterTrendBindings(py::module_& m) {
  const trend::TrendParams defaults;
  m.def("trend_start", &Start, py::arg("interval"), py::arg("warmup"),
        py::arg("heap_sample_bytes") = 128 * 1024,
        py::arg("native_sample_bytes") = 256 * 1024, py::arg("heap_top_sites") = 10,
        py::arg("fd_top_sites") = 10,
        py::arg("params") = std::map<std::string, std::pair<double, double>>{},
        py::arg("memory_limit_bytes") = 0.0,
        "Start a new trend history: samples every `interval` seconds (the caller's "
        "sampler calls trend_sample), warm-up `warmup` seconds; `params` overrides "
        "a resource's (min_growth, min_relative_growth); memory_limit_bytes 0: "
        "cgroup memory.max, else MemTotal.");
  m.def(
      "trend_stop", [] { TrendState::Instance().Stop(); },
      "Forget the trend history; trend_verdicts() is None until the next start.");
  m.def(
      "trend_active", [] { return TrendState::Instance().running(); },
      "Whether the trend state is started.");
  m.def("trend_sample", &Sample,
        "Take a snapshot, append every series, evaluate them (without the GIL); "
        "False when not started.");
  m.def("trend_verdicts", &Verdicts,
        "The latest sample's verdicts and the store's figures, or None when not "
        "started.");
  m.def("trend_series", &Series, py::arg("resource"), py::arg("key"),
        "A series' history: (seconds since start, per-bucket minimum) pairs.");
  m.def("trend_params", &Params, py::arg("interval"), py::arg("warmup"),
        py::arg("heap_sample_bytes") = 128 * 1024,
        py::arg("native_sample_bytes") = 256 * 1024,
        "The engine parameters each resource's series get at this interval and "
        "warm-up, by resource name.");
  m.def("trend_evaluate", &EvaluatePoints, py::arg("points"),
        py::arg("warmup_seconds") = defaults.warmup_seconds,
        py::arg("min_points") = defaults.min_points,
        py::arg("min_window_seconds") = defaults.min_window_seconds,
        py::arg("alpha") = defaults.alpha, py::arg("min_growth") = defaults.min_growth,
        py::arg("min_relative_growth") = defaults.min_relative_growth,
        py::arg("sampling_unit") = defaults.sampling_unit, py::arg("limit") = kInf,
        "The trend engine's verdict on (t, value) points in increasing t order "
        "(for tests and benchmarks).");
}

}  // namespace leakprobe
