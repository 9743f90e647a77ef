// The statistics under Evaluate() (leakprobe/trend/trend_stats.h). Written
// from the definitions: Sen (1968) for the slope and its interval, Kendall
// (1975) for S and its tie-corrected variance, Hamed & Rao (1998) for the
// variance under autocorrelation.
#include "leakprobe/trend/trend_stats.h"

#include <math.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace leakprobe::trend::detail {

constexpr double kLargest = std::numeric_limits<double>::max();

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

namespace {

// lgamma() sets the global signgam; lgamma_r() (glibc, POSIX.1-2024) does
// not, which keeps these functions safe to call from any thread.
double LogGamma(double x) {
  int sign = 0;
  return ::lgamma_r(x, &sign);
}

// The regularized incomplete beta function I_x(a, b), by its continued
// fraction (evaluated with the modified Lentz method), on the side of x
// where it converges fast.
double IncompleteBeta(double x, double a, double b) {
  if (!(x > 0)) return 0;
  if (!(x < 1)) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - IncompleteBeta(1 - x, b, a);
  const double front = std::exp(LogGamma(a + b) - LogGamma(a) - LogGamma(b) +
                                a * std::log(x) + b * std::log1p(-x)) /
                       a;
  constexpr double kTiny = 1e-300;
  double f = 1;
  double c = 1;
  double d = 0;
  for (int i = 0; i <= 400; ++i) {
    const int m = i / 2;
    double numerator = 1;
    if (i > 0 && i % 2 == 0) {
      numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    } else if (i > 0) {
      numerator = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    }
    d = 1 + numerator * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    d = 1 / d;
    c = 1 + numerator / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    const double step = c * d;
    f *= step;
    if (std::fabs(1 - step) < 1e-14) break;
  }
  return front * (f - 1);
}

}  // namespace

double StudentUpperTail(double t, double df) {
  if (std::isnan(t) || !(df > 0)) return 0.5;
  if (std::isinf(t)) return t > 0 ? 0 : 1;
  const double tail = 0.5 * IncompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? tail : 1 - tail;
}

double StudentQuantile(double p, double df) {
  if (!(p > 0)) return -1e300;
  if (!(p < 1)) return 1e300;
  // Bisection on the tail over a range that grows until it holds p.
  double lo = -1;
  double hi = 1;
  while (1 - StudentUpperTail(lo, df) > p && lo > -1e300) lo *= 2;
  while (1 - StudentUpperTail(hi, df) < p && hi < 1e300) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-9 * std::max(1.0, std::fabs(hi)); ++i) {
    const double mid = 0.5 * (lo + hi);
    (1 - StudentUpperTail(mid, df) < p ? lo : hi) = mid;
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
      // Points closer in time than a value difference can be divided by
      // (denormal gaps) saturate instead of becoming infinite.
      const double slope = (points[j].v - points[i].v) / (points[j].t - points[i].t);
      slopes.push_back(std::clamp(slope, -kLargest, kLargest));
    }
  }
  return slopes;
}

double KthSmallest(std::vector<double>& values, std::size_t k) {
  if (values.empty()) return 0;
  k = std::min(k, values.size() - 1);
  const auto at = values.begin() + static_cast<std::ptrdiff_t>(k);
  std::nth_element(values.begin(), at, values.end());
  return *at;
}

double Median(std::vector<double>& values) {
  const std::size_t n = values.size();
  if (n == 0) return 0;
  const double upper = KthSmallest(values, n / 2);
  if (n % 2 == 1) return upper;
  // The lower middle is the largest of the part nth_element left below.
  const double lower = *std::max_element(
      values.begin(), values.begin() + static_cast<std::ptrdiff_t>(n / 2));
  return 0.5 * (lower + upper);
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
  mk.n = n;
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
  // The variance is estimated from the series itself: z is referred to
  // Student's t with the effective sample size n / correction less 2
  // degrees of freedom, which matters when autocorrelation leaves few.
  mk.df = std::max(1.0, static_cast<double>(mk.n) / correction - 2);
  mk.p_increasing = StudentUpperTail(mk.z, mk.df);
  mk.p_decreasing = StudentUpperTail(-mk.z, mk.df);
  return mk;
}

MannKendall WithoutCorrection(const MannKendall& mk) { return WithCorrection(mk, 1); }

SlopeInterval SenInterval(std::vector<double>& slopes, double var_s, double z) {
  SlopeInterval ci;
  const std::size_t count = slopes.size();
  if (count == 0) return ci;
  const double total = static_cast<double>(count);
  const double c = z * std::sqrt(std::max(var_s, 0.0));
  // 1-based ranks M1 = (N - C)/2 (lower) and M2 + 1 = (N + C)/2 + 1 (upper).
  const double m1 = std::round((total - c) / 2);
  const double m2 = std::round((total + c) / 2);
  const auto index = [&](double rank1) {
    return static_cast<std::size_t>(std::clamp(rank1 - 1, 0.0, total - 1));
  };
  ci.low = KthSmallest(slopes, index(m1));
  ci.high = KthSmallest(slopes, index(m2 + 1));
  return ci;
}

}  // namespace leakprobe::trend::detail
