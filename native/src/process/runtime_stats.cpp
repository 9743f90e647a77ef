#include "leakprobe/process/runtime_stats.h"

#include <algorithm>

namespace leakprobe {

RuntimeStats& RuntimeStats::Instance() {
  // Deliberately leaked: exporter threads may read it during exit.
  static RuntimeStats* const instance = new RuntimeStats();
  return *instance;
}

void RuntimeStats::SetGc(const std::vector<GcGeneration>& generations) noexcept {
  const std::size_t n = std::min(generations.size(), kMaxGenerations);
  for (std::size_t i = 0; i < n; ++i) {
    gc_[i].collections.store(generations[i].collections, std::memory_order_relaxed);
    gc_[i].collected.store(generations[i].collected, std::memory_order_relaxed);
    gc_[i].uncollectable.store(generations[i].uncollectable, std::memory_order_relaxed);
  }
  gc_generations_.store(n, std::memory_order_release);
}

GcSnapshot RuntimeStats::Gc() const {
  GcSnapshot snapshot;
  const std::size_t n = gc_generations_.load(std::memory_order_acquire);
  snapshot.generations.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    snapshot.generations.push_back(
        {gc_[i].collections.load(std::memory_order_relaxed),
         gc_[i].collected.load(std::memory_order_relaxed),
         gc_[i].uncollectable.load(std::memory_order_relaxed)});
  }
  return snapshot;
}

void RuntimeStats::SetPythonInfo(const PythonInfo& info) {
  if (python_info_.load(std::memory_order_acquire) != nullptr) return;
  auto* fresh = new PythonInfo(info);
  const PythonInfo* expected = nullptr;
  if (!python_info_.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
    delete fresh;  // another thread won; nobody else saw `fresh`
  }
}

const PythonInfo* RuntimeStats::python_info() const noexcept {
  return python_info_.load(std::memory_order_acquire);
}

}  // namespace leakprobe
