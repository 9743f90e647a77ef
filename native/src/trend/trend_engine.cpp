// Evaluate(): one series in, one verdict out (leakprobe/trend/trend_engine.h).
// The steps, in order (docs/trends.md explains each):
//   1. drop points with a NaN or infinite t or v, or a t not after the
//      previous kept point's;
//   2. drop the warm-up (points before the first t + warmup_seconds);
//   3. no verdict (kWarmup) below min_points or min_window_seconds;
//   4. reduce to kMaxEvaluatedPoints per-window minima (the GC sawtooth
//      rule: the floor after collections is what a leak raises);
//   5. segments: the whole window, its last half, its last quarter (those
//      with min_points and min_window_seconds), each at alpha / count;
//   6. per segment: Theil–Sen slope; Mann–Kendall S, its tie-corrected
//      variance times max(Hamed–Rao factor, AR(1) floor) unless the series
//      moves mostly one way, z against Student's t(n / factor - 2); Sen's
//      interval;
//   7. a significant increase is a plateau when most pairs see no rise
//      (slope 0), when the recent third slowed down significantly against
//      the two thirds before it (and does not still grow on its own at a
//      rate that would reach the minimum effect), or when one jump far
//      above the noise (over up to 3 samples) makes it and the rest would
//      not be flagged; too small below the minimum effect; else a leak
//      (kGrowing). A significant decrease of the
//      whole window is kShrinking; anything else kFlat;
//   8. time to exhaustion for a leak with a finite limit.
#include "leakprobe/trend/trend_engine.h"

#include <algorithm>
#include <cmath>
#include <functional>
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
// Times beyond this are scaled before differences are taken.
constexpr double kHugeTime = 1e150;

// Overflow (values near DBL_MAX, times microseconds apart) saturates.
double Finite(double x) {
  if (std::isnan(x)) return 0;
  return std::clamp(x, -kLargest, kLargest);
}

// The recent part of a window, whose growth is compared with the part
// before it: a leak keeps its slope to the end, growth toward a bound slows
// down.
constexpr std::size_t kRecentFraction = 3;  // the last third
constexpr std::size_t kRecentMinPoints = 6;
// Level of the one-sided test "the recent part grows slower than the part
// before it" that makes a significant increase a plateau.
constexpr double kPlateauAlpha = 0.05;
// ... unless the recent part still grows on its own at this level.
constexpr double kStillGrowingAlpha = 0.01;
// ... and only when the recent part's own slope is below this share of the
// slope before it. The test alone called an exact count (+1 fd a sample,
// sample times drifting by a millisecond) a plateau: detrended by the
// earlier slope, its last third fell by a few hundredths of an fd, and that
// was significant; its slope was 99.9 % of the earlier one.
constexpr double kFlattenedShare = 0.5;
// A jump is a step when it is this many noise sds high (the noise measured
// on the differences, robustly) and at least half the segment's rise.
constexpr double kStepNoiseSds = 6;
constexpr double kStepShare = 0.5;
constexpr std::size_t kStepSidePoints = 5;
// ... and a step is a rise over at most this many consecutive samples.
constexpr std::size_t kStepMaxSamples = 3;
// A sampled estimate (TrendParams::sampling_unit) must rise by this many
// standard deviations of what sampling alone moves it by.
constexpr double kSamplingSds = 4;

double TheilSen(std::span<const Point> pts) {
  std::vector<double> slopes = detail::PairwiseSlopes(pts);
  return detail::Median(slopes);
}

// Whether growth at `slope` (normalized units) over the whole segment
// would reach the minimum effect: what a rise left over by the plateau
// tests must show to still count (a leak at that rate alone would be
// too small otherwise).
using MeetsEffect = std::function<bool(double slope)>;

// A sampled estimate rises by one sample's worth at a time, at random (a
// Poisson process), so a recent third can hold fewer samples than the rate
// before it promises by chance alone, and look slower: a steady leak of
// about 2.5 samples a second (16 KiB blocks at 20 a second, 128 KiB mean)
// was called a plateau in 2.2% of 20-second windows (one run of the
// scenario suite in CI). Its slowdown must also be a shortfall of samples
// beyond chance: given the samples of the whole segment, those of the
// recent part are binomial, with the recent part's share of the time; too
// few at this level. (0.05 still called 1.3% of those leaks plateaus,
// 0.01 0.45%; a level of 0.001 made caches filling 2 MiB within the window
// leaks 33% of the time, 0.01 not once more than before.)
constexpr double kFewerSamplesAlpha = 0.01;

// Whether the points from `from` on hold significantly fewer samples (of
// `unit` each, in the series' units) than their share of the time.
bool FewerSamples(std::span<const Point> pts, std::size_t from, double unit) {
  const double early = std::max(0.0, (pts[from].v - pts.front().v) / unit);
  const double late = std::max(0.0, (pts.back().v - pts[from].v) / unit);
  const double total = early + late;
  const double share = (pts.back().t - pts[from].t) / (pts.back().t - pts.front().t);
  if (!(total > 0) || !(share > 0 && share < 1)) return false;
  const double z = (share * total - late) / std::sqrt(total * share * (1 - share));
  return z > detail::NormalQuantile(1 - kFewerSamplesAlpha);
}

// The recent third, detrended by the slope of the two thirds before it,
// decreases significantly: growth slowed down (a bound reached, a step).
// For a sampled estimate (`unit`: one sample's worth, 0 when exact), by
// more samples than chance explains.
bool Flattened(std::span<const Point> pts, const MeetsEffect& meets, double unit) {
  const std::size_t n = pts.size();
  const std::size_t k = std::max(n / kRecentFraction, kRecentMinPoints);
  if (n < k + kRecentMinPoints) return false;
  const double before = TheilSen(pts.first(n - k));
  if (!(before > 0)) return false;
  std::vector<Point> recent(pts.end() - static_cast<std::ptrdiff_t>(k), pts.end());
  // Nearly as fast as before: the growth did not slow down, however
  // significant a tiny difference may test.
  const double own = TheilSen(recent);
  if (own >= kFlattenedShare * before) return false;
  if (unit > 0 && !FewerSamples(pts, n - k, unit)) return false;
  // Still growing on its own, clearly, and at a rate that would be flagged
  // on its own: slower, but not flattened. (A first task's imports and
  // connections, a step of 18 MiB, then an allocator's slow creep: the
  // creep grows significantly, but a leak of its size would be too small.)
  if (meets(own) &&
      detail::MannKendallTest(recent, own).p_increasing < kStillGrowingAlpha) {
    return false;
  }
  for (Point& p : recent) p.v -= before * p.t;
  return detail::MannKendallTest(recent, TheilSen(recent)).p_decreasing < kPlateauAlpha;
}

// One jump far above the noise makes most of the rise, and without it the
// series has no significant increase at `alpha`: a one-off step.
bool OneStep(std::span<const Point> pts, double slope, double alpha,
             const MeetsEffect& meets) {
  const std::size_t n = pts.size();
  if (n < 3) return false;
  std::vector<double> diffs(n - 1);
  for (std::size_t i = 1; i < n; ++i) diffs[i - 1] = pts[i].v - pts[i - 1].v;
  std::vector<double> scratch = diffs;
  const double centre = detail::Median(scratch);
  std::vector<double> deviations(diffs.size());
  for (std::size_t i = 0; i < diffs.size(); ++i) {
    deviations[i] = std::fabs(diffs[i] - centre);
  }
  // MAD * 1.4826 estimates the differences' sd, sqrt(2) times the noise's.
  const double noise = 1.4826 * detail::Median(deviations) / std::sqrt(2.0);
  // The largest rise: one difference, or a run of up to kStepMaxSamples
  // differences that are each a jump far above the noise (a worker's first
  // task importing and connecting for a second or two). A ramp of ordinary
  // differences (a GC sawtooth's) is not a step, however long.
  std::size_t at = 0;
  std::size_t len = 1;
  double jump = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i + 1 < n; ++i) {
    double rise = 0;
    for (std::size_t k = 1; k <= kStepMaxSamples && i + k < n; ++k) {
      const double d = diffs[i + k - 1];
      if (k > 1 && !(d > kStepNoiseSds * noise)) break;
      rise += d;
      if (rise > jump) {
        jump = rise;
        at = i;
        len = k;
      }
    }
  }
  const double rise = slope * (pts.back().t - pts.front().t);
  if (!(jump > kStepNoiseSds * noise) || !(jump >= kStepShare * rise)) return false;
  // The step's height: the median of the few points after it less that of
  // the few before (a single difference carries two points' noise).
  const std::size_t end = at + len;  // the first point after the step
  const std::size_t side = std::min({kStepSidePoints, at + 1, n - end});
  std::vector<double> before;
  std::vector<double> after;
  for (std::size_t i = 0; i < side; ++i) {
    before.push_back(pts[at - i].v);
    after.push_back(pts[end + i].v);
  }
  const double height = detail::Median(after) - detail::Median(before);
  // Without the step: the points after it lowered by its height, those
  // inside it (mid-step) left out.
  std::vector<Point> without(pts.begin(),
                             pts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  for (std::size_t i = end; i < n; ++i) {
    without.push_back(Point{pts[i].t, pts[i].v - height});
  }
  const double rest = TheilSen(without);
  // What is left must be a significant rise big enough to flag on its own.
  return !(detail::MannKendallTest(without, rest).p_increasing < alpha && rest > 0 &&
           meets(rest));
}

// A series that moves mostly one way: its net change is at least this
// share of its total variation (the sum of |v[i+1] - v[i]|).
constexpr double kMonotoneShare = 0.5;

// Counts that only ever go up (fds leaked one at a time) are a random walk
// with drift: detrended, they look strongly autocorrelated, and the
// correction would take the drift for noise. When the net change is most
// of the movement, the autocorrelation is the trend itself, and the test
// uses the variance under independence.
bool MostlyOneWay(std::span<const Point> pts) {
  double total = 0;
  for (std::size_t i = 1; i < pts.size(); ++i) {
    total += std::fabs(pts[i].v - pts[i - 1].v);
  }
  const double net = std::fabs(pts.back().v - pts.front().v);
  return total > 0 && net >= kMonotoneShare * total;
}

// The rise that sampling alone can show, by chance, over a segment of an
// estimate made of sampled blocks each worth about `unit` (a Poisson count
// of samples). Two estimates differ by the samples born and died between
// them, with a variance of unit times their worth: at least the growth
// itself (a leak's new blocks), at most both levels (every block replaced:
// a cache that turned over, however bounded, 2 * level + growth), and in
// between about the segment's total variation (the sum of |v[i+1] - v[i]|:
// each sample's birth and death, as seen at the points). From 0, this asks
// for kSamplingSds^2 samples' worth.
double SamplingNoise(double unit, double level, double growth, double variation) {
  if (!(unit > 0)) return 0;
  const double rise = std::max(growth, 0.0);
  const double replaced = std::clamp(variation, rise, 2 * std::max(level, 0.0) + rise);
  return Finite(kSamplingSds * std::sqrt(unit * replaced));
}

// One segment's statistics and what they say at level `alpha`.
struct Judgement {
  Reason reason = Reason::kFlat;
  double slope = 0;  // normalized units (see Evaluate)
  detail::SlopeInterval ci;
  detail::MannKendall mk;
  double level = 0;  // fitted value at the segment's first point
};

Judgement Judge(std::span<const Point> pts, double alpha, const TrendParams& params,
                double scale) {
  Judgement j;
  std::vector<double> slopes = detail::PairwiseSlopes(pts);
  j.slope = detail::Median(slopes);
  j.mk = detail::MannKendallTest(pts, j.slope);
  if (MostlyOneWay(pts)) j.mk = detail::WithoutCorrection(j.mk);
  j.ci = detail::SenInterval(slopes, j.mk.var_corrected,
                             detail::StudentQuantile(1 - alpha, j.mk.df));
  // The fitted level at the segment's start: median of v - slope * t.
  std::vector<double> intercepts(pts.size());
  for (std::size_t i = 0; i < pts.size(); ++i) {
    intercepts[i] = pts[i].v - j.slope * (pts[i].t - pts.front().t);
  }
  j.level = detail::Median(intercepts);
  if (j.mk.p_increasing < alpha) {
    const double level = Finite(j.level * scale);
    // slope * span: the time scale, if any, cancels.
    double variation = 0;
    for (std::size_t i = 1; i < pts.size(); ++i) {
      variation += std::fabs(pts[i].v - pts[i - 1].v);
    }
    variation = Finite(variation * scale);
    const MeetsEffect meets = [&](double slope) {
      const double growth = Finite(slope * scale * (pts.back().t - pts.front().t));
      return growth >= params.min_growth &&
             growth >= params.min_relative_growth * std::fabs(level) &&
             growth >= SamplingNoise(params.sampling_unit, level, growth, variation);
    };
    // A significant rise that most pairs of points do not see (slope 0:
    // a step, a fill then a long stay) did not go on.
    if (!(j.slope > 0) || Flattened(pts, meets, params.sampling_unit / scale) ||
        OneStep(pts, j.slope, alpha, meets)) {
      j.reason = Reason::kPlateau;
    } else if (!meets(j.slope)) {
      j.reason = Reason::kTooSmall;
    } else {
      j.reason = Reason::kGrowing;
    }
  } else if (j.mk.p_decreasing < alpha && j.slope < 0) {
    j.reason = Reason::kShrinking;
  }
  return j;
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
  const double window = Finite(clean.back().t - clean.front().t);
  verdict.window_seconds = window;
  // Evaluated on per-window minima, moved to t = 0 and scaled to |v| <= 1
  // (and, for times near DBL_MAX, to |t| <= 1) so that no difference
  // overflows; slopes and spans are scaled back at the end.
  std::vector<Point> pts = detail::WindowMinima(clean, kMaxEvaluatedPoints);
  verdict.points = pts.size();
  if (pts.size() < std::max<std::size_t>(params.min_points, 3) ||
      !(window >= params.min_window_seconds)) {
    return verdict;
  }
  double scale = 0;
  for (const Point& p : pts) scale = std::max(scale, std::fabs(p.v));
  if (!(scale > 0)) scale = 1;
  const double time_scale =
      std::max({1.0, std::fabs(pts.front().t), std::fabs(pts.back().t)}) > kHugeTime
          ? std::max(std::fabs(pts.front().t), std::fabs(pts.back().t))
          : 1.0;
  const double t0 = pts.front().t / time_scale;
  for (Point& p : pts) p = Point{p.t / time_scale - t0, p.v / scale};
  const double rate_scale = scale / time_scale;  // normalized slope -> per second

  // The whole window, its last half and its last quarter (those with
  // min_points and min_window_seconds), each at alpha / their number
  // (Bonferroni): a leak that starts late dominates a recent segment.
  const double alpha =
      std::isfinite(params.alpha) ? std::clamp(params.alpha, 1e-12, 0.5) : 0.01;
  // The whole window always (it passed the checks above on the points before
  // reduction, whose span can be a little longer than the minima's).
  std::vector<std::size_t> starts = {0};
  for (const std::size_t from : {pts.size() / 2, pts.size() * 3 / 4}) {
    if (pts.size() - from >= std::max<std::size_t>(params.min_points, 3) &&
        Finite((pts.back().t - pts[from].t) * time_scale) >= params.min_window_seconds) {
      starts.push_back(from);
    }
  }
  const double segments = static_cast<double>(starts.size());
  std::vector<Judgement> judged;
  judged.reserve(starts.size());
  for (const std::size_t from : starts) {
    judged.push_back(
        Judge(std::span(pts).subspan(from), alpha / segments, params, scale));
  }
  // A leak in any segment: the longest, unless a more recent one grows
  // significantly faster (its interval's low end above the slope so far: a
  // leak that started late, whose current rate is the recent one). Else the
  // whole window's significant increase (plateau, too small), else a recent
  // one's, else the whole window's verdict.
  std::size_t chosen = 0;
  bool found = false;
  for (std::size_t i = 0; i < judged.size(); ++i) {
    if (judged[i].reason != Reason::kGrowing) continue;
    if (!found || judged[i].ci.low > judged[chosen].slope) chosen = i;
    found = true;
  }
  for (std::size_t i = 0; i < judged.size() && !found; ++i) {
    if (judged[i].reason == Reason::kPlateau || judged[i].reason == Reason::kTooSmall) {
      chosen = i;
      found = true;
    }
  }
  const Judgement& j = judged[chosen];
  double p_min = 1;
  for (const Judgement& other : judged) p_min = std::min(p_min, other.mk.p_increasing);
  const double span_seconds =
      chosen == 0 ? window : Finite((pts.back().t - pts[starts[chosen]].t) * time_scale);
  verdict.reason = j.reason;
  verdict.suspected = j.reason == Reason::kGrowing;
  verdict.slope_per_second = Finite(j.slope * rate_scale);
  verdict.slope_low = Finite(j.ci.low * rate_scale);
  verdict.slope_high = Finite(j.ci.high * rate_scale);
  verdict.p_value = std::min(1.0, p_min * segments);
  verdict.confidence = 1 - verdict.p_value;
  verdict.growth = Finite(verdict.slope_per_second * span_seconds);
  verdict.window_seconds = span_seconds;
  verdict.points = pts.size() - starts[chosen];
  if (verdict.suspected && std::isfinite(limit) && verdict.slope_per_second > 0) {
    verdict.time_to_exhaustion_seconds =
        std::max(0.0, (limit - verdict.last_value) / verdict.slope_per_second);
  }
  return verdict;
}

}  // namespace leakprobe::trend
