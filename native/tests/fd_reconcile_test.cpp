// The reconciler against the real /proc/self/fd, with tables of the test's
// own (the test executable is never patched, so its calls make fds no hook
// sees: exactly the reconciler's job).
#include "leakprobe/fd/fd_reconcile.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "leakprobe/fd/fd_table.h"

namespace leakprobe {
namespace {

int RawOpen(const char* path, int flags) {
  return static_cast<int>(syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC));
}
void RawClose(int fd) { syscall(SYS_close, fd); }

std::uint64_t Sum(const std::array<std::uint64_t, kFdKindCount>& a) {
  std::uint64_t n = 0;
  for (auto v : a) n += v;
  return n;
}

TEST(FdReconcileTest, RawSyscallFdIsAddedUnattributedWithItsKind) {
  FdTable table;
  const int fd = RawOpen("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  const ReconcileResult r = ReconcileFds(table);
  EXPECT_GE(r.scanned, 4u);       // stdin, stdout, stderr and ours at least
  EXPECT_EQ(r.added, r.scanned);  // a fresh table knows nothing
  const auto record = table.Find(fd);
  ASSERT_TRUE(record.has_value());
  EXPECT_FALSE(record->attributed);
  EXPECT_EQ(record->kind, FdKind::kFile);
  EXPECT_TRUE(record->identity.known());
  EXPECT_EQ(Sum(table.Counters().opened), r.added);
  // A second pass changes nothing.
  const ReconcileResult again = ReconcileFds(table);
  EXPECT_EQ(again.added + again.retired + again.replaced, 0u);
  EXPECT_EQ(table.Find(fd)->sequence, record->sequence);
  RawClose(fd);
}

// One fd the test made, what it is, and the errno of its creation.
struct Made {
  const char* what;
  int fd;
  FdKind kind;
  int error;
};
Made Make(const char* what, int fd, FdKind kind) { return {what, fd, kind, errno}; }

// Reconciles a fresh table and checks each fd's record (a helper with
// ASSERTs: its callers check for its fatal failures).
void ExpectClassified(const std::vector<Made>& fds) {
  FdTable table;
  ReconcileFds(table);
  for (const Made& m : fds) {
    const auto record = table.Find(m.fd);
    ASSERT_TRUE(record.has_value()) << m.what << " fd " << m.fd;
    EXPECT_EQ(record->kind, m.kind)
        << m.what << " fd " << m.fd << " -> " << FdTarget(m.fd);
    EXPECT_FALSE(record->attributed) << m.what;
  }
}

void CloseAll(const std::vector<Made>& fds) {
  for (const Made& m : fds) {
    if (m.fd >= 0) close(m.fd);
  }
}

TEST(FdReconcileTest, KindsAreClassifiedFromTheFdAndItsTarget) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR2);
  int unix_pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, unix_pair), 0);
  // Each needs no privilege and no optional kernel feature: every one must
  // be made, and every one is checked.
  const std::vector<Made> fds = {
      {"pipe", p[0], FdKind::kPipe, 0},
      Make("eventfd", eventfd(0, EFD_CLOEXEC), FdKind::kEventfd),
      Make("epoll", epoll_create1(EPOLL_CLOEXEC), FdKind::kEpoll),
      Make("timerfd", timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), FdKind::kTimerfd),
      Make("signalfd", signalfd(-1, &mask, SFD_CLOEXEC), FdKind::kSignalfd),
      Make("inotify", inotify_init1(IN_CLOEXEC), FdKind::kInotify),
      Make("memfd", memfd_create("leakprobe-test", MFD_CLOEXEC), FdKind::kMemfd),
      Make("tcp", socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), FdKind::kTcp),
      Make("udp", socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), FdKind::kUdp),
      {"unix", unix_pair[0], FdKind::kUnix, 0},
      Make("netlink", socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE),
           FdKind::kOther),
      Make("directory", RawOpen("/", O_RDONLY | O_DIRECTORY), FdKind::kFile),
  };
  for (const Made& m : fds) {
    ASSERT_GE(m.fd, 0) << m.what << ": " << std::strerror(m.error);
  }
  EXPECT_NO_FATAL_FAILURE(ExpectClassified(fds));
  CloseAll(fds);
  close(p[1]);
  close(unix_pair[1]);
}

TEST(FdReconcileTest, Ipv6SocketsAreClassified) {
  const std::vector<Made> fds = {
      Make("tcp6", socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), FdKind::kTcp6),
      Make("udp6", socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), FdKind::kUdp),
  };
  for (const Made& m : fds) {
    if (m.fd < 0 && m.error == EAFNOSUPPORT) {
      CloseAll(fds);
      GTEST_SKIP() << "IPv6 is not available in this kernel: " << m.what << ": "
                   << std::strerror(m.error);
    }
    ASSERT_GE(m.fd, 0) << m.what << ": " << std::strerror(m.error);
  }
  EXPECT_NO_FATAL_FAILURE(ExpectClassified(fds));
  CloseAll(fds);
}

TEST(FdReconcileTest, RawInetSocketIsOther) {
  const Made raw = Make(
      "raw icmp", socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP), FdKind::kOther);
  if (raw.fd < 0 && (raw.error == EPERM || raw.error == EACCES)) {
    GTEST_SKIP() << "a raw socket needs CAP_NET_RAW: " << std::strerror(raw.error);
  }
  ASSERT_GE(raw.fd, 0) << std::strerror(raw.error);
  EXPECT_NO_FATAL_FAILURE(ExpectClassified({raw}));
  CloseAll({raw});
}

TEST(FdReconcileTest, TargetsNameTheirKinds) {
  EXPECT_EQ(KindOfTarget("pipe:[1234]"), FdKind::kPipe);
  EXPECT_EQ(KindOfTarget("anon_inode:[eventfd]"), FdKind::kEventfd);
  EXPECT_EQ(KindOfTarget("anon_inode:[eventpoll]"), FdKind::kEpoll);
  EXPECT_EQ(KindOfTarget("anon_inode:[timerfd]"), FdKind::kTimerfd);
  EXPECT_EQ(KindOfTarget("anon_inode:[signalfd]"), FdKind::kSignalfd);
  EXPECT_EQ(KindOfTarget("anon_inode:inotify"), FdKind::kInotify);
  EXPECT_EQ(KindOfTarget("anon_inode:[pidfd]"), FdKind::kOther);
  EXPECT_EQ(KindOfTarget("/memfd:cache (deleted)"), FdKind::kMemfd);
  EXPECT_EQ(KindOfTarget("/var/log/app.log"), FdKind::kFile);
  EXPECT_EQ(KindOfTarget("net:[4026531840]"), FdKind::kOther);
  EXPECT_EQ(KindOfTarget(""), FdKind::kOther);
}

TEST(FdReconcileTest, FdClosedBehindOurBackIsRetired) {
  FdTable table;
  const int fd = RawOpen("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  table.RecordOpen(fd, FdKind::kFile, 7);  // as a hook would
  ReconcileFds(table);
  ASSERT_TRUE(table.Find(fd).has_value());
  const std::uint64_t closed = table.Counters().closed[static_cast<int>(FdKind::kFile)];
  RawClose(fd);  // no hook sees this
  const ReconcileResult r = ReconcileFds(table);
  EXPECT_EQ(r.retired, 1u);
  EXPECT_FALSE(table.Find(fd).has_value());
  EXPECT_EQ(table.Counters().closed[static_cast<int>(FdKind::kFile)], closed + 1);
}

TEST(FdReconcileTest, NumberReusedBehindOurBackIsReplaced) {
  FdTable table;
  const int fd = RawOpen("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  table.RecordOpen(fd, FdKind::kFile, 7);
  ReconcileFds(table);  // learns what fd is
  const auto before = table.Find(fd);
  ASSERT_TRUE(before.has_value() && before->identity.known());
  // The same number now holds an eventfd; no hook saw the close or the dup.
  const int other = eventfd(0, EFD_CLOEXEC);
  ASSERT_EQ(syscall(SYS_dup3, other, fd, O_CLOEXEC), fd);
  RawClose(other);
  const ReconcileResult r = ReconcileFds(table);
  EXPECT_EQ(r.replaced, 1u);
  const auto after = table.Find(fd);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->kind, FdKind::kEventfd);
  EXPECT_FALSE(after->attributed);
  EXPECT_GT(after->sequence, before->sequence);
  EXPECT_NE(after->identity, before->identity);
  const FdCounters c = table.Counters();
  EXPECT_EQ(c.replaced, 1u);
  EXPECT_EQ(c.closed[static_cast<int>(FdKind::kFile)], 1u);
  EXPECT_EQ(c.opened[static_cast<int>(FdKind::kEventfd)], 1u);
  RawClose(fd);
}

TEST(FdReconcileTest, HookRecordingAnFdTheReconcilerJustFoundTakesItOver) {
  FdTable table;
  const int fd = RawOpen("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  const std::uint64_t call_sequence = table.CurrentSequence();  // the hook's call begins
  ReconcileFds(table);  // finds fd before the hook records it
  ASSERT_FALSE(table.Find(fd)->attributed);
  const std::uint64_t opened = table.Counters().opened[static_cast<int>(FdKind::kFile)];
  table.RecordOpen(fd, FdKind::kFile, 9, call_sequence);
  const auto record = table.Find(fd);
  EXPECT_TRUE(record->attributed);
  EXPECT_EQ(record->stack_id, 9u);
  EXPECT_EQ(table.Counters().replaced, 0u);
  EXPECT_EQ(table.Counters().opened[static_cast<int>(FdKind::kFile)], opened);
  // Without the call sequence (an older reconcile record): a replacement.
  table.RecordOpen(fd, FdKind::kFile, 10);
  EXPECT_EQ(table.Counters().replaced, 1u);
  RawClose(fd);
}

// Raises the soft limit towards `want`, as far as the hard limit allows.
void RaiseFdLimit(rlim_t want) {
  rlimit r{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &r), 0) << std::strerror(errno);
  if (r.rlim_cur < want && r.rlim_max > r.rlim_cur) {
    r.rlim_cur = std::min(want, r.rlim_max);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &r), 0) << std::strerror(errno);
  }
}

TEST(FdReconcileTest, ThousandsOfFds) {
  ASSERT_NO_FATAL_FAILURE(RaiseFdLimit(8192));
  rlimit r{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &r), 0);
  const int n = std::min<int>(4000, static_cast<int>(r.rlim_cur) - 100);
  ASSERT_GE(n, 500) << "RLIMIT_NOFILE too low";
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    const int fd = i % 2 == 0 ? RawOpen("/dev/null", O_RDONLY) : eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  FdTable table;
  const ReconcileResult first = ReconcileFds(table);
  EXPECT_GE(first.added, static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto record = table.Find(fds[i]);
    ASSERT_TRUE(record.has_value()) << fds[i];
    ASSERT_EQ(record->kind, i % 2 == 0 ? FdKind::kFile : FdKind::kEventfd);
  }
  for (int i = 0; i < n; i += 2) RawClose(fds[i]);
  const ReconcileResult second = ReconcileFds(table);
  EXPECT_EQ(second.retired, static_cast<std::size_t>(n / 2));
  EXPECT_EQ(second.added, 0u);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(table.Find(fds[i]).has_value(), i % 2 == 1) << fds[i];
  }
  for (int i = 1; i < n; i += 2) RawClose(fds[i]);
  EXPECT_GE(GetReconcileStats().reconciles, 2u);
}

TEST(FdReconcileTest, RecordsMadeDuringAPassAreNeverRetired) {
  // A hook records fds while passes run. An fd opened after the listing went
  // past its number is not listed, yet must not be retired: its record is
  // newer than the pass. Each record is checked once two passes have ended
  // since it was made, so the pass it raced with is over.
  FdTable table;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> passes{0};
  std::thread reconciler([&] {
    while (!stop.load()) {
      ReconcileFds(table);
      passes.fetch_add(1);
    }
  });
  int lost = 0;
  for (int i = 0; i < 300; ++i) {
    const std::uint64_t call_sequence = table.CurrentSequence();
    const int fd = RawOpen("/dev/null", O_RDONLY);
    ASSERT_GE(fd, 0);
    table.RecordOpen(fd, FdKind::kFile, 42, call_sequence);
    const std::uint64_t sequence = table.Find(fd)->sequence;
    const std::uint64_t seen = passes.load();
    while (passes.load() < seen + 2) std::this_thread::yield();
    const auto record = table.Find(fd);
    if (!record || record->sequence != sequence || !record->attributed) ++lost;
    table.RetireBeforeClose(fd);
    RawClose(fd);
  }
  stop.store(true);
  reconciler.join();
  EXPECT_EQ(lost, 0);
  // Not asserted: replaced == 0. A pass that fstat()s an fd just before this
  // loop closes it, then finds its slot empty (retired), adds an
  // unattributed record for a file that is gone; the next open of the
  // number then counts it replaced. That is the reconciler's known
  // inaccuracy (docs/fds.md), not a lost record; under load it happened in
  // about one run in six.
}

TEST(FdReconcileTest, ClearForgetsRecordsAndCounters) {
  FdTable table;
  ReconcileFds(table);
  ASSERT_FALSE(table.OpenFds().empty());
  table.Clear();
  EXPECT_TRUE(table.OpenFds().empty());
  EXPECT_EQ(Sum(table.Counters().opened), 0u);
  // What is open is found again.
  EXPECT_GT(ReconcileFds(table).added, 0u);
}

}  // namespace
}  // namespace leakprobe
