// leakprobe/process/runtime_stats.h — interpreter figures that only Python code can
// read (gc generations, interpreter identity), cached for the exporter.
//
//   // sampler thread, holding the GIL:
//   RuntimeStats::Instance().SetGc({{10, 200, 0}, {1, 30, 0}, {0, 0, 0}});
//   // scrape thread, no GIL:
//   GcSnapshot gc = RuntimeStats::Instance().Gc();
//
// The scrape thread must never take the GIL, so a background sampler writes
// here under the GIL and the exporter reads the last values.
// Thread-safety: every method may be called from any thread at any time,
// including a forked child whose parent had threads inside these methods:
// there are no locks, only atomics and write-once pointers.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace leakprobe {

struct GcGeneration {
  std::uint64_t collections = 0;
  std::uint64_t collected = 0;
  std::uint64_t uncollectable = 0;
};

struct GcSnapshot {
  // Empty until the sampler has run once.
  std::vector<GcGeneration> generations;
};

struct PythonInfo {
  std::string implementation;  // "CPython"
  std::string major, minor, patchlevel;
  std::string version;  // "3.11.7"
};

class RuntimeStats {
 public:
  static constexpr std::size_t kMaxGenerations = 4;

  // The process-wide instance; never destroyed, so it stays valid for
  // threads still running at exit.
  static RuntimeStats& Instance();

  // Extra generations beyond kMaxGenerations are ignored.
  void SetGc(const std::vector<GcGeneration>& generations) noexcept;
  GcSnapshot Gc() const;

  // The first call wins; the interpreter does not change under a process.
  void SetPythonInfo(const PythonInfo& info);
  // nullptr until set.
  const PythonInfo* python_info() const noexcept;

 private:
  RuntimeStats() = default;

  // Each field is an independent atomic; a reader may see generations from
  // two neighbouring samples, which is harmless for monotonic counters.
  struct AtomicGeneration {
    std::atomic<std::uint64_t> collections{0};
    std::atomic<std::uint64_t> collected{0};
    std::atomic<std::uint64_t> uncollectable{0};
  };
  std::array<AtomicGeneration, kMaxGenerations> gc_;
  std::atomic<std::size_t> gc_generations_{0};           // 0 = never sampled
  std::atomic<const PythonInfo*> python_info_{nullptr};  // write-once, leaked
};

}  // namespace leakprobe
