// The fd hooks' stack provider, with a fake frame source.
#include "leakprobe/fd/fd_stacks.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <thread>

#include "fake_frames.h"
#include "fd_test_lib_loader.h"
#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/fd/fd_summary.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {
namespace {

using testing::FakeFrame;
using testing::tls_fake_stack;

class FdStacksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StackTable::Instance().SetSource(testing::FakeSource());
    StackTable::Instance().SetLibraryPrefixes({"/lib/"});
    // Innermost first: a library frame, then application frames.
    tls_fake_stack = {FakeFrame(1001, 8), FakeFrame(5, 20), FakeFrame(6, 40)};
    EnableFdStacks(32);
  }
  void TearDown() override {
    DisableFdStacks();
    tls_fake_stack.clear();
  }
};

TEST_F(FdStacksTest, CapturesTheCallingThreadsStackWithItsSite) {
  const std::uint32_t id = CaptureFdStack();
  ASSERT_NE(id, kEmptyStack);
  ASSERT_NE(id, kOverflowStack);
  const StackTable& table = StackTable::Instance();
  EXPECT_EQ(table.SiteOf(id), "/app/file5.py:10 in f5");  // library frame skipped
  const auto frames = table.FramesOf(id);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].filename, "/lib/file1001.py");
  EXPECT_TRUE(frames[0].library);
  EXPECT_EQ(CaptureFdStack(), id);  // interned once
}

TEST_F(FdStacksTest, DepthIsConfigurable) {
  EnableFdStacks(2);
  EXPECT_EQ(StackTable::Instance().FramesOf(CaptureFdStack()).size(), 2u);
  EnableFdStacks(0);
  EXPECT_EQ(CaptureFdStack(), kEmptyStack);
  EnableFdStacks(100000);  // clamped to the table's maximum
  EXPECT_EQ(StackTable::Instance().FramesOf(CaptureFdStack()).size(), 3u);
}

TEST_F(FdStacksTest, ThreadWithoutPythonFramesIsNative) {
  std::uint32_t id = 12345;
  std::thread([&] { id = CaptureFdStack(); }).join();  // its tls_fake_stack is empty
  EXPECT_EQ(id, kEmptyStack);
  EXPECT_EQ(StackTable::Instance().SiteOf(id), "<native>");
}

TEST_F(FdStacksTest, HookPassesThroughWhileThisThreadHoldsATrackerLock) {
  // As when an fd is made on a thread that holds the stack table's lock
  // (interning a stack): the hook must not capture, or it would wait for
  // the lock its own thread holds. It passes the call through, counted.
  testing::FdTestLib lib(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(lib.ok());
  InstallFdHooks();
  EnableFdStacks(32);
  const std::uint64_t passes = GuardedPasses(GuardedHook::kFd);
  Mutex mu;
  int fd = -1;
  {
    TrackerLock lock(&mu);
    EXPECT_TRUE(HookGuardSet());
    fd = lib.eventfd(0, 0);
  }
  EXPECT_FALSE(HookGuardSet());
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(ProcessFdTable().Find(fd).has_value());
  EXPECT_EQ(GuardedPasses(GuardedHook::kFd), passes + 1);
  lib.close(fd);
  // With the lock released, the next creation is recorded with its stack.
  const int again = lib.eventfd(0, 0);
  ASSERT_GE(again, 0);
  const auto record = ProcessFdTable().Find(again);
  ASSERT_TRUE(record.has_value());
  EXPECT_NE(record->stack_id, kEmptyStack);
  lib.close(again);
}

TEST_F(FdStacksTest, HookOnTheForkingThreadNeverWaitsForTheStackTableLock) {
  testing::FdTestLib lib(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(lib.ok());
  InstallFdHooks();
  EnableFdStacks(32);  // InstallFdHooks leaves the provider alone
  // What the fork protocol's prepare does (guard, then the stage locks);
  // then another library's atfork handler, on this thread, makes an fd.
  // Without the guard the hook would wait forever for the lock this thread
  // holds; with it the call passes through, counted.
  const std::uint64_t passes = GuardedPasses(GuardedHook::kFd);
  detail::tls_hook_guard |= detail::kGuardForking;
  StackTable::Instance().PrepareFork();
  const int fd = lib.eventfd(0, 0);
  StackTable::Instance().AfterFork();
  detail::tls_hook_guard &= ~detail::kGuardForking;
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(ProcessFdTable().Find(fd).has_value());
  EXPECT_EQ(GuardedPasses(GuardedHook::kFd), passes + 1);
  // Other threads are not affected by this thread's fork.
  const int fd2 = lib.eventfd(0, 0);
  const auto record = ProcessFdTable().Find(fd2);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(StackTable::Instance().SiteOf(record->stack_id), "/app/file5.py:10 in f5");
  lib.close(fd);
  lib.close(fd2);
  RemoveFdHooks();
}

TEST_F(FdStacksTest, ApplicationFdsSinceIsTheNetChangeOfApplicationFds) {
  testing::FdTestLib lib(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(lib.ok());
  InstallFdHooks();
  EnableFdStacks(32);
  const int before = lib.eventfd(0, 0);  // the application's, open before the unit
  tls_fake_stack = {FakeFrame(1001, 8), FakeFrame(1002, 4)};  // library frames only
  const int framework_before = lib.eventfd(0, 0);
  const std::vector<LeakprobeRawFrame> application = {FakeFrame(1001, 8),
                                                      FakeFrame(5, 20), FakeFrame(6, 40)};
  tls_fake_stack = application;
  ProcessFdTable().KeepLogs(1);  // as a unit of work's begin does
  const FdTable::WorkMark mark = ProcessFdTable().Mark();
  const int kept = lib.eventfd(0, 0);      // application frames below the library one
  const int replaced = lib.eventfd(0, 0);  // replaces `before` (a new keep-alive socket)
  const int closed = lib.eventfd(0, 0);    // created and closed during the unit
  tls_fake_stack = {FakeFrame(1001, 8), FakeFrame(1002, 4)};
  const int framework = lib.eventfd(0, 0);
  tls_fake_stack.clear();  // no Python frame at all: "<native>"
  const int native = lib.eventfd(0, 0);
  tls_fake_stack = application;
  lib.close(closed);
  lib.close(before);            // the application's own, from before: -1
  lib.close(framework_before);  // the framework's, from before: nothing
  // Created during the unit and closed unseen (a raw syscall, as
  // close_range): its record stays until a reconcile, but is not counted.
  tls_fake_stack = {FakeFrame(5, 20)};
  const int unseen = lib.eventfd(0, 0);
  ASSERT_EQ(syscall(SYS_close, unseen), 0);
  ASSERT_TRUE(ProcessFdTable().Find(unseen).has_value());
  std::uint64_t lost = 99;
  const auto counts = CountApplicationFdsSince(ProcessFdTable(), mark, &lost);
  std::int64_t total = 0;
  for (const std::int64_t c : counts) total += c;
  EXPECT_EQ(total, 1);  // kept + replaced - before
  EXPECT_EQ(counts[static_cast<std::size_t>(FdKind::kEventfd)], 1);
  EXPECT_EQ(lost, 0u);
  // A mark taken now: nothing yet.
  EXPECT_EQ(CountApplicationFdsSince(ProcessFdTable(), ProcessFdTable().Mark()),
            (std::array<std::int64_t, kFdKindCount>{}));
  // A unit that only closes the application's fd from before: -1.
  const FdTable::WorkMark mark2 = ProcessFdTable().Mark();
  lib.close(kept);
  EXPECT_EQ(CountApplicationFdsSince(ProcessFdTable(),
                                     mark2)[static_cast<std::size_t>(FdKind::kEventfd)],
            -1);
  // More creations than the creation log holds: the table is scanned
  // instead, with the same count.
  const FdTable::WorkMark mark3 = ProcessFdTable().Mark();
  const int kept3 = lib.eventfd(0, 0);
  for (std::size_t i = 0; i < FdTable::kOpenLog; ++i) lib.close(lib.eventfd(0, 0));
  std::uint64_t unlogged = 0;
  EXPECT_EQ(ProcessFdTable().OpenedSince(mark3.opens, &unlogged).size(),
            FdTable::kOpenLog);
  EXPECT_EQ(unlogged, 1u);
  EXPECT_EQ(CountApplicationFdsSince(ProcessFdTable(),
                                     mark3)[static_cast<std::size_t>(FdKind::kEventfd)],
            1);
  lib.close(kept3);
  ProcessFdTable().KeepLogs(-1);
  for (const int fd : {replaced, framework, native}) lib.close(fd);
  RemoveFdHooks();
}

// The close log holds the last kCloseLog retired records: a mark older
// than that loses the rest, and says how many.
TEST(FdTableCloseLogTest, ClosedSinceReturnsTheRetiredAttributedRecordsAndCountsTheLost) {
  FdTable table(64);
  table.RecordOpen(3, FdKind::kFile, 7);
  table.RetireBeforeClose(3);  // no unit of work: not logged
  EXPECT_EQ(table.Mark().closes, 0u);
  table.KeepLogs(1);
  table.RecordOpen(3, FdKind::kFile, 7);
  const std::uint64_t mark = table.Mark().closes;
  table.RetireBeforeClose(3);
  std::uint64_t lost = 99;
  auto closed = table.ClosedSince(mark, &lost);
  ASSERT_EQ(closed.size(), 1u);
  EXPECT_EQ(closed[0].stack_id, 7u);
  EXPECT_EQ(closed[0].kind, FdKind::kFile);
  EXPECT_EQ(lost, 0u);
  const std::uint64_t old_mark = table.Mark().closes;
  for (std::size_t i = 0; i < FdTable::kCloseLog + 10; ++i) {
    table.RecordOpen(4, FdKind::kPipe, 1);
    table.RetireBeforeClose(4);
  }
  closed = table.ClosedSince(old_mark, &lost);
  EXPECT_EQ(closed.size(), FdTable::kCloseLog);
  EXPECT_EQ(lost, 10u);
  EXPECT_TRUE(table.ClosedSince(table.Mark().closes, &lost).empty());
  table.KeepLogs(-1);
  const std::uint64_t off = table.Mark().closes;
  table.RecordOpen(5, FdKind::kPipe, 1);
  table.RetireBeforeClose(5);
  EXPECT_EQ(table.Mark().closes, off);
}

// The creation log holds the attributed creations made while the logs are
// kept (not the reconciler's finds), the last kOpenLog of them.
TEST(FdTableCloseLogTest, OpenedSinceReturnsTheAttributedCreationsAndCountsTheLost) {
  FdTable table(64);
  table.RecordOpen(3, FdKind::kFile, 7);  // no unit of work: not logged
  EXPECT_EQ(table.Mark().opens, 0u);
  table.KeepLogs(1);
  const FdTable::WorkMark mark = table.Mark();
  table.RecordOpen(5, FdKind::kTcp, 8);
  ASSERT_TRUE(table.RecordFound(6, FdKind::kFile, FdIdentity{}));  // unattributed
  std::uint64_t lost = 99;
  auto opened = table.OpenedSince(mark.opens, &lost);
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].fd, 5);
  EXPECT_EQ(opened[0].sequence, table.Find(5)->sequence);
  EXPECT_GT(opened[0].sequence, mark.sequence);
  EXPECT_EQ(lost, 0u);
  const std::uint64_t old_mark = table.Mark().opens;
  for (std::size_t i = 0; i < FdTable::kOpenLog + 10; ++i) {
    table.RecordOpen(4, FdKind::kPipe, 1);
    table.RetireBeforeClose(4);
  }
  opened = table.OpenedSince(old_mark, &lost);
  EXPECT_EQ(opened.size(), FdTable::kOpenLog);
  EXPECT_EQ(lost, 10u);
  table.KeepLogs(-1);
  const std::uint64_t off = table.Mark().opens;
  table.RecordOpen(7, FdKind::kPipe, 1);
  EXPECT_EQ(table.Mark().opens, off);
}

TEST_F(FdStacksTest, HookedCreationsCarryTheStackAndCountInTopSites) {
  testing::FdTestLib lib(LEAKPROBE_FD_TEST_LIB_A);
  ASSERT_TRUE(lib.ok());
  InstallFdHooks();
  EnableFdStacks(32);
  int fds[3];
  for (int& fd : fds) fd = lib.eventfd(0, 0);
  tls_fake_stack = {FakeFrame(7, 2)};
  const int other = lib.eventfd(0, 0);
  SetFdTopSites(50);
  const FdSummary s = SummarizeFds(ProcessFdTable());
  auto count_of = [&](const std::string& site) {
    for (const FdSite& f : s.top_sites) {
      if (f.site == site) return f.open_fds;
    }
    return std::uint64_t{0};
  };
  EXPECT_EQ(count_of("/app/file5.py:10 in f5"), 3u);
  EXPECT_EQ(count_of("/app/file7.py:1 in f7"), 1u);
  // With room for one site, the one kept is the one holding the most.
  ASSERT_GE(s.top_sites.size(), 2u);
  SetFdTopSites(1);
  const FdSummary top = SummarizeFds(ProcessFdTable());
  ASSERT_EQ(top.top_sites.size(), 1u);
  EXPECT_EQ(top.top_sites[0].site, s.top_sites[0].site);
  EXPECT_EQ(top.top_sites[0].open_fds, s.top_sites[0].open_fds);
  EXPECT_GE(top.top_sites[0].open_fds, 3u);
  SetFdTopSites(10);
  for (int fd : fds) lib.close(fd);
  lib.close(other);
  RemoveFdHooks();
}

TEST_F(FdStacksTest, FrozenAtExitForGood) {
  // Last in this suite's file order is not guaranteed: run it in a child.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FreezeFdStacks();
    EnableFdStacks(32);
    _exit(CaptureFdStack() == kEmptyStack ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(CaptureFdStack(), kEmptyStack);
}

}  // namespace
}  // namespace leakprobe
