// Reconciliation of the fd table with /proc/self/fd (see
// leakprobe/fd/fd_reconcile.h).
#include "leakprobe/fd/fd_reconcile.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/runtime/proc_fds.h"
#include "leakprobe/runtime/utf8.h"

namespace leakprobe {
namespace {

struct ReconcilerState {
  Mutex mu;  // one pass at a time
  std::atomic<std::uint64_t> reconciles{0};
  std::atomic<std::int64_t> last_ns{0};
};

ReconcilerState& State() {
  // Leaked: the sampler thread may still reconcile during exit.
  static ReconcilerState* const state = [] {
    auto* s = new ReconcilerState();
    // A child forked during a pass would inherit the mutex locked.
    RegisterForkLock(ForkStage::kReconciler, &s->mu);
    return s;
  }();
  return *state;
}

bool StartsWith(std::string_view s, std::string_view prefix) noexcept {
  return s.substr(0, prefix.size()) == prefix;
}

FdKind ClassifySocket(int fd) noexcept {
  int domain = 0, type = 0, protocol = 0;
  socklen_t len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return FdKind::kOther;
  len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return FdKind::kOther;
  len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0) {
    return FdKind::kOther;
  }
  return SocketKind(domain, type, protocol);
}

FdKind Classify(int fd, const struct stat& st) {
  if (S_ISSOCK(st.st_mode)) return ClassifySocket(fd);
  return KindOfTarget(FdTarget(fd));
}

}  // namespace

FdKind KindOfTarget(std::string_view target) noexcept {
  if (target.empty()) return FdKind::kOther;
  if (StartsWith(target, "pipe:[")) return FdKind::kPipe;
  if (StartsWith(target, "/memfd:")) return FdKind::kMemfd;
  if (StartsWith(target, "anon_inode:")) {
    const std::string_view what = target.substr(11);
    if (what == "[eventfd]") return FdKind::kEventfd;
    if (what == "[eventpoll]") return FdKind::kEpoll;
    if (what == "[timerfd]") return FdKind::kTimerfd;
    if (what == "[signalfd]") return FdKind::kSignalfd;
    if (what == "inotify" || what == "[inotify]") return FdKind::kInotify;
    return FdKind::kOther;  // pidfd, io_uring, perf_event, bpf, ...
  }
  if (target[0] == '/') return FdKind::kFile;
  return FdKind::kOther;  // socket:[..] without the fd, net:[..], mnt:[..], ...
}

std::string FdTarget(int fd) {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  char target[4096];
  const ssize_t n = readlink(path, target, sizeof target);
  if (n <= 0) return "";
  // A path is bytes; the target becomes a str and may reach a label.
  return ToValidUtf8(std::string_view(target, static_cast<std::size_t>(n)));
}

FdKind ClassifyFd(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return FdKind::kOther;
  return Classify(fd, st);
}

ReconcileResult ReconcileFds(FdTable& table) {
  ReconcilerState& state = State();
  MutexLock lock(&state.mu);
  const std::int64_t start = MonotonicNs();
  ReconcileResult result;
  // Records up to this sequence existed before the listing began: each of
  // their fds, if still open, is listed.
  const std::uint64_t before = table.CurrentSequence();
  std::vector<int> fds;
  {
    if (ListOwnFds(&fds)) {
      result.scanned = fds.size();
      for (const int fd : fds) {
        struct stat st {};
        if (fstat(fd, &st) != 0) continue;  // closed meanwhile
        const FdIdentity identity{static_cast<std::uint64_t>(st.st_dev),
                                  static_cast<std::uint64_t>(st.st_ino)};
        const std::optional<FdRecord> record = table.Find(fd);
        if (!record) {
          if (table.RecordFound(fd, Classify(fd, st), identity)) ++result.added;
        } else if (!record->identity.known()) {
          table.SetIdentity(fd, record->sequence, identity);
        } else if (record->identity != identity) {
          if (table.ReplaceFound(fd, record->sequence, Classify(fd, st), identity)) {
            ++result.replaced;
          }
        }
      }
      // Retire what was not listed: a merge of two ascending sequences.
      const std::size_t high = std::min(table.high_water(), table.capacity());
      std::size_t next = 0;
      for (std::size_t fd = 0; fd < high; ++fd) {
        while (next < fds.size() && static_cast<std::size_t>(fds[next]) < fd) ++next;
        if (next < fds.size() && static_cast<std::size_t>(fds[next]) == fd) continue;
        result.retired += table.RetireRange(static_cast<unsigned>(fd),
                                            static_cast<unsigned>(fd), before);
      }
    }
  }
  const std::int64_t elapsed = MonotonicNs() - start;
  result.seconds = static_cast<double>(elapsed) / 1e9;
  state.reconciles.fetch_add(1, std::memory_order_relaxed);
  state.last_ns.store(elapsed, std::memory_order_relaxed);
  return result;
}

ReconcileStats GetReconcileStats() noexcept {
  ReconcilerState& state = State();
  ReconcileStats s;
  s.reconciles = state.reconciles.load(std::memory_order_relaxed);
  s.last_seconds =
      static_cast<double>(state.last_ns.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

void ResetReconcileStats() noexcept {
  ReconcilerState& state = State();
  state.reconciles.store(0, std::memory_order_relaxed);
  state.last_ns.store(0, std::memory_order_relaxed);
}

}  // namespace leakprobe
