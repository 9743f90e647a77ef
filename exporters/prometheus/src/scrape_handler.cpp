#include "scrape_handler.h"

#include <civetweb.h>

#include <chrono>
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

}  // namespace

ScrapeHandler::ScrapeHandler(std::shared_ptr<SnapshotCollector> collector)
    : collector_(std::move(collector)),
      flight_(kMaxJoinWait),
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
                      .Add({}, LatencyQuantiles())) {}

int ScrapeHandler::Handle(mg_connection* conn, void* handler) noexcept {
  const mg_request_info* request = mg_get_request_info(conn);
  if (request == nullptr || request->request_method == nullptr ||
      std::strcmp(request->request_method, "GET") != 0) {
    return SendError(conn, 405, "Method Not Allowed", "Only GET is served here.\n");
  }
  try {
    return static_cast<ScrapeHandler*>(handler)->Serve(conn);
  } catch (const std::exception&) {
    // Out of memory while collecting or rendering: nothing was sent yet.
    return SendError(conn, 500, "Internal Server Error",
                     "The exporter could not render the metrics.\n");
  }
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
  const auto result = flight_.Get([this] { return Render(); });
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
