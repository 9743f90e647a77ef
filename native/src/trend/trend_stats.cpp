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
  const std::size_t m = std::max<std::size_t>(max_points, 1);
  if (n <= m) return {points.begin(), points.end()};
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

double HamedRaoFactor(std::span<const Point> points, double slope) {
  const std::size_t n = points.size();
  if (n < 3) return 1;
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
  for (std::size_t k = 1; k + 2 < n; ++k) {
    double acf = 0;
    for (std::size_t i = 0; i + k < n; ++i) acf += ranks[i] * ranks[i + k];
    acf /= denom;
    if (std::fabs(acf) <= bound) continue;
    const double m = static_cast<double>(n - k);
    sum += m * (m - 1) * (m - 2) * acf;
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
  mk.correction = std::max(1.0, HamedRaoFactor(points, slope));
  mk.var_corrected = var * mk.correction;
  if (!(mk.var_corrected > 0)) {  // every value equal: no evidence either way
    mk.p_increasing = 1;
    mk.p_decreasing = 1;
    return mk;
  }
  const double sd = std::sqrt(mk.var_corrected);
  mk.z = s > 0 ? (s - 1) / sd : s < 0 ? (s + 1) / sd : 0;
  mk.p_increasing = NormalCdf(-mk.z);
  mk.p_decreasing = NormalCdf(mk.z);
  return mk;
}

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
