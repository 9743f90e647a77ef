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
#include <chrono>
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

  // This process's families, each metric labelled with its pid and role
  // (peers.h), and, when the collector has joined a group, those of every
  // other process of the group (FetchPeers) with the group's own figures.
  std::vector<prometheus::MetricFamily> Collect() const override;
  // This process's families only, labelled: what a peer sends its holder.
  std::vector<prometheus::MetricFamily> CollectOwn() const;

  // From now on Collect() also gathers the processes of the group of
  // `group_port` (see peers.h), waiting at most `deadline` for them.
  void JoinGroup(int group_port, std::chrono::milliseconds deadline) noexcept;

  // After Close(), Collect() returns nothing without calling the source; used
  // at interpreter exit, when the server may outlive the state it reads.
  void Close() noexcept { closed_.store(true, std::memory_order_release); }

 private:
  Source source_;
  std::atomic<bool> closed_{false};
  std::atomic<int> group_port_{0};
  std::atomic<std::int64_t> deadline_ms_{0};
  // Peer failures since the start, by reason (leakprobe_group_peer_failures_total).
  mutable std::atomic<std::uint64_t> connect_failed_{0};
  mutable std::atomic<std::uint64_t> timed_out_{0};
  mutable std::atomic<std::uint64_t> malformed_{0};
  mutable std::atomic<std::uint64_t> foreign_{0};
  mutable std::atomic<std::uint64_t> conflicts_{0};
};

// The families for one snapshot; exposed for tests and for rendering the
// exposition without a server. (The exporter's scrape handler adds its own
// exposer_* families to what it serves.)
std::vector<prometheus::MetricFamily> BuildFamilies(const Snapshot& snapshot);

}  // namespace leakprobe::prometheus_exporter
