// leakprobe/prometheus/exporter.h — the in-process HTTP endpoint (civetweb,
// with prometheus-cpp's metric model, the text written by text_format.h)
// serving /metrics.
//
//   auto collector = std::make_shared<SnapshotCollector>(&TakeSnapshot);
//   Exporter exporter("127.0.0.1", 0, collector);  // throws BindError
//   int port = exporter.port();
//
// Lifecycle rules that keep the host process safe:
// - Destroying an Exporter stops the server promptly: the listening sockets
//   are shut down first so civetweb's master thread wakes at once instead of
//   at the end of its poll quantum.
// - In a forked child the server's threads do not exist; stopping the server
//   there would wait for them forever. AbandonAfterFork() closes the
//   inherited listening sockets and leaks the server object instead.
// - At exit, Release() leaks the server (its threads die with the process)
//   and closes the collector, so exit costs nothing.
// - Scrapes never starve: a fixed pool of server threads, one request per
//   connection ("Connection: close", keep-alive off), so no thread waits on
//   a client idling between scrapes; more scrapers than threads queue.
//   Scrapes that arrive during a render share it (single-flight); stopping
//   the exporter answers those still waiting with 503 at once.
//   The server threads run 10 nice levels below their creator, so under CPU
//   contention a scrape storm yields to the host's own threads, and their
//   CPU is capped at `cpu_share` of one CPU: beyond it, scrapes wait.
// Thread-safety: not thread-safe; the owner serialises calls. The server
// threads only call the collector.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "leakprobe/prometheus/collector.h"

struct mg_context;

namespace leakprobe::prometheus_exporter {

class ScrapeHandler;

// The share of one CPU the server threads may spend serving scrapes unless
// told otherwise (LEAKPROBE_EXPORTER_CPU_SHARE).
inline constexpr double kDefaultCpuShare = 0.02;

class Exporter {
 public:
  // Listens on host:port (port 0: any free port) and serves /metrics from
  // `collector`, its server threads spending at most `cpu_share` (in
  // (0, 1]) of one CPU. Throws leakprobe::BindError naming the address and
  // the reason when it cannot listen.
  Exporter(const std::string& host, int port,
           std::shared_ptr<SnapshotCollector> collector,
           double cpu_share = kDefaultCpuShare);
  ~Exporter();

  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // The listening sockets found for this server (for tests and fork).
  const std::vector<int>& listening_fds() const { return listening_fds_; }

  // Child side of fork: async-signal-safe (close() only), never blocks.
  void AbandonAfterFork() noexcept;
  // At exit: stop serving data (scrapes waiting for a render answer 503)
  // and leak the server without joining threads.
  void Release() noexcept;

 private:
  // Closes the collector and leaks the server; both ends above share it.
  void Leak() noexcept;

  std::string host_;
  int port_ = 0;
  // Both leaked by Release() and AbandonAfterFork(); context_ is null then.
  std::unique_ptr<ScrapeHandler> handler_;
  mg_context* context_ = nullptr;
  std::vector<int> listening_fds_;
};

// civetweb's "listening_ports" value for host and port ("[::1]:0" for IPv6).
std::string ListeningAddress(const std::string& host, int port);

// The fds of this process that are listening sockets bound to `port`.
std::vector<int> FindListeningFds(int port);

}  // namespace leakprobe::prometheus_exporter
