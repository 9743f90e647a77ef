// leakprobe/prometheus/collector.h — turns a leakprobe Snapshot into
// Prometheus metric families at scrape time.
//
//   auto collector = std::make_shared<SnapshotCollector>(&leakprobe::TakeSnapshot);
//   Exporter exporter("127.0.0.1", 0, collector);  // serves collector->Collect()
//
// Values are gathered when Prometheus scrapes, never cached here; the GIL is
// never taken (the snapshot source must not need it).
// Thread-safety: Collect() may run concurrently on several server threads.
#pragma once

#include <atomic>
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

 private:
  Source source_;
  std::atomic<bool> closed_{false};
};

// The families for one snapshot; exposed for tests and for rendering the
// exposition without a server. (The exporter's scrape handler adds its own
// exposer_* families to what it serves.)
std::vector<prometheus::MetricFamily> BuildFamilies(const Snapshot& snapshot);

}  // namespace leakprobe::prometheus_exporter
