#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/fd/fd_table.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "fd_test_lib_loader.h"
#include "leakprobe/interpose/interpose.h"

namespace leakprobe {
namespace {

using testing::FdTestLib;

// --- The table on its own ------------------------------------------------------

TEST(FdTableTest, RecordsRetiresAndCountsByKind) {
  FdTable t(16);
  t.RecordOpen(3, FdKind::kTcp, 7);
  t.RecordOpen(4, FdKind::kPipe, kNoStackId);
  auto r = t.Find(3);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->kind, FdKind::kTcp);
  EXPECT_EQ(r->stack_id, 7u);
  EXPECT_GT(r->created_ns, 0);
  EXPECT_EQ(t.KindOf(4), FdKind::kPipe);
  t.RetireBeforeClose(3);
  EXPECT_FALSE(t.Find(3).has_value());
  t.RetireBeforeClose(3);  // a second close of the same number counts nothing
  const FdCounters c = t.Counters();
  EXPECT_EQ(c.opened[static_cast<int>(FdKind::kTcp)], 1u);
  EXPECT_EQ(c.closed[static_cast<int>(FdKind::kTcp)], 1u);
  EXPECT_EQ(c.opened[static_cast<int>(FdKind::kPipe)], 1u);
  EXPECT_EQ(t.OpenFds().size(), 1u);
}

TEST(FdTableTest, NumberReuseGetsANewSequence) {
  FdTable t(16);
  t.RecordOpen(5, FdKind::kFile, kNoStackId);
  const std::uint64_t first = t.Find(5)->sequence;
  t.RetireBeforeClose(5);
  t.RecordOpen(5, FdKind::kUnix, kNoStackId);
  EXPECT_GT(t.Find(5)->sequence, first);
  EXPECT_EQ(t.Find(5)->kind, FdKind::kUnix);
  // Reused without a close we saw (e.g. a raw syscall closed it): the old
  // record is retired and counted.
  t.RecordOpen(5, FdKind::kPipe, kNoStackId);
  const FdCounters c = t.Counters();
  EXPECT_EQ(c.replaced, 1u);
  EXPECT_EQ(c.closed[static_cast<int>(FdKind::kUnix)], 1u);
  EXPECT_EQ(t.Find(5)->kind, FdKind::kPipe);
}

TEST(FdTableTest, FdsBeyondCapacityAreDropped) {
  FdTable t(8);
  t.RecordOpen(8, FdKind::kFile, kNoStackId);
  t.RecordOpen(100000, FdKind::kFile, kNoStackId);
  t.RetireBeforeClose(8);
  const FdCounters c = t.Counters();
  EXPECT_EQ(c.dropped, 2u);
  EXPECT_EQ(c.opened[static_cast<int>(FdKind::kFile)], 0u);
  EXPECT_EQ(c.closed[static_cast<int>(FdKind::kFile)], 0u);
  EXPECT_TRUE(t.OpenFds().empty());
}

TEST(FdTableTest, RangeRetirementSparesRecordsCreatedAfterIt) {
  FdTable t(64);
  for (int fd = 3; fd < 10; ++fd) t.RecordOpen(fd, FdKind::kFile, kNoStackId);
  const std::uint64_t before = t.CurrentSequence();
  t.RetireBeforeClose(6);
  t.RecordOpen(6, FdKind::kPipe, kNoStackId);  // reopened by another thread meanwhile
  t.RetireRange(4, ~0U, before);
  const auto open = t.OpenFds();
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].fd, 3);
  EXPECT_EQ(open[1].fd, 6);
  EXPECT_EQ(open[1].kind, FdKind::kPipe);
}

TEST(FdKindNameTest, NamesAreBoundedLabels) {
  EXPECT_STREQ(FdKindName(FdKind::kTcp6), "tcp6");
  EXPECT_STREQ(FdKindName(FdKind::kOther), "other");
  EXPECT_STREQ(FdKindName(static_cast<FdKind>(200)), "other");
}

// --- The hooks, through a library's real calls -------------------------------

std::uint64_t Opened(FdKind k) {
  return ProcessFdTable().Counters().opened[static_cast<int>(k)];
}
std::uint64_t Closed(FdKind k) {
  return ProcessFdTable().Counters().closed[static_cast<int>(k)];
}
bool Tracked(int fd, FdKind kind) {
  auto r = ProcessFdTable().Find(fd);
  return r.has_value() && r->kind == kind;
}

class FdHooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(lib_.ok()) << dlerror();
    InstallFdHooks();
    ASSERT_TRUE(FdHooksActive());
    dir_ = ::testing::TempDir() + "leakprobe_fd_" + std::to_string(getpid());
    mkdir(dir_.c_str(), 0700);
  }
  void TearDown() override {
    RemoveFdHooks();
    const std::string cmd = "rm -rf '" + dir_ + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
  std::string Path(const char* name) const { return dir_ + "/" + name; }

  FdTestLib lib_{LEAKPROBE_FD_TEST_LIB_A};
  std::string dir_;
};

TEST_F(FdHooksTest, OpenFamilyRecordsFilesAndKeepsResults) {
  const std::string p = Path("f");
  const std::uint64_t opened = Opened(FdKind::kFile);
  int fds[6];
  fds[0] = lib_.open(p.c_str(), O_CREAT | O_RDWR, 0600);
  fds[1] = lib_.open64(p.c_str(), O_RDONLY, 0);
  fds[2] = lib_.open_2(p.c_str(), O_RDONLY);
  fds[3] = lib_.open64_2(p.c_str(), O_RDONLY);
  fds[4] = lib_.openat(AT_FDCWD, p.c_str(), O_RDONLY, 0);
  fds[5] = lib_.creat(Path("g").c_str(), 0600);
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(Tracked(fd, FdKind::kFile)) << fd;
    EXPECT_EQ(fcntl(fd, F_GETFD), 0);  // a real, open fd
  }
  EXPECT_EQ(Opened(FdKind::kFile), opened + 6);
  struct stat st {};
  ASSERT_EQ(stat(Path("g").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // the mode reached the kernel
  const std::uint64_t closed = Closed(FdKind::kFile);
  for (int fd : fds) {
    EXPECT_EQ(lib_.close(fd), 0);
    EXPECT_FALSE(ProcessFdTable().Find(fd).has_value());
  }
  EXPECT_EQ(Closed(FdKind::kFile), closed + 6);
}

TEST_F(FdHooksTest, FailingCallsKeepErrnoAndReturnValue) {
  const std::string missing = Path("missing");
  errno = 0;
  const int direct = open(missing.c_str(), O_RDONLY);  // the test binary: unpatched
  const int direct_errno = errno;
  const std::uint64_t opened = Opened(FdKind::kFile);
  errno = 0;
  EXPECT_EQ(lib_.open(missing.c_str(), O_RDONLY, 0), direct);
  EXPECT_EQ(errno, direct_errno);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(lib_.close(-1), -1);
  EXPECT_EQ(errno, EBADF);
  errno = 0;
  EXPECT_EQ(lib_.dup2(-1, 100), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_EQ(Opened(FdKind::kFile), opened);
  // A success leaves errno as it was.
  errno = EXDEV;
  const int fd = lib_.open(Path("ok").c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(errno, EXDEV);
  errno = EXDEV;
  EXPECT_EQ(lib_.close(fd), 0);
  EXPECT_EQ(errno, EXDEV);
}

TEST_F(FdHooksTest, SocketsAreClassifiedAndAcceptInheritsTheKind) {
  const int tcp = lib_.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int tcp6 = lib_.socket(AF_INET6, SOCK_STREAM, 0);
  const int udp = lib_.socket(AF_INET, SOCK_DGRAM, 0);
  int pair[2];
  ASSERT_EQ(lib_.socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  EXPECT_TRUE(Tracked(tcp, FdKind::kTcp));
  EXPECT_TRUE(Tracked(tcp6, FdKind::kTcp6));
  EXPECT_TRUE(Tracked(udp, FdKind::kUdp));
  EXPECT_TRUE(Tracked(pair[0], FdKind::kUnix));
  EXPECT_TRUE(Tracked(pair[1], FdKind::kUnix));

  // A real listener on 127.0.0.1, port 0.
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(tcp, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(tcp, 4), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(tcp, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int clients[2];
  int accepted[2];
  for (int i = 0; i < 2; ++i) {
    clients[i] = lib_.socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(clients[i], reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  }
  accepted[0] = lib_.accept(tcp);
  accepted[1] = lib_.accept4(tcp, SOCK_CLOEXEC);
  ASSERT_GE(accepted[0], 0);
  ASSERT_GE(accepted[1], 0);
  EXPECT_TRUE(Tracked(accepted[0], FdKind::kTcp));
  EXPECT_TRUE(Tracked(accepted[1], FdKind::kTcp));
  for (int fd : {tcp, tcp6, udp, pair[0], pair[1], clients[0], clients[1], accepted[0],
                 accepted[1]}) {
    EXPECT_EQ(lib_.close(fd), 0);
    EXPECT_FALSE(ProcessFdTable().Find(fd).has_value());
  }
}

TEST_F(FdHooksTest, SpecialFdsGetTheirKinds) {
  int p[2];
  int p2[2];
  ASSERT_EQ(lib_.pipe(p), 0);
  ASSERT_EQ(lib_.pipe2(p2, O_CLOEXEC), 0);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR2);
  const int sfd = lib_.signalfd(-1, &mask, SFD_CLOEXEC);
  struct Expect {
    int fd;
    FdKind kind;
  };
  const Expect cases[] = {
      {p[0], FdKind::kPipe},
      {p[1], FdKind::kPipe},
      {p2[0], FdKind::kPipe},
      {p2[1], FdKind::kPipe},
      {lib_.epoll_create(1), FdKind::kEpoll},
      {lib_.epoll_create1(EPOLL_CLOEXEC), FdKind::kEpoll},
      {lib_.eventfd(0, 0), FdKind::kEventfd},
      {lib_.timerfd_create(CLOCK_MONOTONIC, 0), FdKind::kTimerfd},
      {sfd, FdKind::kSignalfd},
      {lib_.inotify_init(), FdKind::kInotify},
      {lib_.inotify_init1(IN_CLOEXEC), FdKind::kInotify},
      {lib_.memfd_create("leakprobe-test", 0), FdKind::kMemfd},
  };
  // signalfd on an existing fd changes its mask and makes nothing new.
  const std::uint64_t signalfds = Opened(FdKind::kSignalfd);
  EXPECT_EQ(lib_.signalfd(sfd, &mask, 0), sfd);
  EXPECT_EQ(Opened(FdKind::kSignalfd), signalfds);
  for (const Expect& e : cases) {
    ASSERT_GE(e.fd, 0);
    EXPECT_TRUE(Tracked(e.fd, e.kind)) << e.fd << " " << FdKindName(e.kind);
    EXPECT_EQ(lib_.close(e.fd), 0);
  }
}

TEST_F(FdHooksTest, StdioAndDirectoryStreams) {
  FILE* f = lib_.fopen(Path("s").c_str(), "w");
  ASSERT_NE(f, nullptr);
  const int ffd = fileno(f);
  EXPECT_TRUE(Tracked(ffd, FdKind::kFile));
  EXPECT_EQ(lib_.fclose(f), 0);
  EXPECT_FALSE(ProcessFdTable().Find(ffd).has_value());
  EXPECT_EQ(lib_.fopen(Path("absent/x").c_str(), "r"), nullptr);
  EXPECT_EQ(errno, ENOENT);

  DIR* d = lib_.opendir(dir_.c_str());
  ASSERT_NE(d, nullptr);
  const int dfd = dirfd(d);
  EXPECT_TRUE(Tracked(dfd, FdKind::kFile));
  EXPECT_EQ(lib_.closedir(d), 0);
  EXPECT_FALSE(ProcessFdTable().Find(dfd).has_value());
}

TEST_F(FdHooksTest, DupFamilyInheritsKindAndDup2ClosesItsTarget) {
  const int sock = lib_.socket(AF_INET6, SOCK_STREAM, 0);
  int p[2];
  ASSERT_EQ(lib_.pipe(p), 0);
  const int d1 = lib_.dup(sock);
  const int d2 = lib_.fcntl(sock, F_DUPFD_CLOEXEC, 50);
  const int d3 = lib_.fcntl(sock, F_DUPFD, 60);
  EXPECT_TRUE(Tracked(d1, FdKind::kTcp6));
  EXPECT_GE(d2, 50);
  EXPECT_TRUE(Tracked(d2, FdKind::kTcp6));
  EXPECT_EQ(fcntl(d2, F_GETFD), FD_CLOEXEC);
  EXPECT_TRUE(Tracked(d3, FdKind::kTcp6));
  EXPECT_EQ(lib_.fcntl(d3, F_SETFD, FD_CLOEXEC), 0);  // other commands: no record

  // dup2 onto the open pipe end: the pipe is closed implicitly.
  const std::uint64_t pipes_closed = Closed(FdKind::kPipe);
  EXPECT_EQ(lib_.dup2(sock, p[1]), p[1]);
  EXPECT_TRUE(Tracked(p[1], FdKind::kTcp6));
  EXPECT_EQ(Closed(FdKind::kPipe), pipes_closed + 1);
  EXPECT_EQ(lib_.dup3(sock, p[0], O_CLOEXEC), p[0]);
  EXPECT_TRUE(Tracked(p[0], FdKind::kTcp6));
  EXPECT_EQ(Closed(FdKind::kPipe), pipes_closed + 2);
  // dup2 of an fd onto itself changes nothing.
  const std::uint64_t seq = ProcessFdTable().Find(sock)->sequence;
  EXPECT_EQ(lib_.dup2(sock, sock), sock);
  EXPECT_EQ(ProcessFdTable().Find(sock)->sequence, seq);
  for (int fd : {sock, p[0], p[1], d1, d2, d3}) EXPECT_EQ(lib_.close(fd), 0);
}

TEST_F(FdHooksTest, CloseRangeRetiresTheRange) {
  std::vector<int> fds;
  for (int i = 0; i < 6; ++i) {
    const int e = lib_.eventfd(0, 0);
    fds.push_back(lib_.dup2(e, 200 + i));
    lib_.close(e);
  }
  ASSERT_EQ(fds.back(), 205);
  const std::uint64_t closed = Closed(FdKind::kEventfd);
  EXPECT_EQ(lib_.close_range(203, 205, CLOSE_RANGE_CLOEXEC), 0);  // marks only
  EXPECT_TRUE(Tracked(203, FdKind::kEventfd));
  EXPECT_EQ(lib_.close_range(202, 204, 0), 0);
  EXPECT_EQ(Closed(FdKind::kEventfd), closed + 3);
  EXPECT_TRUE(Tracked(201, FdKind::kEventfd));
  EXPECT_FALSE(ProcessFdTable().Find(203).has_value());
  EXPECT_TRUE(Tracked(205, FdKind::kEventfd));
  EXPECT_EQ(fcntl(203, F_GETFD), -1);  // really closed
  errno = 0;
  EXPECT_EQ(lib_.close_range(10, 5, 0), -1);  // invalid range: nothing retired
  EXPECT_EQ(errno, EINVAL);
  EXPECT_TRUE(Tracked(201, FdKind::kEventfd));
  EXPECT_EQ(lib_.close_range(200, 205, 0), 0);
  for (int fd = 200; fd <= 205; ++fd) EXPECT_FALSE(ProcessFdTable().Find(fd).has_value());
}

TEST_F(FdHooksTest, RemovingTheHooksStopsRecording) {
  RemoveFdHooks();
  EXPECT_FALSE(FdHooksActive());
  const std::uint64_t opened = Opened(FdKind::kPipe);
  int p[2];
  ASSERT_EQ(lib_.pipe(p), 0);
  EXPECT_EQ(Opened(FdKind::kPipe), opened);
  EXPECT_FALSE(ProcessFdTable().Find(p[0]).has_value());
  lib_.close(p[0]);
  lib_.close(p[1]);
  InstallFdHooks();  // and back on
  ASSERT_EQ(lib_.pipe(p), 0);
  EXPECT_EQ(Opened(FdKind::kPipe), opened + 2);
  lib_.close(p[0]);
  lib_.close(p[1]);
}

TEST_F(FdHooksTest, LibraryLoadedAfterInstallIsRecorded) {
  void* b = lib_.dlopen(LEAKPROBE_FD_TEST_LIB_B, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(b, nullptr);
  auto b_socket = reinterpret_cast<int (*)(int, int, int)>(dlsym(b, "fdtest_socket"));
  auto b_close = reinterpret_cast<int (*)(int)>(dlsym(b, "fdtest_close"));
  ASSERT_NE(b_socket, nullptr);
  const int fd = b_socket(AF_UNIX, SOCK_DGRAM, 0);
  EXPECT_TRUE(Tracked(fd, FdKind::kUnix));
  EXPECT_EQ(b_close(fd), 0);
  EXPECT_FALSE(ProcessFdTable().Find(fd).has_value());
  lib_.dlclose(b);
}

std::atomic<std::uint32_t> provided{0};
std::uint32_t FakeStackId() noexcept { return provided.fetch_add(1) + 1000; }

TEST_F(FdHooksTest, StackIdProviderIsAskedForEachCreation) {
  const std::uint32_t asked = provided.load();
  SetFdStackIdProvider(&FakeStackId);
  const int fd = lib_.eventfd(0, 0);
  int p[2];
  const int piped = lib_.pipe(p);
  SetFdStackIdProvider(nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(piped, 0);
  // Once per fd made, and each record keeps the id it was given.
  EXPECT_EQ(provided.load(), asked + 3);
  EXPECT_EQ(ProcessFdTable().Find(fd)->stack_id, asked + 1000);
  EXPECT_EQ(ProcessFdTable().Find(p[0])->stack_id, asked + 1001);
  EXPECT_EQ(ProcessFdTable().Find(p[1])->stack_id, asked + 1002);
  for (int x : {fd, p[0], p[1]}) lib_.close(x);
}

std::uint64_t TotalOpened() {
  std::uint64_t n = 0;
  for (auto v : ProcessFdTable().Counters().opened) n += v;
  return n;
}
std::uint64_t TotalClosed() {
  std::uint64_t n = 0;
  for (auto v : ProcessFdTable().Counters().closed) n += v;
  return n;
}

TEST_F(FdHooksTest, ConcurrentOpenAndCloseKeepCountsConsistent) {
  // Every fd the threads open is closed; the test's own fds stay open.
  const std::size_t live_before = ProcessFdTable().OpenFds().size();
  const std::uint64_t opened = TotalOpened();
  const std::uint64_t closed = TotalClosed();
  const FdCounters c0 = ProcessFdTable().Counters();
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> made{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      std::uint64_t n = 0;
      const std::string path = Path("t") + std::to_string(i);
      while (!stop.load(std::memory_order_relaxed)) {
        int p[2];
        const int f = lib_.open(path.c_str(), O_CREAT | O_RDWR, 0600);
        const int s = lib_.socket(AF_INET, SOCK_STREAM, 0);
        if (lib_.pipe(p) != 0 || f < 0 || s < 0) {
          failed.fetch_add(1);  // a call that failed: reported below
          break;
        }
        const int d = lib_.dup2(f, p[0]);  // implicit close of p[0]
        lib_.close(d);
        lib_.close(p[1]);
        lib_.close(s);
        lib_.close(f);
        n += 4;  // open, socket, two pipe ends (the dup2 replaces p[0])
      }
      made.fetch_add(n);
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  stop.store(true);
  for (auto& t : threads) t.join();
  ASSERT_EQ(failed.load(), 0) << "an open, socket or pipe call failed";
  const FdCounters c1 = ProcessFdTable().Counters();
  EXPECT_GT(made.load(), 1000u);
  EXPECT_EQ(c1.conflicts, c0.conflicts);
  EXPECT_EQ(c1.replaced, c0.replaced);
  // Each iteration: 4 creations + 1 dup2 record; 5 retirements.
  EXPECT_EQ(TotalOpened() - opened, made.load() / 4 * 5);
  EXPECT_EQ(TotalClosed() - closed, made.load() / 4 * 5);
  const auto live = ProcessFdTable().OpenFds();
  std::string described;
  for (const FdRecord& r : live) {
    described += std::to_string(r.fd) + ":" + FdKindName(r.kind) + " ";
  }
  EXPECT_EQ(live.size(), live_before) << described;
}

TEST_F(FdHooksTest, ForkedChildKeepsAConsistentTable) {
  int p[2];
  ASSERT_EQ(lib_.pipe(p), 0);
  const auto parent_view = ProcessFdTable().Find(p[0]);
  ASSERT_TRUE(parent_view.has_value());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: no gtest assertions, just an exit code per failed check.
    const auto inherited = ProcessFdTable().Find(p[0]);
    if (!inherited || inherited->sequence != parent_view->sequence) _exit(10);
    const std::uint64_t opened = TotalOpened();
    const std::uint64_t closed = TotalClosed();
    const int s = lib_.socket(AF_INET, SOCK_DGRAM, 0);
    if (!Tracked(s, FdKind::kUdp)) _exit(11);
    lib_.close(s);
    lib_.close(p[0]);
    if (ProcessFdTable().Find(p[0]).has_value()) _exit(12);
    if (TotalOpened() != opened + 1 || TotalClosed() != closed + 2) _exit(13);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // The child's closes did not touch the parent's table.
  EXPECT_TRUE(Tracked(p[0], FdKind::kPipe));
  lib_.close(p[0]);
  lib_.close(p[1]);
}

}  // namespace
}  // namespace leakprobe
