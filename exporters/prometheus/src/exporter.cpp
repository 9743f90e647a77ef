#include "leakprobe/prometheus/exporter.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/proc_fds.h"
#include "prometheus/exposer.h"

namespace leakprobe::prometheus_exporter {
namespace {

// strerror() is not thread-safe; the GNU strerror_r returns the message.
std::string ErrorText(int error) {
  char buf[128];
  return strerror_r(error, buf, sizeof buf);
}

bool IsIpv6(const std::string& host) { return host.find(':') != std::string::npos; }

// Why host:port cannot be bound, found by trying it ourselves: civetweb's
// own exception does not say.
std::string BindFailureReason(const std::string& host, int port) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (IsIpv6(host)) {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) != 1) {
      return "not an IPv6 address";
    }
    len = sizeof *a6;
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(&addr);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) {
      return "not an IPv4 address";
    }
    len = sizeof *a4;
  }
  const int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrorText(errno);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as civetweb
  std::string reason = "the HTTP server failed to start";
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    reason = ErrorText(errno);
  }
  close(fd);
  return reason;
}

int BoundPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  if (addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  }
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  }
  return -1;
}

}  // namespace

std::string ListeningAddress(const std::string& host, int port) {
  return IsIpv6(host) ? absl::StrCat("[", host, "]:", port)
                      : absl::StrCat(host, ":", port);
}

std::vector<int> FindListeningFds(int port) {
  std::vector<int> fds;
  std::vector<int> open_fds;
  ListOwnFds(&open_fds);
  for (const int fd : open_fds) {
    int listening = 0;
    socklen_t len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
        listening == 0) {
      continue;  // not a socket, or not listening
    }
    if (BoundPort(fd) == port) fds.push_back(fd);
  }
  return fds;
}

Exporter::Exporter(const std::string& host, int port,
                   std::shared_ptr<SnapshotCollector> collector)
    : host_(host), collector_(std::move(collector)) {
  const std::string address = ListeningAddress(host, port);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address,
        // One thread per connection: four scrapers at once.
        "num_threads", "4",
        // prometheus-cpp's handler writes no "Connection: close", so without
        // keep-alive an HTTP/1.1 client may reuse a connection the server
        // has just closed. Idle connections are let go quickly instead.
        "enable_keep_alive", "yes", "keep_alive_timeout_ms", "500",
        // A stuck client must not hold a server thread for long.
        "request_timeout_ms", "10000"});
  } catch (const std::exception&) {
    throw BindError(
        absl::StrCat("cannot listen on ", address, ": ", BindFailureReason(host, port)));
  }
  const std::vector<int> ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? port : ports.front();
  listening_fds_ = FindListeningFds(port_);
  exposer_->RegisterCollectable(collector_);
}

Exporter::~Exporter() {
  if (!exposer_) return;
  // Wake civetweb's master thread now rather than after its poll quantum.
  for (int fd : listening_fds_) shutdown(fd, SHUT_RDWR);
  exposer_.reset();
}

void Exporter::AbandonAfterFork() noexcept {
  for (int fd : listening_fds_) close(fd);
  listening_fds_.clear();
  collector_->Close();
  (void)exposer_.release();  // NOLINT(bugprone-unused-return-value): leaked on purpose
}

void Exporter::Release() noexcept {
  collector_->Close();
  (void)exposer_.release();  // NOLINT(bugprone-unused-return-value): leaked on purpose
}

}  // namespace leakprobe::prometheus_exporter
