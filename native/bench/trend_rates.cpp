// False-alarm and detection rates of the trend engine on seeded random
// series (docs/trends.md prints the table). A benchmark, not a test: built
// with the tests, never run by ctest (TrendRatesTest asserts bounds on a
// smaller batch).
//
//   build/native/leakprobe_trend_rates [series per family=2000] [seed=1]
//
// Two settings: production (TrendParams defaults, a point every 10 s, 300 s
// warm-up, a 1-hour window: 360 points) and the scenario suite's compressed
// time (a point every 0.5 s, 3 s warm-up, 22 s after it: 45 points, with
// min_points 12 and min_window 10 s). Each row is one family of
// native/tests/trend_series.h; honest ones print the share flagged (false
// alarms), leaking ones the share flagged (detection), with the reasons the
// others got.
#include <malloc.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "leakprobe/trend/series_store.h"
#include "leakprobe/trend/trend_engine.h"
#include "trend_series.h"

namespace {

using leakprobe::trend::Evaluate;
using leakprobe::trend::Reason;
using leakprobe::trend::ReasonName;
using leakprobe::trend::TrendParams;
namespace ts = leakprobe::trend::testing;

double Now() {
  timespec spec{};
  clock_gettime(CLOCK_MONOTONIC, &spec);
  return static_cast<double>(spec.tv_sec) + static_cast<double>(spec.tv_nsec) / 1e9;
}

struct Family {
  std::string name;
  bool leaks;
  std::function<std::vector<leakprobe::trend::Point>(const ts::Sampling&, ts::Rng&)> make;
  double sampling_unit = 0;  // TrendParams::sampling_unit (0: exact values)
};

std::vector<Family> Families() {
  std::vector<Family> f = {
      {"white noise", false, [](auto& s, auto& r) { return ts::WhiteNoise(s, r); }},
      {"AR(1) noise, phi 0.5", false,
       [](auto& s, auto& r) { return ts::Ar1Noise(s, r, 0.5); }},
      {"AR(1) noise, phi 0.9", false,
       [](auto& s, auto& r) { return ts::Ar1Noise(s, r, 0.9); }},
      {"sawtooth, flat floor", false,
       [](auto& s, auto& r) { return ts::FlatSawtooth(s, r); }},
      {"cache filling to maxsize", false,
       [](auto& s, auto& r) { return ts::LinearFill(s, r); }},
      {"pool warm-up", false, [](auto& s, auto& r) { return ts::PoolWarmup(s, r); }},
      {"one-off step", false, [](auto& s, auto& r) { return ts::Step(s, r); }},
      {"sampled cache filling (8-64 samples)", false,
       [](auto& s, auto& r) { return ts::SampledFill(s, r); }, 1},
  };
  for (double e : {0.5, 1.0, 2.0, 5.0}) {
    const std::string x = std::to_string(e).substr(0, 3);
    f.push_back({"linear leak, white noise, effect " + x, true,
                 [e](auto& s, auto& r) { return ts::LinearLeak(s, r, e); }});
  }
  for (double e : {0.5, 1.0, 2.0, 5.0}) {
    const std::string x = std::to_string(e).substr(0, 3);
    f.push_back({"linear leak, AR(1) 0.5 noise, effect " + x, true,
                 [e](auto& s, auto& r) { return ts::LinearLeak(s, r, e, 0.5); }});
  }
  for (double e : {0.5, 1.0, 2.0, 5.0}) {
    const std::string x = std::to_string(e).substr(0, 3);
    f.push_back({"late leak (from 40-75%), effect " + x, true,
                 [e](auto& s, auto& r) { return ts::LateLeak(s, r, e); }});
  }
  for (double e : {0.5, 1.0, 2.0}) {
    const std::string x = std::to_string(e).substr(0, 3);
    f.push_back({"sawtooth, floor rising " + x + " amplitudes", true,
                 [e](auto& s, auto& r) { return ts::RisingSawtooth(s, r, e); }});
  }
  f.push_back({"count +1 every 4 samples", true,
               [](auto& s, auto& r) { return ts::CountLeak(s, r, 4); }});
  for (double per_point : {0.5, 1.25, 2.5}) {
    const std::string x = std::to_string(per_point).substr(0, 4);
    f.push_back(
        {"sampled leak, " + x + " samples a point", true,
         [per_point](auto& s, auto& r) { return ts::SampledLeak(s, r, per_point); }, 1});
  }
  return f;
}

// The store's budget: 48 hours at 10 s in 512 series (the default cap),
// its own account (MemoryBytes) beside what malloc handed out for it.
void StoreMemory() {
  using leakprobe::trend::Resource;
  using leakprobe::trend::SeriesStore;
  const std::size_t heap_before = mallinfo2().uordblks;
  auto* store = new SeriesStore(SeriesStore::Limits{});
  constexpr int kSamples = 48 * 3600 / 10;
  const double start = Now();
  for (int s = 0; s < 512; ++s) {
    const std::string key = "/srv/app/service/handlers.py:" + std::to_string(s) + " in f";
    for (int i = 0; i < kSamples; ++i) {
      store->Append({Resource::kHeap, key}, 10.0 * i, 1e6 + s + i % 7);
    }
  }
  const double seconds = Now() - start;
  const std::size_t heap = mallinfo2().uordblks - heap_before;
  std::printf("## store: 512 series x 48 h at 10 s (%d samples each)\n\n", kSamples);
  std::printf(
      "MemoryBytes: %zu (%.1f KiB a series); malloc in use: %zu (%.1f KiB a series)\n",
      store->MemoryBytes(), static_cast<double>(store->MemoryBytes()) / 512 / 1024, heap,
      static_cast<double>(heap) / 512 / 1024);
  std::printf(
      "Append: %.0f ns mean; Points() at 48 h: %zu points\n\n",
      1e9 * seconds / (512.0 * kSamples),
      store->Points({Resource::kHeap, "/srv/app/service/handlers.py:0 in f"}).size());
  delete store;
}

struct Setting {
  const char* name;
  ts::Sampling sampling;
  TrendParams params;
};

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 2000;
  const unsigned long long seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  TrendParams compressed;
  compressed.warmup_seconds = 3;
  compressed.min_points = 12;
  compressed.min_window_seconds = 10;
  const Setting settings[] = {
      {"production (10 s, 1 h, 360 points)", ts::Sampling{10, 300, 3600}, TrendParams{}},
      {"compressed (0.5 s, 22 s, 45 points)", ts::Sampling{0.5, 3, 22}, compressed},
  };
  StoreMemory();
  std::printf("%d series per family, seed %llu, alpha %.2f\n\n", count, seed,
              TrendParams{}.alpha);
  for (const Setting& setting : settings) {
    std::printf("## %s\n\n| family | flagged | other verdicts |\n|---|---:|---|\n",
                setting.name);
    double evaluations = 0;
    double seconds = 0;
    for (const Family& family : Families()) {
      ts::Rng rng(seed);
      std::map<Reason, int> reasons;
      int flagged = 0;
      for (int i = 0; i < count; ++i) {
        const auto pts = family.make(setting.sampling, rng);
        const double start = Now();
        TrendParams params = setting.params;
        params.sampling_unit = family.sampling_unit;
        const auto verdict = Evaluate(pts, params);
        seconds += Now() - start;
        evaluations += 1;
        flagged += verdict.suspected ? 1 : 0;
        if (!verdict.suspected) ++reasons[verdict.reason];
      }
      std::string other;
      for (const auto& [reason, n] : reasons) {
        if (!other.empty()) other += ", ";
        other += std::string(ReasonName(reason)) + " " +
                 std::to_string(100.0 * n / count).substr(0, 4) + "%";
      }
      std::printf("| %s%s | %.1f%% | %s |\n", family.leaks ? "**leak** " : "",
                  family.name.c_str(), 100.0 * flagged / count, other.c_str());
      std::fflush(stdout);
    }
    std::printf("\nmean Evaluate(): %.0f us\n\n", 1e6 * seconds / evaluations);
  }
  return 0;
}
