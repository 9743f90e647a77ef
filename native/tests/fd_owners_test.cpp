// Fd owners: the owner table, owner words in the fd table, the per-thread
// owner through the real hooks, and the summary by owner type.
#include "leakprobe/fd/fd_owners.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "fd_test_lib_loader.h"
#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/fd/fd_summary.h"
#include "leakprobe/fd/fd_table.h"

namespace leakprobe {
namespace {

TEST(FdOwnersTest, InternsOneIdPerTypeAndStack) {
  FdOwners owners;
  const std::uint32_t a = owners.Intern("httpx.Client", 7);
  EXPECT_GT(a, kOverflowOwner);
  EXPECT_EQ(owners.Intern("httpx.Client", 7), a);
  const std::uint32_t b = owners.Intern("httpx.Client", 8);
  const std::uint32_t c = owners.Intern("sqlalchemy.Engine", 7);
  EXPECT_NE(b, a);
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  ASSERT_TRUE(owners.Get(b).has_value());
  EXPECT_EQ(owners.Get(b)->type, "httpx.Client");
  EXPECT_EQ(owners.Get(b)->stack_id, 8u);
  EXPECT_FALSE(owners.Get(kNoOwner).has_value());
  EXPECT_FALSE(owners.Get(9999).has_value());
  EXPECT_EQ(owners.overflows(), 0u);
}

TEST(FdOwnersTest, TypesAreValidUtf8AndCut) {
  FdOwners owners;
  const std::uint32_t id =
      owners.Intern(std::string("bad\xff") + std::string(500, 'x'), 0);
  const std::string type = owners.Get(id)->type;
  EXPECT_EQ(type.rfind("bad\\xff", 0), 0u) << type;
  EXPECT_LE(type.size(), FdOwners::kMaxTypeBytes + 3);  // one escaped byte
}

TEST(FdOwnersTest, OverflowsPastTheOwnerAndTypeCaps) {
  FdOwners owners;
  for (std::size_t i = 0; i < FdOwners::kMaxTypes; ++i) {
    EXPECT_GT(owners.Intern("T" + std::to_string(i), 0), kOverflowOwner);
  }
  EXPECT_EQ(owners.Intern("one type too many", 0), kOverflowOwner);
  EXPECT_EQ(owners.overflows(), 1u);
  // A known type with a new stack still fits, until the owners run out.
  std::uint32_t last = 0;
  for (std::uint32_t stack = 1; stack < FdOwners::kMaxOwners; ++stack) {
    last = owners.Intern("T0", stack);
  }
  EXPECT_EQ(last, kOverflowOwner);
  EXPECT_EQ(owners.Get(kOverflowOwner)->type, kOverflowOwnerType);
  EXPECT_EQ(owners.overflows(), 1u + FdOwners::kMaxTypes + 1);
}

TEST(FdOwnersTest, TableKeepsTheOwnerOfItsRecordOnly) {
  FdTable t(16);
  t.RecordOpen(3, FdKind::kTcp, 1, FdTable::kNoCallSequence, 5);
  EXPECT_EQ(t.Find(3)->owner, 5u);
  t.RecordOpen(4, FdKind::kTcp, 1);
  EXPECT_EQ(t.Find(4)->owner, kNoOwner);
  const std::uint64_t seq = t.Find(4)->sequence;
  EXPECT_TRUE(t.SetOwner(4, seq, 6));
  EXPECT_EQ(t.Find(4)->owner, 6u);
  // The number is reused: the new record has no owner, and the old
  // record's sequence no longer names it.
  t.RetireBeforeClose(4);
  t.RecordOpen(4, FdKind::kFile, 1);
  EXPECT_EQ(t.Find(4)->owner, kNoOwner);
  EXPECT_FALSE(t.SetOwner(4, seq, 7));
  EXPECT_EQ(t.Find(4)->owner, kNoOwner);
  EXPECT_FALSE(t.SetOwner(9, 1, 7));  // no record
}

TEST(FdOwnersTest, ThreadOwnerScopesNestAndStayOnTheirThread) {
  EXPECT_EQ(ThreadFdOwner(), kNoOwner);
  {
    const ThreadFdOwnerScope outer(5);
    {
      const ThreadFdOwnerScope inner(6);
      EXPECT_EQ(ThreadFdOwner(), 6u);
      std::uint32_t other = 99;
      std::thread([&] { other = ThreadFdOwner(); }).join();
      EXPECT_EQ(other, kNoOwner);
    }
    EXPECT_EQ(ThreadFdOwner(), 5u);
  }
  EXPECT_EQ(ThreadFdOwner(), kNoOwner);
}

class FdOwnerHooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(lib_.ok());
    InstallFdHooks();
    ASSERT_TRUE(FdHooksActive());
  }
  void TearDown() override { RemoveFdHooks(); }
  testing::FdTestLib lib_{LEAKPROBE_FD_TEST_LIB_A};
};

TEST_F(FdOwnerHooksTest, FdsCreatedInAnOwnerScopeCarryItAndAreSummedByType) {
  const std::uint32_t client = ProcessFdOwners().Intern("test.Client", 0);
  const std::uint32_t pool = ProcessFdOwners().Intern("test.Pool", 0);
  int owned[3];
  {
    const ThreadFdOwnerScope scope(client);
    owned[0] = lib_.socket(AF_INET, SOCK_STREAM, 0);
    owned[1] = lib_.socket(AF_INET, SOCK_STREAM, 0);
  }
  const int free_fd = lib_.socket(AF_INET, SOCK_STREAM, 0);
  owned[2] = lib_.socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_TRUE(ProcessFdTable().SetOwner(owned[2],
                                        ProcessFdTable().Find(owned[2])->sequence, pool));
  EXPECT_EQ(ProcessFdTable().Find(owned[0])->owner, client);
  EXPECT_EQ(ProcessFdTable().Find(owned[1])->owner, client);
  EXPECT_EQ(ProcessFdTable().Find(free_fd)->owner, kNoOwner);
  EXPECT_EQ(ProcessFdTable().Find(owned[2])->owner, pool);

  const FdSummary s = SummarizeFds(ProcessFdTable());
  std::uint64_t clients = 99;
  std::uint64_t pools = 99;
  const auto tcp = static_cast<std::size_t>(FdKind::kTcp);
  const auto unix_stream = static_cast<std::size_t>(FdKind::kUnix);
  for (const FdOwnerCount& o : s.owners) {
    if (o.owner == "test.Client") {
      clients = o.OpenFds();
      EXPECT_EQ(o.open_by_kind[tcp], 2u);  // both AF_INET stream sockets
      EXPECT_EQ(o.kinds_seen, 1u << tcp);
    }
    if (o.owner == "test.Pool") {
      pools = o.OpenFds();
      EXPECT_EQ(o.open_by_kind[unix_stream], 1u);
      EXPECT_EQ(o.kinds_seen, 1u << unix_stream);
    }
  }
  EXPECT_EQ(clients, 2u);
  EXPECT_EQ(pools, 1u);

  for (int fd : owned) lib_.close(fd);
  lib_.close(free_fd);
  const FdSummary after = SummarizeFds(ProcessFdTable());
  for (const FdOwnerCount& o : after.owners) {
    if (o.owner == "test.Client" || o.owner == "test.Pool") {
      EXPECT_EQ(o.OpenFds(), 0u) << o.owner;  // listed, at 0
      // Its kinds are remembered: the series by kind stay, at 0.
      EXPECT_EQ(o.kinds_seen, o.owner == "test.Client" ? 1u << tcp : 1u << unix_stream);
    }
  }
}

}  // namespace
}  // namespace leakprobe
