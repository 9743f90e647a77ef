// leakprobe/prometheus/collector.h — turns a leakprobe Snapshot into
// Prometheus metric families at scrape time.
//
//   auto collector = std::make_shared<SnapshotCollector>(&leakprobe::TakeSnapshot);
//   exposer.RegisterCollectable(collector);
//
// Values are gathered when Prometheus scrapes, never cached here; the GIL is
// never taken (the snapshot source must not need it).
// Thread-safety: Collect() may run concurrently on several server threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "leakprobe/snapshot.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace leakprobe::prometheus_exporter {

class SnapshotCollector : public prometheus::Collectable {
 public:
  using Source = std::function<Snapshot()>;

  explicit SnapshotCollector(Source source);

  std::vector<prometheus::MetricFamily> Collect() const override;

  // After Close(), Collect() returns nothing without calling the source; used
  // at interpreter exit, when the server may outlive the state it reads.
  void Close() noexcept { closed_.store(true, std::memory_order_release); }

  // Scrapes served so far.
  std::uint64_t scrapes() const noexcept {
    return scrapes_.load(std::memory_order_relaxed);
  }

 private:
  Source source_;
  std::atomic<bool> closed_{false};
  mutable std::atomic<std::uint64_t> scrapes_{0};
};

// The families for one snapshot; exposed for tests and for rendering the
// exposition without a server. `scrapes` feeds leakprobe_exporter_scrapes_total.
std::vector<prometheus::MetricFamily> BuildFamilies(const Snapshot& snapshot,
                                                    std::uint64_t scrapes);

}  // namespace leakprobe::prometheus_exporter
