#include "scrape_handler.h"

#include <civetweb.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/metric_family.h"
#include "text_format.h"

namespace leakprobe::prometheus_exporter {
namespace {

// Quantiles of the latency summary, with their allowed rank error.
const prometheus::Summary::Quantiles& LatencyQuantiles() {
  static const auto* const quantiles =
      new prometheus::Summary::Quantiles{{0.5, 0.05}, {0.9, 0.01}, {0.99, 0.001}};
  return *quantiles;
}

// An error response, written in one piece like the page. Not
// mg_send_http_error: civetweb dates it with gmtime(), whose static result
// the server threads overwrite under each other when several scrapes fail
// at once (ThreadSanitizer reports it when a failed render answers all its
// waiters). Never throws: a message that cannot be built is not sent.
int SendError(mg_connection* conn, int status, const char* reason,
              const char* text) noexcept {
  try {
    const std::string response =
        absl::StrCat("HTTP/1.1 ", status, " ", reason,
                     "\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: ",
                     std::strlen(text),
                     "\r\n"
                     "Connection: close\r\n\r\n",
                     text);
    mg_write(conn, response.data(), response.size());
  } catch (const std::exception&) {
    // Out of memory: the connection closes without a response.
  }
  return status;
}

// How long a scrape waits for a render under way before giving up with a
// 503: a render takes milliseconds, so only a stuck one reaches this (the
// client's own timeout, Prometheus' default, is the same 10 s).
constexpr std::chrono::seconds kMaxJoinWait{10};

// The CPU the server threads may spend at once after a quiet spell before
// the budget holds renders back: about a hundred scrapes at full speed, so
// Prometheus servers, a dashboard and a curl by hand never wait.
constexpr std::chrono::milliseconds kCpuBurst{20};

// The longest a render waits for the CPU budget: a scrape that cost far
// more than usual (a huge page) delays the next render by at most this,
// well within the joiners' own 10 s.
constexpr std::chrono::seconds kMaxBudgetWait{2};

// A thread's CPU time (user and system), in nanoseconds; 0 if unreadable.
std::int64_t ThreadCpuNs(clockid_t clock = CLOCK_THREAD_CPUTIME_ID) noexcept {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return 0;
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The thread CPU time at this server thread's last charge.
thread_local std::int64_t last_charged_cpu_ns = 0;

}  // namespace

ScrapeHandler::ScrapeHandler(std::shared_ptr<SnapshotCollector> collector,
                             double cpu_share)
    : collector_(std::move(collector)),
      flight_(kMaxJoinWait),
      budget_(cpu_share, kCpuBurst),
      scrapes_(prometheus::BuildCounter()
                   .Name("exposer_scrapes_total")
                   .Help("Scrapes served by this exporter")
                   .Register(registry_)
                   .Add({})),
      coalesced_(prometheus::BuildCounter()
                     .Name("exposer_scrapes_coalesced_total")
                     .Help("Scrapes served with the page of a render already under way "
                           "when they arrived (single-flight)")
                     .Register(registry_)
                     .Add({})),
      bytes_(prometheus::BuildCounter()
                 .Name("exposer_transferred_bytes_total")
                 .Help("Bytes of exposition text sent to scrapers")
                 .Register(registry_)
                 .Add({})),
      latency_us_(prometheus::BuildSummary()
                      .Name("exposer_request_latencies")
                      .Help("Time to serve a scrape, in microseconds")
                      .Register(registry_)
                      .Add({}, LatencyQuantiles())),
      cpu_seconds_(
          prometheus::BuildCounter()
              .Name("exposer_cpu_seconds_total")
              .Help("CPU time the exporter's server threads spent serving scrapes")
              .Register(registry_)
              .Add({})),
      throttled_seconds_(prometheus::BuildCounter()
                             .Name("exposer_throttled_seconds_total")
                             .Help("Time renders waited for the exporter's CPU budget")
                             .Register(registry_)
                             .Add({})) {}

std::int64_t ScrapeHandler::TakeAcceptThreadCpuNs() noexcept {
  if (!has_accept_clock_.load(std::memory_order_acquire)) return 0;
  const std::int64_t now = ThreadCpuNs(accept_clock_.load(std::memory_order_acquire));
  if (now == 0) return 0;  // the thread has gone (the server is stopping)
  const std::int64_t before = accept_charged_ns_.exchange(now, std::memory_order_relaxed);
  return now > before ? now - before : 0;
}

void ScrapeHandler::ChargeThisThread() noexcept {
  const std::int64_t now = ThreadCpuNs();
  const std::int64_t own = now - last_charged_cpu_ns;
  last_charged_cpu_ns = now;
  const std::int64_t spent = std::max<std::int64_t>(own, 0) + TakeAcceptThreadCpuNs();
  if (spent <= 0) return;
  try {
    budget_.Charge(std::chrono::nanoseconds(spent), CpuBudget::Clock::now());
  } catch (const std::exception&) {
    // A lock that fails to lock (std::system_error): this charge is lost.
  }
  cpu_seconds_.Increment(static_cast<double>(spent) / 1e9);
}

int ScrapeHandler::Handle(mg_connection* conn, void* handler) noexcept {
  auto* self = static_cast<ScrapeHandler*>(handler);
  const mg_request_info* request = mg_get_request_info(conn);
  int status = 405;
  if (request == nullptr || request->request_method == nullptr ||
      std::strcmp(request->request_method, "GET") != 0) {
    SendError(conn, 405, "Method Not Allowed", "Only GET is served here.\n");
  } else {
    try {
      status = self->Serve(conn);
    } catch (const std::exception&) {
      // Out of memory while collecting or rendering: nothing was sent yet.
      status = SendError(conn, 500, "Internal Server Error",
                         "The exporter could not render the metrics.\n");
    }
  }
  self->ChargeThisThread();
  return status;
}

ScrapeHandler::Page ScrapeHandler::Render() {
  std::vector<prometheus::MetricFamily> families = registry_.Collect();
  std::vector<prometheus::MetricFamily> collected = collector_->Collect();
  families.insert(families.end(), std::make_move_iterator(collected.begin()),
                  std::make_move_iterator(collected.end()));
  const std::string body = SerializeText(families);

  // Sent uncompressed: gzip would cost the host CPU at every scrape for a
  // page of a few kilobytes. "Connection: close" tells the client not to
  // reuse the connection, which the server closes after this response.
  // Headers and body go out in one write: a small header segment followed
  // by the body is what Nagle's algorithm holds back until the client's
  // delayed ACK (~48 ms per scrape on kept-alive connections with
  // prometheus-cpp's handler, which wrote headers in two pieces).
  Page page;
  page.body_bytes = body.size();
  page.response = absl::StrCat(
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
      "Content-Length: ",
      body.size(),
      "\r\n"
      "Connection: close\r\n\r\n",
      body);
  return page;
}

int ScrapeHandler::Serve(mg_connection* conn) {
  const auto start = std::chrono::steady_clock::now();
  const auto result = flight_.Get([this] {
    // Scrapes arriving during this wait join this render: its page is
    // rendered after they arrived.
    const auto waited = budget_.Wait(kMaxBudgetWait);
    if (waited.count() > 0) {
      throttled_seconds_.Increment(static_cast<double>(waited.count()) / 1e9);
    }
    return Render();
  });
  using Outcome = SingleFlight<Page>::Outcome;
  switch (result.outcome) {
    case Outcome::kRendered:
    case Outcome::kJoined:
      break;
    case Outcome::kFailed:
      // Out of memory while collecting or rendering: nothing was sent yet.
      return SendError(conn, 500, "Internal Server Error",
                       "The exporter could not render the metrics.\n");
    case Outcome::kClosed:
      return SendError(conn, 503, "Service Unavailable",
                       "The exporter is shutting down.\n");
    case Outcome::kTimedOut:
      return SendError(conn, 503, "Service Unavailable",
                       "The metrics took too long to render.\n");
  }
  const Page& page = *result.page;
  mg_write(conn, page.response.data(), page.response.size());

  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  try {
    latency_us_.Observe(static_cast<double>(elapsed.count()));
  } catch (const std::exception&) {
    // The response is sent: a latency the summary cannot store is dropped.
  }
  bytes_.Increment(static_cast<double>(page.body_bytes));
  scrapes_.Increment();
  if (result.outcome == Outcome::kJoined) coalesced_.Increment();
  return 200;
}

}  // namespace leakprobe::prometheus_exporter
