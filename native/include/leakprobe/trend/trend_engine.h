// leakprobe/trend/trend_engine.h — tells a leak from honest growth in one
// time series: robust slope (Theil–Sen), a trend test that copes with ties
// and autocorrelation (Mann–Kendall with a variance correction), warm-up
// excluded, GC sawtooth handled (the trend of per-window minima), growth
// that flattens at a bound is not a leak, a minimum effect size, and the
// time until the series reaches a real limit.
//
//   TrendParams params;                     // defaults: production settings
//   Verdict v = Evaluate(points, params, /*limit=*/rlimit_nofile);
//   if (v.suspected) ... v.slope_per_second, v.time_to_exhaustion_seconds
//
// Thread-safety: pure functions of their arguments; call from any thread.
// Cold path only (allocates; O(n^2) in the points it is given, which
// callers bound: see kMaxEvaluatedPoints).
#pragma once

#include <cstddef>
#include <limits>
#include <span>
#include <string_view>

namespace leakprobe::trend {

// One observation: seconds on a monotonic clock (any origin) and the value
// in base units (bytes, fds, objects, entries, threads).
struct Point {
  double t = 0;
  double v = 0;
};

// Evaluate() reduces longer inputs to at most this many points (per-window
// minima of consecutive, equal-count windows) before the O(n^2) statistics.
inline constexpr std::size_t kMaxEvaluatedPoints = 240;

struct TrendParams {
  // Points earlier than (first point's t + warmup_seconds) are ignored.
  double warmup_seconds = 300;
  // No verdict before this many points and this span remain after warm-up.
  std::size_t min_points = 12;
  double min_window_seconds = 600;
  // Significance level of the trend test (one-sided, increasing).
  double alpha = 0.01;
  // Minimum effect: the fitted growth over the evaluated window must reach
  // both this absolute amount (base units) and this fraction of the level
  // at the start of the window (0: no relative condition).
  double min_growth = 0;
  double min_relative_growth = 0;
  // Values that are estimates made of sampled blocks (the heap), each worth
  // about this much (base units; 0: exact counts): the growth must also
  // exceed what sampling alone moves such an estimate by, 4 sds of
  // sqrt(sampling_unit * (2 * level + growth)) (docs/trends.md step 9).
  double sampling_unit = 0;
};

// What Evaluate() concluded, and why.
enum class Reason {
  kWarmup,     // not enough points or span after warm-up: no verdict yet
  kGrowing,    // suspected: significant, large enough, not flattening
  kFlat,       // no significant increasing trend
  kTooSmall,   // significant but below the minimum effect size
  kPlateau,    // grew, then flattened (a bound reached): honest growth
  kShrinking,  // a significant decreasing trend
};
std::string_view ReasonName(Reason reason);  // "warmup", "growing", ...

struct Verdict {
  bool suspected = false;  // a leak: reason == kGrowing
  Reason reason = Reason::kWarmup;
  // Theil–Sen slope of the evaluated (minima) series, base units/second,
  // with its confidence interval at the test's level (see Evaluate).
  double slope_per_second = 0;
  double slope_low = 0;
  double slope_high = 0;
  double p_value = 1;         // one-sided, of the corrected Mann–Kendall test
  double confidence = 0;      // 1 - p_value
  double growth = 0;          // slope * window_seconds
  double window_seconds = 0;  // span evaluated (after warm-up)
  std::size_t points = 0;     // points evaluated (after reduction)
  double last_value = 0;
  // Seconds until the fitted line reaches `limit` from the last value; +inf
  // when not growing or no limit is known.
  double time_to_exhaustion_seconds = std::numeric_limits<double>::infinity();
};

// `points` must be in increasing t order. `limit` is the value at which the
// resource runs out (RLIMIT_NOFILE for fds, memory.max or RAM for bytes, a
// pool's size), or +inf when there is none.
//
// Bad points are skipped, not fatal: a point whose t or v is NaN or
// infinite, or whose t is not after the previous kept point's, is ignored
// (the verdict is that of the remaining points). Any other input, however
// short, constant or large, gives finite fields (slopes saturate at
// +-DBL_MAX; time_to_exhaustion_seconds is finite or +inf).
//
// How (docs/trends.md): the warm-up is dropped, the rest reduced to per-
// window minima, then the whole window, its last half and its last quarter
// (those that have min_points and min_window_seconds) are each tested at
// alpha / (their number). A segment is kGrowing when its Mann–Kendall test
// (tie-corrected variance times max(Hamed–Rao factor, AR(1) floor), z
// against Student's t with the effective sample size) is significant, its
// recent third has not slowed down significantly (plateau), the rise is not
// one step, and the growth reaches the minimum effect. The verdict's slope,
// interval, growth, window and points are the deciding segment's: the
// longest growing one, or a more recent one whose interval lies above its
// slope (a leak that started late). p_value is the smallest segment p-value
// times the number of segments (at most 1), for an increase, whatever the
// reason; the interval is two-sided at 1 - 2 * alpha / segments, so that
// slope_low > 0 goes with a significant increase.
Verdict Evaluate(std::span<const Point> points, const TrendParams& params,
                 double limit = std::numeric_limits<double>::infinity());

}  // namespace leakprobe::trend
