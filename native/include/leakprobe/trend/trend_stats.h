// leakprobe/trend/trend_stats.h — the statistics under Evaluate()
// (trend_engine.h), apart so that tests can check each one on its own:
// per-window minima, Theil–Sen slope and its confidence interval,
// Mann–Kendall's S with the tie-corrected variance and the Hamed–Rao (1998)
// autocorrelation correction, and the normal distribution.
//
//   std::vector<double> slopes = detail::PairwiseSlopes(points);
//   detail::MannKendall mk = detail::MannKendallTest(points, Median(slopes));
//
// Thread-safety: pure functions of their arguments. Inputs are finite, with
// strictly increasing t (Evaluate() cleans them first).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "leakprobe/trend/trend_engine.h"

namespace leakprobe::trend::detail {

// Standard normal distribution function, and its inverse for p in (0, 1)
// (clamped to +-40 outside).
double NormalCdf(double z);
double NormalQuantile(double p);
// Student's t with df degrees of freedom: P(T > t), and its quantile.
double StudentUpperTail(double t, double df);
double StudentQuantile(double p, double df);

// At most max_points points: the input split into that many consecutive
// windows of equal count (+-1), each replaced by its minimum (at the time
// the minimum was seen). Shorter inputs are returned as they are.
std::vector<Point> WindowMinima(std::span<const Point> points, std::size_t max_points);

// The slopes of every pair (i < j), n(n-1)/2 of them, unordered.
std::vector<double> PairwiseSlopes(std::span<const Point> points);
// The k-th smallest (0-based, clamped) and the median of values (0 when
// empty), in linear time; both reorder `values`.
double KthSmallest(std::vector<double>& values, std::size_t k);
double Median(std::vector<double>& values);

// Ranks 1..n, ties given their average rank.
std::vector<double> AverageRanks(std::span<const double> values);

struct MannKendall {
  std::size_t n = 0;           // points
  double s = 0;                // sum over i < j of sign(v_j - v_i)
  double var_independent = 0;  // Var(S) under independence, tie-corrected
  double correction = 1;       // max(1, Hamed–Rao n/n*, its AR(1) floor)
  double var_corrected = 0;    // var_independent * correction
  double z = 0;                // with continuity correction
  double df = 0;               // n / correction - 2 (at least 1)
  double p_increasing = 1;     // one-sided, z against Student's t(df)
  double p_decreasing = 1;     // one-sided
};
// Mann–Kendall test; the Hamed–Rao factor is computed on the ranks of the
// series detrended by `slope` (the Theil–Sen estimate).
MannKendall MannKendallTest(std::span<const Point> points, double slope);
// The same test with another variance factor (1: under independence).
MannKendall WithCorrection(MannKendall mk, double correction);
MannKendall WithoutCorrection(const MannKendall& mk);

// Hamed–Rao's variance factor n/n* = 1 + 2/(n(n-1)(n-2)) *
// sum_k (n-k)(n-k-1)(n-k-2) rho_k over the lags whose rank autocorrelation
// rho_k is significant at 5% (|rho_k| > 1.96/sqrt(n)); not clamped here
// (1 below 5 points). When ar1_floor is given, it receives the same factor
// for an AR(1) whose coefficient is the lag-1 rank autocorrelation,
// corrected for its small-sample bias: rho_k = phi^k at every lag, which
// the significance cut and the estimates' bias leave out for strongly
// autocorrelated series (MannKendallTest uses the larger of the two).
double HamedRaoFactor(std::span<const Point> points, double slope,
                      double* ar1_floor = nullptr);

// Sen's confidence interval of the slope: the pairwise slopes of 1-based
// ranks (N - z * sqrt(var_s)) / 2 and (N + z * sqrt(var_s)) / 2 + 1
// (rounded, clamped to 1..N). Reorders `slopes`.
struct SlopeInterval {
  double low = 0;
  double high = 0;
};
SlopeInterval SenInterval(std::vector<double>& slopes, double var_s, double z);

}  // namespace leakprobe::trend::detail
