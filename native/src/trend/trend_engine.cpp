// Evaluate(): one series in, one verdict out (leakprobe/trend/trend_engine.h).
// The steps, in order (docs/trends.md explains each):
//   1. drop points with a NaN or infinite t or v, or a t not after the
//      previous kept point's;
//   2. drop the warm-up (points before the first t + warmup_seconds);
//   3. no verdict (kWarmup) below min_points or min_window_seconds;
//   4. reduce to kMaxEvaluatedPoints per-window minima (the GC sawtooth
//      rule: the floor after collections is what a leak raises);
//   5. Theil–Sen slope, Mann–Kendall S with the tie-corrected variance
//      times the Hamed–Rao autocorrelation factor, Sen's interval;
//   6. a significant increase is a plateau when the recent third of the
//      window grows at less than half the window's slope, too small below
//      the minimum effect, else a leak (kGrowing); a significant decrease
//      is kShrinking; anything else kFlat;
//   7. time to exhaustion for a leak with a finite limit.
#include "leakprobe/trend/trend_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "leakprobe/trend/trend_stats.h"

namespace leakprobe::trend {

std::string_view ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kWarmup:
      return "warmup";
    case Reason::kGrowing:
      return "growing";
    case Reason::kFlat:
      return "flat";
    case Reason::kTooSmall:
      return "too_small";
    case Reason::kPlateau:
      return "plateau";
    case Reason::kShrinking:
      return "shrinking";
  }
  return "unknown";
}

namespace {

constexpr double kLargest = std::numeric_limits<double>::max();

// Overflow (values near DBL_MAX, times microseconds apart) saturates.
double Finite(double x) {
  if (std::isnan(x)) return 0;
  return std::clamp(x, -kLargest, kLargest);
}

// The part of the window whose slope is compared with the whole one.
constexpr std::size_t kRecentFraction = 3;  // the last third
constexpr std::size_t kRecentMinPoints = 4;
// A leak keeps its slope to the end; growth toward a bound slows down.
constexpr double kPlateauRatio = 0.5;

bool Flattened(std::span<const Point> pts, double slope) {
  const std::size_t n = pts.size();
  const std::size_t k = std::min(n, std::max(n / kRecentFraction, kRecentMinPoints));
  const std::vector<double> recent = detail::PairwiseSlopes(pts.subspan(n - k));
  return detail::SortedMedian(recent) < kPlateauRatio * slope;
}

}  // namespace

Verdict Evaluate(std::span<const Point> points, const TrendParams& params, double limit) {
  Verdict verdict;
  std::vector<Point> clean;
  clean.reserve(points.size());
  for (const Point& p : points) {
    if (!std::isfinite(p.t) || !std::isfinite(p.v)) continue;
    if (!clean.empty() && !(p.t > clean.back().t)) continue;
    clean.push_back(p);
  }
  if (clean.empty()) return verdict;
  verdict.last_value = clean.back().v;
  const double warmup =
      std::isfinite(params.warmup_seconds) ? std::max(params.warmup_seconds, 0.0) : 0.0;
  const double start = clean.front().t + warmup;
  clean.erase(clean.begin(), std::find_if(clean.begin(), clean.end(),
                                          [&](const Point& p) { return p.t >= start; }));
  if (clean.empty()) return verdict;
  const double window = clean.back().t - clean.front().t;
  verdict.window_seconds = window;
  // Evaluated on per-window minima, moved to t = 0 and scaled to |v| <= 1
  // so that no difference overflows; slopes are scaled back at the end.
  std::vector<Point> pts = detail::WindowMinima(clean, kMaxEvaluatedPoints);
  verdict.points = pts.size();
  if (pts.size() < std::max<std::size_t>(params.min_points, 3) ||
      !(window >= params.min_window_seconds)) {
    return verdict;
  }
  const double t0 = pts.front().t;
  double scale = 0;
  for (const Point& p : pts) scale = std::max(scale, std::fabs(p.v));
  if (!(scale > 0)) scale = 1;
  for (Point& p : pts) p = Point{p.t - t0, p.v / scale};

  const std::vector<double> slopes = detail::PairwiseSlopes(pts);
  const double slope = detail::SortedMedian(slopes);
  const detail::MannKendall mk = detail::MannKendallTest(pts, slope);
  const double alpha =
      std::isfinite(params.alpha) ? std::clamp(params.alpha, 1e-12, 0.5) : 0.01;
  const detail::SlopeInterval ci =
      detail::SenInterval(slopes, mk.var_corrected, detail::NormalQuantile(1 - alpha));

  verdict.slope_per_second = Finite(slope * scale);
  verdict.slope_low = Finite(ci.low * scale);
  verdict.slope_high = Finite(ci.high * scale);
  verdict.p_value = mk.p_increasing;
  verdict.confidence = 1 - mk.p_increasing;
  verdict.growth = Finite(verdict.slope_per_second * window);

  if (mk.p_increasing < alpha && slope > 0) {
    // The fitted level at the window's start: median of v - slope * t.
    std::vector<double> intercepts(pts.size());
    for (std::size_t i = 0; i < pts.size(); ++i)
      intercepts[i] = pts[i].v - slope * pts[i].t;
    std::sort(intercepts.begin(), intercepts.end());
    const double level = Finite(detail::SortedMedian(intercepts) * scale);
    const bool large_enough =
        verdict.growth >= params.min_growth &&
        verdict.growth >= params.min_relative_growth * std::fabs(level);
    if (Flattened(pts, slope)) {
      verdict.reason = Reason::kPlateau;
    } else if (!large_enough) {
      verdict.reason = Reason::kTooSmall;
    } else {
      verdict.reason = Reason::kGrowing;
      verdict.suspected = true;
    }
  } else if (mk.p_decreasing < alpha && slope < 0) {
    verdict.reason = Reason::kShrinking;
  } else {
    verdict.reason = Reason::kFlat;
  }
  if (verdict.suspected && std::isfinite(limit) && verdict.slope_per_second > 0) {
    verdict.time_to_exhaustion_seconds =
        std::max(0.0, (limit - verdict.last_value) / verdict.slope_per_second);
  }
  return verdict;
}

}  // namespace leakprobe::trend
