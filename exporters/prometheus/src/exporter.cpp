#include "leakprobe/prometheus/exporter.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/runtime/proc_fds.h"
#include "scrape_handler.h"

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

// How much nicer than the host the server threads run: under CPU contention
// the host's own threads get the larger share, while a scrape (~0.1-0.2 ms
// of CPU) still gets its own (nice +10 weighs about a tenth of nice 0).
constexpr int kServerNiceIncrement = 10;

// civetweb's init_thread callback, run by each server thread as it starts
// (the policy and the nice value are per thread on Linux; the host's threads
// keep theirs). SCHED_BATCH: waking to serve a scrape never preempts a host
// thread, the scheduler's tick decides when it runs (at plain nice +10 every
// scrape's wake-ups preempted the loop of the scrape-load benchmark: 1,000
// more involuntary switches a second). Not SCHED_IDLE: its weight (3, a
// three-hundredth of nice 0) let a scrape of a host saturated by eight busy
// processes take 1-4 s. The accepting (master) thread's CPU clock goes to
// the handler, which charges it to the CPU budget with the scrapes'.
void* LowerServerThreadPriority(const mg_context* context, int thread_type) {
  MarkOwnThread();  // what a scrape allocates is leakprobe's own memory
  if (thread_type == 0) {
    auto* handler = static_cast<ScrapeHandler*>(mg_get_user_data(context));
    clockid_t clock{};
    if (handler != nullptr && pthread_getcpuclockid(pthread_self(), &clock) == 0) {
      handler->SetAcceptThreadClock(clock);
    }
  }
  const sched_param param{};
  (void)sched_setscheduler(0, SCHED_BATCH, &param);  // keeps the nice value
  const auto tid = static_cast<id_t>(gettid());
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, tid);
  if (errno == 0) {
    (void)setpriority(PRIO_PROCESS, tid, std::min(nice + kServerNiceIncrement, 19));
  }
  return nullptr;
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
                   std::shared_ptr<SnapshotCollector> collector, double cpu_share)
    : host_(host),
      handler_(std::make_unique<ScrapeHandler>(std::move(collector), cpu_share)) {
  const std::string address = ListeningAddress(host, port);
  const char* options[] = {
      "listening_ports", address.c_str(),
      // A fixed pool: a storm of scrapers waits in the accept queue, it
      // never adds threads.
      "num_threads", "4",
      // One request per connection (the handler says "Connection: close"):
      // a thread is held only while a scrape is served, never by a client
      // idling between scrapes on a kept-alive connection.
      "enable_keep_alive", "no",
      // A client that connects and sends nothing lets its thread go.
      "request_timeout_ms", "10000", nullptr};
  mg_callbacks callbacks{};
  callbacks.init_thread = &LowerServerThreadPriority;
  context_ = mg_start(&callbacks, handler_.get(), options);
  if (context_ == nullptr) {
    throw BindError(
        absl::StrCat("cannot listen on ", address, ": ", BindFailureReason(host, port)));
  }
  mg_set_request_handler(context_, "/metrics", &ScrapeHandler::Handle, handler_.get());
  mg_server_port ports[4];
  const int count = mg_get_server_ports(context_, 4, ports);
  port_ = count > 0 ? ports[0].port : port;
  listening_fds_ = FindListeningFds(port_);
}

Exporter::~Exporter() {
  if (context_ == nullptr) return;
  // Scrapes waiting for a render answer 503 now instead of keeping their
  // threads from the join below.
  handler_->Shutdown();
  // Wake civetweb's master thread now rather than after its poll quantum.
  for (int fd : listening_fds_) shutdown(fd, SHUT_RDWR);
  mg_stop(context_);  // joins the server threads before handler_ goes
}

void Exporter::AbandonAfterFork() noexcept {
  for (int fd : listening_fds_) close(fd);
  listening_fds_.clear();
  // Not Shutdown(): the handler's lock may be held by a parent thread that
  // does not exist here; no thread of this child waits on it anyway.
  Leak();
}

void Exporter::Release() noexcept {
  if (handler_) {
    try {
      handler_->Shutdown();
    } catch (const std::exception&) {
      // A lock that fails to lock (std::system_error): the waiters' own
      // deadline wakes them, and the process is exiting.
    }
  }
  Leak();
}

void Exporter::Leak() noexcept {
  if (handler_) handler_->Close();
  // Leaked on purpose: server threads may still be in the handler.
  context_ = nullptr;
  (void)handler_.release();  // NOLINT(bugprone-unused-return-value)
}

}  // namespace leakprobe::prometheus_exporter
