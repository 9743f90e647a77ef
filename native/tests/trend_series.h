// Synthetic series for the trend engine's tests and its rates benchmark
// (native/tests/trend_engine_test.cpp, native/bench/trend_rates.cpp): the
// honest families (noise, autocorrelated noise, GC sawtooth, caches and
// pools filling to a bound, one-off steps) and the leaking ones (linear,
// sawtooth whose floor rises, leaks that start late, counts that grow one
// at a time), and sampled estimates of both kinds (a heap site that leaks,
// a cache that fills), all from a seeded PRNG.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "leakprobe/trend/trend_engine.h"

namespace leakprobe::trend::testing {

// Sampling: `warmup` seconds then `window` seconds, one point every
// `interval` seconds (t = 0, interval, ...).
struct Sampling {
  double interval = 10;
  double warmup = 300;
  double window = 3600;
  std::size_t count() const {
    return static_cast<std::size_t>(std::floor((warmup + window) / interval)) + 1;
  }
};

using Rng = std::mt19937_64;

inline double Uniform(Rng& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}
inline double Gauss(Rng& rng) { return std::normal_distribution<double>(0, 1)(rng); }

// f(t) + noise for every sample time. `phi` makes the noise AR(1) with the
// same marginal sd (0: white).
inline std::vector<Point> Make(const Sampling& s, Rng& rng, double sd, double phi,
                               const std::function<double(double)>& f) {
  std::vector<Point> pts;
  const std::size_t n = s.count();
  pts.reserve(n);
  const double innovation = std::sqrt(1 - phi * phi);
  double e = Gauss(rng);
  for (std::size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) * s.interval;
    if (i > 0) e = phi * e + innovation * Gauss(rng);
    pts.push_back(Point{t, f(t) + sd * e});
  }
  return pts;
}

// A GC-like sawtooth: from `floor` it ramps up by `amplitude` over `period`
// seconds, then drops back to the floor (phase in [0, 1)).
inline double Sawtooth(double t, double floor, double amplitude, double period,
                       double phase) {
  const double x = t / period + phase;
  return floor + amplitude * (x - std::floor(x));
}

constexpr double kLevel = 1000;  // the series' level, far from zero

// Honest families ----------------------------------------------------------

inline std::vector<Point> WhiteNoise(const Sampling& s, Rng& rng, double sd = 1) {
  return Make(s, rng, sd, 0, [](double) { return kLevel; });
}
inline std::vector<Point> Ar1Noise(const Sampling& s, Rng& rng, double phi,
                                   double sd = 1) {
  return Make(s, rng, sd, phi, [](double) { return kLevel; });
}
// Sawtooth of random period (2 to 40 samples, at most a third of the
// window), phase and amplitude (5 to 50 noise sds), flat floor.
inline std::vector<Point> FlatSawtooth(const Sampling& s, Rng& rng) {
  const double period =
      Uniform(rng, 2, std::min(40.0, s.window / s.interval / 3)) * s.interval;
  const double phase = Uniform(rng, 0, 1);
  const double amplitude = Uniform(rng, 5, 50);
  return Make(s, rng, 1, 0,
              [=](double t) { return Sawtooth(t, kLevel, amplitude, period, phase); });
}
// A cache filling at a constant rate to its maxsize, reached at 10% to 60%
// of the evaluated window, then staying (size 5 to 50 noise sds).
inline std::vector<Point> LinearFill(const Sampling& s, Rng& rng) {
  const double full_at = s.warmup + Uniform(rng, 0.1, 0.6) * s.window;
  const double size = Uniform(rng, 5, 50);
  return Make(s, rng, 1, 0,
              [=](double t) { return kLevel + size * std::min(1.0, t / full_at); });
}
// A pool warming up: 1 - exp(-t / tau), tau 3% to 15% of the whole run,
// integer connection counts (size 4 to 40), no noise.
inline std::vector<Point> PoolWarmup(const Sampling& s, Rng& rng) {
  const double tau = Uniform(rng, 0.03, 0.15) * (s.warmup + s.window);
  const double size = std::floor(Uniform(rng, 4, 41));
  std::vector<Point> pts = Make(s, rng, 0, 0, [=](double t) {
    return std::floor(size * (1 - std::exp(-t / tau)) + 0.5);
  });
  // Connections come and go around the filled level (a few percent).
  for (Point& p : pts) {
    if (Uniform(rng, 0, 1) < 0.05) p.v -= 1;
  }
  return pts;
}
// One step of 5 to 50 noise sds at 10% to 90% of the evaluated window.
inline std::vector<Point> Step(const Sampling& s, Rng& rng) {
  const double at = s.warmup + Uniform(rng, 0.1, 0.9) * s.window;
  const double height = Uniform(rng, 5, 50);
  return Make(s, rng, 1, 0, [=](double t) { return kLevel + (t >= at ? height : 0); });
}

// Leaking families ----------------------------------------------------------
// `effect` is the growth over the evaluated window in noise sds.

inline std::vector<Point> LinearLeak(const Sampling& s, Rng& rng, double effect,
                                     double phi = 0) {
  const double slope = effect / s.window;
  return Make(s, rng, 1, phi, [=](double t) { return kLevel + slope * t; });
}
// A sawtooth (amplitude 5 to 20) whose floor rises by effect * amplitude
// over the window.
inline std::vector<Point> RisingSawtooth(const Sampling& s, Rng& rng, double effect) {
  const double period =
      Uniform(rng, 2, std::min(40.0, s.window / s.interval / 3)) * s.interval;
  const double phase = Uniform(rng, 0, 1);
  const double amplitude = Uniform(rng, 5, 20);
  const double slope = effect * amplitude / s.window;
  return Make(s, rng, 1, 0, [=](double t) {
    return Sawtooth(t, kLevel + slope * t, amplitude, period, phase);
  });
}
// Flat until 40% to 75% of the evaluated window, then leaking: `effect`
// sds over the rest of the window.
inline std::vector<Point> LateLeak(const Sampling& s, Rng& rng, double effect) {
  const double from = s.warmup + Uniform(rng, 0.4, 0.75) * s.window;
  const double slope = effect / (s.warmup + s.window - from);
  return Make(s, rng, 1, 0,
              [=](double t) { return kLevel + slope * std::max(0.0, t - from); });
}
// An integer count (fds, objects) that gains one every `every` samples on
// average (a Poisson process), no noise.
inline std::vector<Point> CountLeak(const Sampling& s, Rng& rng, double every) {
  std::vector<Point> pts;
  double v = 10;
  for (std::size_t i = 0; i < s.count(); ++i) {
    if (Uniform(rng, 0, 1) < 1 / every) v += 1;
    pts.push_back(Point{static_cast<double>(i) * s.interval, v});
  }
  return pts;
}

// Sampled estimates (the heap's): blocks worth `kSampledBlock` sample
// intervals each (16 KiB at the 128 KiB default) arrive at a steady rate
// while `growing(t)`, each sampled with probability 1 - exp(-block) and
// then counted as block / p, so the series is in units of one sample's
// worth (TrendParams::sampling_unit 1) and rises a sample at a time, at
// random.
constexpr double kSampledBlock = 0.125;

inline std::vector<Point> Sampled(const Sampling& s, Rng& rng, double units_per_second,
                                  const std::function<bool(double)>& growing) {
  const double p = 1 - std::exp(-kSampledBlock);
  const double every = kSampledBlock / units_per_second;  // seconds a block
  std::vector<Point> pts;
  double v = 0;
  double next = 0;  // the next block's time
  for (std::size_t i = 0; i < s.count(); ++i) {
    const double t = static_cast<double>(i) * s.interval;
    for (; next <= t; next += every) {
      if (growing(next) && Uniform(rng, 0, 1) < p) v += kSampledBlock / p;
    }
    pts.push_back(Point{t, v});
  }
  return pts;
}
// A site that only grows, by `per_point` samples' worth a point on average
// (16 KiB at 20 a second, 128 KiB mean, 0.5 s a point: 1.25, the scenario
// suite's global list before its records were doubled to 32 KiB).
inline std::vector<Point> SampledLeak(const Sampling& s, Rng& rng, double per_point) {
  return Sampled(s, rng, per_point / s.interval, [](double) { return true; });
}
// A cache of 8 to 64 samples' worth, filled steadily from the start and
// full at 10% to 60% of the evaluated window, then kept.
inline std::vector<Point> SampledFill(const Sampling& s, Rng& rng) {
  const double full_at = s.warmup + Uniform(rng, 0.1, 0.6) * s.window;
  const double size = Uniform(rng, 8, 64);
  return Sampled(s, rng, size / full_at, [=](double t) { return t < full_at; });
}

}  // namespace leakprobe::trend::testing
