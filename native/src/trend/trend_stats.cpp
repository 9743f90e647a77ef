// The statistics under Evaluate() (leakprobe/trend/trend_stats.h). Written
// from the definitions: Sen (1968) for the slope and its interval, Kendall
// (1975) for S and its tie-corrected variance, Hamed & Rao (1998) for the
// variance under autocorrelation.
#include "leakprobe/trend/trend_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace leakprobe::trend::detail {

double NormalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

double NormalQuantile(double p) {
  if (!(p > 0)) return -40;
  if (!(p < 1)) return 40;
  // Bisection: NormalCdf is increasing; 200 halvings of [-40, 40] reach
  // the resolution of a double long before the end.
  double lo = -40;
  double hi = 40;
  for (int i = 0; i < 200 && hi - lo > 1e-13; ++i) {
    const double mid = 0.5 * (lo + hi);
    (NormalCdf(mid) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

std::vector<Point> WindowMinima(std::span<const Point> points, std::size_t max_points) {
  const std::size_t n = points.size();
  if (n <= std::max<std::size_t>(max_points, 1)) return {points.begin(), points.end()};
  // w = ceil(n / max_points) samples a window, so that the windows' counts
  // differ by at most one and rarely (the minimum of more samples is lower).
  const std::size_t w = (n + max_points - 1) / max_points;
  const std::size_t m = n / w;
  std::vector<Point> out;
  out.reserve(m);
  for (std::size_t k = 0; k < m; ++k) {
    const std::size_t begin = k * n / m;
    const std::size_t end = (k + 1) * n / m;
    Point best = points[begin];
    for (std::size_t i = begin + 1; i < end; ++i) {
      if (points[i].v < best.v) best = points[i];
    }
    out.push_back(best);
  }
  return out;
}

std::vector<double> PairwiseSlopes(std::span<const Point> points) {
  const std::size_t n = points.size();
  std::vector<double> slopes;
  slopes.reserve(n < 2 ? 0 : n * (n - 1) / 2);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i + 1; j < n; ++j) {
      slopes.push_back((points[j].v - points[i].v) / (points[j].t - points[i].t));
    }
  }
  std::sort(slopes.begin(), slopes.end());
  return slopes;
}

double SortedMedian(std::span<const double> sorted) {
  const std::size_t n = sorted.size();
  if (n == 0) return 0;
  return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

std::vector<double> AverageRanks(std::span<const double> values) {
  const std::size_t n = values.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(n);
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && values[order[j]] == values[order[i]]) ++j;
    // Positions i..j-1 (ranks i+1..j) share their mean.
    const double rank = 0.5 * static_cast<double>(i + 1 + j);
    for (std::size_t k = i; k < j; ++k) ranks[order[k]] = rank;
    i = j;
  }
  return ranks;
}

namespace {

// (n-k)(n-k-1)(n-k-2): how much lag k weighs in Var(S).
double VarianceWeight(std::size_t n, std::size_t k) {
  const double m = static_cast<double>(n - k);
  return m * (m - 1) * (m - 2);
}

}  // namespace

double HamedRaoFactor(std::span<const Point> points, double slope, double* ar1_floor) {
  const std::size_t n = points.size();
  if (ar1_floor != nullptr) *ar1_floor = 1;
  if (n < 5) return 1;
  std::vector<double> detrended(n);
  for (std::size_t i = 0; i < n; ++i) {
    detrended[i] = points[i].v - slope * (points[i].t - points[0].t);
  }
  std::vector<double> ranks = AverageRanks(detrended);
  const double mean = 0.5 * static_cast<double>(n + 1);
  double denom = 0;
  for (double& r : ranks) {
    r -= mean;
    denom += r * r;
  }
  if (!(denom > 0)) return 1;
  const double dn = static_cast<double>(n);
  const double bound = 1.959963984540054 / std::sqrt(dn);
  double sum = 0;
  double lag1 = 0;
  for (std::size_t k = 1; k + 2 < n; ++k) {
    double acf = 0;
    for (std::size_t i = 0; i + k < n; ++i) acf += ranks[i] * ranks[i + k];
    acf /= denom;
    if (k == 1) lag1 = acf;
    if (std::fabs(acf) <= bound) continue;
    sum += VarianceWeight(n, k) * acf;
  }
  if (ar1_floor != nullptr) {
    // The lag-1 estimate is biased low by about (1 + 4 phi) / n (the mean
    // is estimated); (n r1 + 1) / (n - 4) undoes most of it.
    const double phi = std::clamp((dn * lag1 + 1) / (dn - 4), 0.0, 0.99);
    double ar1 = 0;
    double power = 1;
    for (std::size_t k = 1; k + 2 < n; ++k) {
      power *= phi;
      if (power < 1e-6) break;
      ar1 += VarianceWeight(n, k) * power;
    }
    *ar1_floor = 1 + 2 * ar1 / (dn * (dn - 1) * (dn - 2));
  }
  return 1 + 2 * sum / (dn * (dn - 1) * (dn - 2));
}

MannKendall MannKendallTest(std::span<const Point> points, double slope) {
  MannKendall mk;
  const std::size_t n = points.size();
  if (n < 2) return mk;
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i + 1; j < n; ++j) {
      s += (points[j].v > points[i].v) - (points[j].v < points[i].v);
    }
  }
  // Var(S) = [n(n-1)(2n+5) - sum over tie groups t(t-1)(2t+5)] / 18.
  std::vector<double> sorted(n);
  for (std::size_t i = 0; i < n; ++i) sorted[i] = points[i].v;
  std::sort(sorted.begin(), sorted.end());
  const auto term = [](double m) { return m * (m - 1) * (2 * m + 5); };
  double var = term(static_cast<double>(n));
  for (std::size_t i = 0; i < n;) {
    std::size_t j = i + 1;
    while (j < n && sorted[j] == sorted[i]) ++j;
    var -= term(static_cast<double>(j - i));
    i = j;
  }
  var /= 18;
  mk.s = s;
  mk.var_independent = var;
  double ar1 = 1;
  const double hamed_rao = HamedRaoFactor(points, slope, &ar1);
  return WithCorrection(mk, std::max({1.0, hamed_rao, ar1}));
}

MannKendall WithCorrection(MannKendall mk, double correction) {
  mk.correction = correction;
  mk.var_corrected = mk.var_independent * correction;
  if (!(mk.var_corrected > 0)) {  // every value equal: no evidence either way
    mk.z = 0;
    mk.p_increasing = 1;
    mk.p_decreasing = 1;
    return mk;
  }
  const double sd = std::sqrt(mk.var_corrected);
  mk.z = mk.s > 0 ? (mk.s - 1) / sd : mk.s < 0 ? (mk.s + 1) / sd : 0;
  mk.p_increasing = NormalCdf(-mk.z);
  mk.p_decreasing = NormalCdf(mk.z);
  return mk;
}

MannKendall WithoutCorrection(const MannKendall& mk) { return WithCorrection(mk, 1); }

SlopeInterval SenInterval(std::span<const double> sorted_slopes, double var_s, double z) {
  SlopeInterval ci;
  const std::size_t count = sorted_slopes.size();
  if (count == 0) return ci;
  const double total = static_cast<double>(count);
  const double c = z * std::sqrt(std::max(var_s, 0.0));
  // 1-based ranks M1 = (N - C)/2 (lower) and M2 + 1 = (N + C)/2 + 1 (upper).
  const double m1 = std::round((total - c) / 2);
  const double m2 = std::round((total + c) / 2);
  const auto at = [&](double rank1) {
    const double index = std::clamp(rank1 - 1, 0.0, total - 1);
    return sorted_slopes[static_cast<std::size_t>(index)];
  };
  ci.low = at(m1);
  ci.high = at(m2 + 1);
  return ci;
}

}  // namespace leakprobe::trend::detail
