#include "leakprobe/prometheus/peers.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/runtime/mutex.h"

namespace leakprobe::prometheus_exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// ---- process role ---------------------------------------------------------

struct RoleSlot {
  Mutex mu;
  std::string role ABSL_GUARDED_BY(mu) = "main";
};

RoleSlot& Role() {
  static RoleSlot* const slot = [] {
    auto* s = new RoleSlot();  // never destroyed: read at exit
    // A scrape may hold it while another thread forks: the fork protocol
    // takes it first, so the child never inherits it held.
    RegisterForkLock(ForkStage::kRole, &s->mu);
    return s;
  }();
  return *slot;
}

// ---- codec ----------------------------------------------------------------

constexpr std::string_view kMagic = "LPF1";

void PutU32(std::string* out, std::uint32_t v) {
  char bytes[4];
  std::memcpy(bytes, &v, sizeof v);
  out->append(bytes, sizeof bytes);
}

void PutString(std::string* out, std::string_view s) {
  PutU32(out, static_cast<std::uint32_t>(s.size()));
  out->append(s);
}

void PutDouble(std::string* out, double v) {
  char bytes[8];
  std::memcpy(bytes, &v, sizeof v);
  out->append(bytes, sizeof bytes);
}

// Reads what PutU32/PutString/PutDouble wrote; every read fails (and
// stays failed) past the end of the data.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool U32(std::uint32_t* v) {
    if (!Take(sizeof *v)) return false;
    std::memcpy(v, data_.data() + pos_ - sizeof *v, sizeof *v);
    return true;
  }
  bool Double(double* v) {
    if (!Take(sizeof *v)) return false;
    std::memcpy(v, data_.data() + pos_ - sizeof *v, sizeof *v);
    return true;
  }
  bool String(std::string* s) {
    std::uint32_t size = 0;
    if (!U32(&size) || !Take(size)) return false;
    s->assign(data_.data() + pos_ - size, size);
    return true;
  }
  bool Magic() {
    if (!Take(kMagic.size())) return false;
    return data_.substr(0, kMagic.size()) == kMagic;
  }
  bool AtEnd() const { return pos_ == data_.size(); }
  // A count of items each at least `min_bytes` long cannot exceed what is left.
  bool Plausible(std::uint32_t count, std::size_t min_bytes) const {
    return count <= (data_.size() - pos_) / min_bytes;
  }

 private:
  bool Take(std::size_t n) {
    if (failed_ || n > data_.size() - pos_) {
      failed_ = true;
      return false;
    }
    pos_ += n;
    return true;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

template <typename Metric>
auto& ValueOf(Metric& metric, MetricType type) {
  switch (type) {
    case MetricType::Counter:
      return metric.counter.value;
    case MetricType::Gauge:
      return metric.gauge.value;
    default:
      return metric.untyped.value;
  }
}

bool Encodable(MetricType type) {
  return type == MetricType::Counter || type == MetricType::Gauge ||
         type == MetricType::Untyped;
}

// ---- sockets --------------------------------------------------------------

// sockaddr_un of an abstract name; `len` is the address length to pass.
sockaddr_un AbstractAddress(const std::string& name, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::size_t n = std::min(name.size(), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);  // sun_path[0] = '\0'
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return addr;
}

// Whether the process at the other end of `fd` runs as our user (or root).
bool SameUser(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == getuid() || cred.uid == 0;
}

std::string ReadProcNetUnix() {
  std::ifstream in("/proc/net/unix");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// One connection of a fetch.
struct Pending {
  int fd = -1;
  std::string data;
  bool done = false;
};

constexpr int kServerNiceIncrement = 10;  // as the HTTP server's threads

}  // namespace

void SetProcessRole(std::string role) {
  RoleSlot& slot = Role();
  MutexLock lock(&slot.mu);
  slot.role = std::move(role);
}

std::string ProcessRole() {
  RoleSlot& slot = Role();
  MutexLock lock(&slot.mu);
  return slot.role;
}

void AddProcessLabels(std::vector<MetricFamily>* families, pid_t pid,
                      const std::string& role) {
  const std::string pid_text = std::to_string(pid);
  for (MetricFamily& family : *families) {
    for (ClientMetric& metric : family.metric) {
      metric.label.push_back({"pid", pid_text});
      metric.label.push_back({"role", role});
    }
  }
}

std::string EncodeFamilies(const std::vector<MetricFamily>& families) {
  std::string out(kMagic);
  std::uint32_t count = 0;
  for (const MetricFamily& family : families) count += Encodable(family.type) ? 1 : 0;
  PutU32(&out, count);
  for (const MetricFamily& family : families) {
    if (!Encodable(family.type)) continue;
    PutString(&out, family.name);
    PutString(&out, family.help);
    PutU32(&out, static_cast<std::uint32_t>(family.type));
    PutU32(&out, static_cast<std::uint32_t>(family.metric.size()));
    for (const ClientMetric& metric : family.metric) {
      PutU32(&out, static_cast<std::uint32_t>(metric.label.size()));
      for (const ClientMetric::Label& label : metric.label) {
        PutString(&out, label.name);
        PutString(&out, label.value);
      }
      PutDouble(&out, ValueOf(metric, family.type));
    }
  }
  return out;
}

bool DecodeFamilies(std::string_view data, std::vector<MetricFamily>* out) {
  Reader in(data);
  std::uint32_t families = 0;
  if (!in.Magic() || !in.U32(&families) || !in.Plausible(families, 16)) return false;
  std::vector<MetricFamily> decoded(families);
  for (MetricFamily& family : decoded) {
    std::uint32_t type = 0;
    std::uint32_t metrics = 0;
    if (!in.String(&family.name) || !in.String(&family.help) || !in.U32(&type) ||
        !in.U32(&metrics) || !in.Plausible(metrics, 12)) {
      return false;
    }
    family.type = static_cast<MetricType>(type);
    if (!Encodable(family.type)) return false;
    family.metric.resize(metrics);
    for (ClientMetric& metric : family.metric) {
      std::uint32_t labels = 0;
      if (!in.U32(&labels) || !in.Plausible(labels, 8)) return false;
      metric.label.resize(labels);
      for (ClientMetric::Label& label : metric.label) {
        if (!in.String(&label.name) || !in.String(&label.value)) return false;
      }
      if (!in.Double(&ValueOf(metric, family.type))) return false;
    }
  }
  if (!in.AtEnd()) return false;
  out->insert(out->end(), std::make_move_iterator(decoded.begin()),
              std::make_move_iterator(decoded.end()));
  return true;
}

int MergeFamilies(std::vector<MetricFamily>* into, std::vector<MetricFamily> from) {
  absl::flat_hash_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < into->size(); ++i) index.emplace((*into)[i].name, i);
  int conflicts = 0;
  for (MetricFamily& family : from) {
    const auto it = index.find(family.name);
    if (it == index.end()) {
      index.emplace(family.name, into->size());
      into->push_back(std::move(family));
      continue;
    }
    MetricFamily& target = (*into)[it->second];
    if (target.type != family.type) {
      ++conflicts;
      continue;
    }
    target.metric.insert(target.metric.end(),
                         std::make_move_iterator(family.metric.begin()),
                         std::make_move_iterator(family.metric.end()));
  }
  return conflicts;
}

std::string PeerSocketName(uid_t uid, int group_port, pid_t pid) {
  return absl::StrCat("leakprobe-", uid, "-", group_port, "-", pid);
}

std::vector<pid_t> ParsePeerPids(std::string_view proc_net_unix, uid_t uid,
                                 int group_port) {
  // Lines: "Num RefCount Protocol Flags Type St Inode Path"; an abstract
  // name's path starts with '@'. Accepted connections carry their
  // listener's name too: duplicates are removed.
  const std::string prefix = absl::StrCat("@leakprobe-", uid, "-", group_port, "-");
  std::vector<pid_t> pids;
  std::size_t start = 0;
  while (start < proc_net_unix.size()) {
    std::size_t end = proc_net_unix.find('\n', start);
    if (end == std::string_view::npos) end = proc_net_unix.size();
    const std::string_view line = proc_net_unix.substr(start, end - start);
    start = end + 1;
    const std::size_t at = line.rfind(' ');
    if (at == std::string_view::npos) continue;
    const std::string_view path = line.substr(at + 1);
    if (path.substr(0, prefix.size()) != prefix) continue;
    int pid = 0;
    const std::string_view digits = path.substr(prefix.size());
    if (absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &pid) &&
        pid > 0) {
      pids.push_back(pid);
    }
  }
  std::sort(pids.begin(), pids.end());
  pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  return pids;
}

std::vector<pid_t> GroupPids(int group_port) {
  return ParsePeerPids(ReadProcNetUnix(), getuid(), group_port);
}

PeerFetch FetchPeers(int group_port, pid_t self, std::chrono::milliseconds deadline) {
  PeerFetch result;
  std::vector<pid_t> pids = GroupPids(group_port);
  pids.erase(std::remove(pids.begin(), pids.end(), self), pids.end());
  if (pids.size() > static_cast<std::size_t>(kMaxPeers)) pids.resize(kMaxPeers);
  result.listed = static_cast<int>(pids.size());

  std::vector<Pending> pending;
  pending.reserve(pids.size());
  for (const pid_t pid : pids) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++result.connect_failed;
      continue;
    }
    socklen_t len = 0;
    const sockaddr_un addr =
        AbstractAddress(PeerSocketName(getuid(), group_port, pid), &len);
    // A Unix stream socket connects at once or not at all (EAGAIN: the
    // peer's backlog is full; ECONNREFUSED: gone since the listing).
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
      ++result.connect_failed;
      close(fd);
      continue;
    }
    if (!SameUser(fd)) {
      ++result.foreign;  // a name squatted by another user: never read
      close(fd);
      continue;
    }
    pending.push_back({fd, {}, false});
  }

  const auto until = std::chrono::steady_clock::now() + deadline;
  std::vector<pollfd> polled;
  std::vector<Pending*> polled_for;
  char buf[65536];
  for (;;) {
    polled.clear();
    polled_for.clear();
    for (Pending& p : pending) {
      if (p.done) continue;
      polled.push_back({p.fd, POLLIN, 0});
      polled_for.push_back(&p);
    }
    if (polled.empty()) break;
    // Rounded up: a poll that wakes a fraction of a millisecond early would
    // end the collection before the deadline it promises.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    const int ready = poll(polled.data(), polled.size(), static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < polled.size(); ++i) {
      if (polled[i].revents == 0) continue;
      Pending& p = *polled_for[i];
      for (;;) {
        const ssize_t n = read(p.fd, buf, sizeof buf);
        if (n > 0) {
          if (p.data.size() + static_cast<std::size_t>(n) > kMaxPeerBytes) {
            p.done = true;
            p.data.clear();
            ++result.malformed;  // too large: dropped whole
            break;
          }
          p.data.append(buf, static_cast<std::size_t>(n));
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        p.done = true;  // end of its answer (or an error: the decode says)
        std::vector<MetricFamily> families;
        if (n == 0 && DecodeFamilies(p.data, &families)) {
          ++result.collected;
          result.conflicts += MergeFamilies(&result.families, std::move(families));
        } else {
          ++result.malformed;
        }
        p.data = std::string();
        break;
      }
    }
  }
  for (Pending& p : pending) {
    if (!p.done) ++result.timed_out;
    close(p.fd);
  }
  return result;
}

PeerServer::PeerServer(int group_port, Render render)
    : group_port_(group_port), render_(std::move(render)) {
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  socklen_t len = 0;
  const std::string name = PeerSocketName(getuid(), group_port, getpid());
  const sockaddr_un addr = AbstractAddress(name, &len);
  if (listen_fd_ < 0 || wake_fd_ < 0 ||
      bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), len) != 0 ||
      listen(listen_fd_, 64) != 0) {
    const int error = errno;
    if (listen_fd_ >= 0) close(listen_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
    char text[128];
    throw Error(absl::StrCat("cannot listen on the private socket @", name, ": ",
                             strerror_r(error, text, sizeof text)));
  }
  thread_ = std::thread([this] {
    MarkOwnThread();  // what it allocates is leakprobe's own memory
    Run();
  });
}

PeerServer::~PeerServer() {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    (void)write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void PeerServer::AbandonAfterFork() noexcept {
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  listen_fd_ = -1;
  wake_fd_ = -1;
  // The thread does not exist in the child; the std::thread object must
  // never be joined or destroyed here: the caller leaks this object.
}

void PeerServer::Run() {
  const auto tid = static_cast<id_t>(gettid());
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, tid);
  if (errno == 0) {
    (void)setpriority(PRIO_PROCESS, tid, std::min(nice + kServerNiceIncrement, 19));
  }
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // the destructor asks us to stop
    if (fds[0].revents == 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    Answer(fd);
    close(fd);
  }
}

void PeerServer::Answer(int fd) {
  if (!SameUser(fd)) return;  // another user's process asks: nothing said
  // A holder that stops reading must not hold this thread for long.
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  std::string data;
  try {
    data = render_();
  } catch (const std::exception&) {
    return;  // out of memory while rendering: the holder counts it malformed
  }
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += static_cast<std::size_t>(n);
  }
  served_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace leakprobe::prometheus_exporter
