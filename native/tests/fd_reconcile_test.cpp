// The reconciler against the real /proc/self/fd, with tables of the test's
// own (the test executable is never patched, so its calls make fds no hook
// sees: exactly the reconciler's job).
#include "leakprobe/fd/fd_reconcile.h"

#include <fcntl.h>
#include <gtest/gtest.h>
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

TEST(FdReconcileTest, KindsAreClassifiedFromTheFdAndItsTarget) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR2);
  int unix_pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, unix_pair), 0);
  const std::vector<std::pair<int, FdKind>> fds = {
      {p[0], FdKind::kPipe},
      {eventfd(0, EFD_CLOEXEC), FdKind::kEventfd},
      {epoll_create1(EPOLL_CLOEXEC), FdKind::kEpoll},
      {timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), FdKind::kTimerfd},
      {signalfd(-1, &mask, SFD_CLOEXEC), FdKind::kSignalfd},
      {inotify_init1(IN_CLOEXEC), FdKind::kInotify},
      {memfd_create("leakprobe-test", MFD_CLOEXEC), FdKind::kMemfd},
      {socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), FdKind::kTcp},
      {socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), FdKind::kTcp6},
      {socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), FdKind::kUdp},
      {socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), FdKind::kUdp},
      {unix_pair[0], FdKind::kUnix},
      {socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP), FdKind::kOther},
      {RawOpen("/", O_RDONLY | O_DIRECTORY), FdKind::kFile},
  };
  FdTable table;
  ReconcileFds(table);
  for (const auto& [fd, kind] : fds) {
    if (fd < 0) continue;  // e.g. raw sockets need a capability, IPv6 may be off
    const auto record = table.Find(fd);
    ASSERT_TRUE(record.has_value()) << fd;
    EXPECT_EQ(record->kind, kind) << "fd " << fd << " -> " << FdTarget(fd);
    EXPECT_FALSE(record->attributed);
  }
  for (const auto& [fd, kind] : fds) {
    if (fd >= 0) close(fd);
  }
  close(p[1]);
  close(unix_pair[1]);
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

void RaiseFdLimit(rlim_t want) {
  rlimit r{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &r), 0);
  if (r.rlim_cur < want && r.rlim_max > r.rlim_cur) {
    r.rlim_cur = std::min(want, r.rlim_max);
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

TEST(FdReconcileTest, ThousandsOfFds) {
  RaiseFdLimit(8192);
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
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
  EXPECT_EQ(table.Counters().replaced, 0u);
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
