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
// Thread-safety: Handle() runs concurrently on every server thread; the
// counters and the summary are prometheus-cpp's thread-safe metrics.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "leakprobe/prometheus/collector.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/summary.h"
#include "single_flight.h"

struct mg_connection;

namespace leakprobe::prometheus_exporter {

class ScrapeHandler {
 public:
  explicit ScrapeHandler(std::shared_ptr<SnapshotCollector> collector);

  ScrapeHandler(const ScrapeHandler&) = delete;
  ScrapeHandler& operator=(const ScrapeHandler&) = delete;

  // civetweb's request handler; `handler` is the ScrapeHandler. Returns the
  // HTTP status sent (civetweb logs it). Never throws.
  static int Handle(mg_connection* conn, void* handler) noexcept;

  // Stops reading leakprobe state (at exit, when the server outlives it).
  // Lock-free: safe in a forked child.
  void Close() noexcept { collector_->Close(); }
  // Wakes the scrapes waiting for a render (they get 503) and refuses later
  // ones; the render under way ends normally. Takes a lock: never in a
  // forked child, whose copy of the lock may be held by a thread it lacks.
  void Shutdown() { flight_.Close(); }

 private:
  // One render: the whole HTTP response, shared by the scrapes that join it.
  struct Page {
    std::string response;  // status line, headers and body
    std::size_t body_bytes = 0;
  };

  int Serve(mg_connection* conn);
  Page Render();

  std::shared_ptr<SnapshotCollector> collector_;
  SingleFlight<Page> flight_;
  // The exposer_* families: registry_ owns them, the references point into it.
  prometheus::Registry registry_;
  prometheus::Counter& scrapes_;
  prometheus::Counter& coalesced_;
  prometheus::Counter& bytes_;
  prometheus::Summary& latency_us_;
};

}  // namespace leakprobe::prometheus_exporter
