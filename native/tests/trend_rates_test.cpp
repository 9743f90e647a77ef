// Bounds on the trend engine's false-alarm and detection rates over seeded
// batches (the full table is native/bench/trend_rates.cpp's, in
// docs/trends.md).
//
// False alarms: the engine tests at alpha = 0.01 (Bonferroni over its
// segments), so a non-leaking family should be flagged in about 1% of
// series or fewer. Over 500 series the count is then at most Binomial(500,
// 0.01), whose mean is 5 and sd 2.2: the bound is alpha plus 3.1 sds,
// 11 series (2.2%), which an engine at its nominal level exceeds with
// probability below 0.1%. Detection: at least 95% of clear leaks (5 noise
// sds over the window, or a count that gains one every 4 samples).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "leakprobe/trend/trend_engine.h"
#include "trend_series.h"

namespace leakprobe::trend {
namespace {

namespace ts = testing;

constexpr int kSeries = 500;
const int kMaxFalseAlarms = static_cast<int>(
    std::floor(kSeries * (0.01 + 3.1 * std::sqrt(0.01 * 0.99 / kSeries))));
constexpr int kMinDetected = kSeries * 95 / 100;

const ts::Sampling kHour{10, 300, 3600};
const ts::Sampling kRun{0.5, 3, 22};
const TrendParams kRunParams{
    .warmup_seconds = 3, .min_points = 12, .min_window_seconds = 10};

using Family = std::function<std::vector<Point>(ts::Rng&)>;

// How many of kSeries seeded series of `family` get a verdict that `counts`.
int Count(const Family& family, const TrendParams& params,
          const std::function<bool(const Verdict&)>& counts) {
  ts::Rng rng(20261130);
  int n = 0;
  for (int i = 0; i < kSeries; ++i) n += counts(Evaluate(family(rng), params)) ? 1 : 0;
  return n;
}

int Flagged(const Family& family, const TrendParams& params) {
  return Count(family, params, [](const Verdict& v) { return v.suspected; });
}

int Plateaus(const Family& family, const TrendParams& params) {
  return Count(family, params,
               [](const Verdict& v) { return v.reason == Reason::kPlateau; });
}

TEST(TrendRatesTest, TheBoundFollowsFromAlpha) { EXPECT_EQ(kMaxFalseAlarms, 11); }

TEST(TrendRatesTest, FewFalseAlarmsAtProductionSettings) {
  const struct {
    const char* name;
    Family make;
  } families[] = {
      {"white noise", [](ts::Rng& r) { return ts::WhiteNoise(kHour, r); }},
      {"AR(1) 0.5", [](ts::Rng& r) { return ts::Ar1Noise(kHour, r, 0.5); }},
      {"sawtooth", [](ts::Rng& r) { return ts::FlatSawtooth(kHour, r); }},
      {"cache filling", [](ts::Rng& r) { return ts::LinearFill(kHour, r); }},
      {"pool warm-up", [](ts::Rng& r) { return ts::PoolWarmup(kHour, r); }},
      {"step", [](ts::Rng& r) { return ts::Step(kHour, r); }},
  };
  for (const auto& family : families) {
    EXPECT_LE(Flagged(family.make, TrendParams{}), kMaxFalseAlarms) << family.name;
  }
  EXPECT_LE(Flagged([](ts::Rng& r) { return ts::SampledFill(kHour, r); },
                    TrendParams{.sampling_unit = 1}),
            kMaxFalseAlarms);
}

TEST(TrendRatesTest, FewFalseAlarmsInCompressedTime) {
  const struct {
    const char* name;
    Family make;
  } families[] = {
      {"white noise", [](ts::Rng& r) { return ts::WhiteNoise(kRun, r); }},
      {"AR(1) 0.5", [](ts::Rng& r) { return ts::Ar1Noise(kRun, r, 0.5); }},
      {"sawtooth", [](ts::Rng& r) { return ts::FlatSawtooth(kRun, r); }},
      {"pool warm-up", [](ts::Rng& r) { return ts::PoolWarmup(kRun, r); }},
      {"step", [](ts::Rng& r) { return ts::Step(kRun, r); }},
  };
  for (const auto& family : families) {
    EXPECT_LE(Flagged(family.make, kRunParams), kMaxFalseAlarms) << family.name;
  }
}

TEST(TrendRatesTest, ClearLeaksAreDetected) {
  EXPECT_GE(
      Flagged([](ts::Rng& r) { return ts::LinearLeak(kHour, r, 5); }, TrendParams{}),
      kMinDetected);
  EXPECT_GE(Flagged([](ts::Rng& r) { return ts::LateLeak(kHour, r, 5); }, TrendParams{}),
            kMinDetected);
  EXPECT_GE(
      Flagged([](ts::Rng& r) { return ts::RisingSawtooth(kHour, r, 1); }, TrendParams{}),
      kMinDetected);
  EXPECT_GE(Flagged([](ts::Rng& r) { return ts::CountLeak(kHour, r, 4); }, TrendParams{}),
            kMinDetected);
  EXPECT_GE(Flagged([](ts::Rng& r) { return ts::LinearLeak(kRun, r, 8); }, kRunParams),
            kMinDetected);
}

// A sampled estimate's recent third can hold fewer samples than its rate
// promises by chance; a steady leak must not be called a plateau for that
// more often than an honest series is flagged. (A leak of half a sample a
// point in compressed time was a plateau in 7% of series when the
// slowdown was not checked against the sampling.)
TEST(TrendRatesTest, SampledLeaksAreNotPlateausByChance) {
  TrendParams params = kRunParams;
  params.sampling_unit = 1;
  EXPECT_LE(Plateaus([](ts::Rng& r) { return ts::SampledLeak(kRun, r, 0.5); }, params),
            kMaxFalseAlarms);
  EXPECT_GE(Flagged([](ts::Rng& r) { return ts::SampledLeak(kRun, r, 1.25); }, params),
            kMinDetected);
}

}  // namespace
}  // namespace leakprobe::trend
