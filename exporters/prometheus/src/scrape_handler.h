// scrape_handler.h (private) — answers one HTTP request for /metrics on a
// civetweb server thread: the collector's families plus the exporter's own
// exposer_* families (scrapes, bytes, latency), as Prometheus text.
//
//   ScrapeHandler handler(collector);
//   mg_set_request_handler(context, "/metrics", &ScrapeHandler::Handle, &handler);
//
// Every response says "Connection: close" and the server runs with keep-alive
// off: a connection holds a server thread only while its one request is
// served, never while the client sits idle between scrapes, so a storm of
// persistent clients cannot starve other scrapers of the bounded thread pool.
// Single-flight: a scrape that arrives while another thread renders waits
// for that render and sends its response (single_flight.h), so a storm costs
// one snapshot and one serialisation per render, not per scrape.
// CPU budget: the server threads' CPU (each scrape's, measured on its thread)
// is charged to a budget of `cpu_share` of one CPU (cpu_budget.h); a render
// waits until the budget is repaid, and the scrapes arriving meanwhile join
// it, so a storm is served later rather than from the host's CPU.
// Thread-safety: Handle() runs concurrently on every server thread; the
// counters and the summary are prometheus-cpp's thread-safe metrics.
#pragma once

#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cpu_budget.h"
#include "leakprobe/prometheus/collector.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/summary.h"
#include "single_flight.h"

struct mg_connection;

namespace leakprobe::prometheus_exporter {

class ScrapeHandler {
 public:
  // `cpu_share`: the share of one CPU the server threads may spend serving
  // scrapes, in (0, 1].
  ScrapeHandler(std::shared_ptr<SnapshotCollector> collector, double cpu_share);

  ScrapeHandler(const ScrapeHandler&) = delete;
  ScrapeHandler& operator=(const ScrapeHandler&) = delete;

  // civetweb's request handler; `handler` is the ScrapeHandler. Returns the
  // HTTP status sent (civetweb logs it). Never throws.
  static int Handle(mg_connection* conn, void* handler) noexcept;

  // The CPU clock of civetweb's accepting thread, whose CPU is charged to
  // the budget with the scrapes' (set once, by that thread as it starts).
  void SetAcceptThreadClock(clockid_t clock) noexcept {
    accept_clock_.store(clock, std::memory_order_release);
    has_accept_clock_.store(true, std::memory_order_release);
  }

  // Stops reading leakprobe state (at exit, when the server outlives it).
  // Lock-free: safe in a forked child.
  void Close() noexcept { collector_->Close(); }
  // Wakes the scrapes waiting for a render (they get 503) and refuses later
  // ones; the render under way ends normally. Takes a lock: never in a
  // forked child, whose copy of the lock may be held by a thread it lacks.
  void Shutdown() {
    flight_.Close();
    budget_.Close();
  }

 private:
  // One render: the whole HTTP response, shared by the scrapes that join it.
  struct Page {
    std::string response;  // status line, headers and body
    std::size_t body_bytes = 0;
  };

  int Serve(mg_connection* conn);
  Page Render();
  // Charges the CPU this server thread used since its last charge (the
  // scrape just served, its connection's handling included).
  void ChargeThisThread() noexcept;
  // The accepting thread's CPU since the last charge (0 if unknown).
  std::int64_t TakeAcceptThreadCpuNs() noexcept;

  std::shared_ptr<SnapshotCollector> collector_;
  SingleFlight<Page> flight_;
  CpuBudget budget_;
  std::atomic<clockid_t> accept_clock_{};
  std::atomic<bool> has_accept_clock_{false};
  std::atomic<std::int64_t> accept_charged_ns_{0};
  // The exposer_* families: registry_ owns them, the references point into it.
  prometheus::Registry registry_;
  prometheus::Counter& scrapes_;
  prometheus::Counter& coalesced_;
  prometheus::Counter& bytes_;
  prometheus::Summary& latency_us_;
  prometheus::Counter& cpu_seconds_;
  prometheus::Counter& throttled_seconds_;
};

}  // namespace leakprobe::prometheus_exporter
