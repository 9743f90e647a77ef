#include "leakprobe/stacks/stack_table.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

#include "fake_frames.h"

namespace leakprobe {
namespace {

using testing::FakeFrame;

class StackTableTest : public ::testing::Test {
 protected:
  StackTableTest() : table_(1000, 100) {
    table_.SetSource(testing::FakeSource());
    table_.SetLibraryPrefixes({"/lib/"});
  }
  StackId Intern(std::vector<LeakprobeRawFrame> frames) {
    return table_.Intern(frames.data(), static_cast<int>(frames.size()));
  }
  StackTable table_;
};

TEST_F(StackTableTest, SameStackSameId) {
  const StackId a = Intern({FakeFrame(1, 10), FakeFrame(2, 20)});
  EXPECT_EQ(Intern({FakeFrame(1, 10), FakeFrame(2, 20)}), a);
  EXPECT_NE(Intern({FakeFrame(1, 10), FakeFrame(3, 20)}), a);
  EXPECT_EQ(Intern({}), kEmptyStack);
  EXPECT_EQ(table_.SiteOf(kEmptyStack), "<native>");
}

TEST_F(StackTableTest, CaptureAndInternMatchesInternAndTellsCallersApart) {
  // The fast path answers from the recent-stack cache: it must give the
  // id Intern gives, and a hit must never be taken for a stack that only
  // shares the innermost frame (another caller, or the caller at another
  // position).
  testing::tls_fake_stack = {FakeFrame(1, 10), FakeFrame(2, 20)};
  const StackId a = table_.CaptureAndIntern(32);
  EXPECT_NE(a, kEmptyStack);
  EXPECT_EQ(table_.CaptureAndIntern(32), a);  // a cache hit
  EXPECT_EQ(Intern({FakeFrame(1, 10), FakeFrame(2, 20)}), a);
  testing::tls_fake_stack = {FakeFrame(1, 10), FakeFrame(3, 20)};
  const StackId other_caller = table_.CaptureAndIntern(32);
  testing::tls_fake_stack = {FakeFrame(1, 10), FakeFrame(2, 40)};
  const StackId caller_moved = table_.CaptureAndIntern(32);
  const std::set<StackId> ids = {a, other_caller, caller_moved};
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(table_.FramesOf(other_caller).at(1).function, "f3");
  EXPECT_EQ(table_.FramesOf(caller_moved).at(1).line, 20);
  testing::tls_fake_stack = {FakeFrame(1, 10), FakeFrame(2, 20)};
  EXPECT_EQ(table_.CaptureAndIntern(1), Intern({FakeFrame(1, 10)}));  // depth
  testing::tls_fake_stack.clear();
  EXPECT_EQ(table_.CaptureAndIntern(32), kEmptyStack);
}

TEST_F(StackTableTest, PositionsOnOneLineShareAFrameAndASite) {
  // Offsets 10 and 11 resolve to the same line (offset / 2).
  const StackId a = Intern({FakeFrame(1, 10), FakeFrame(2, 20)});
  const StackId b = Intern({FakeFrame(1, 11), FakeFrame(2, 20)});
  EXPECT_EQ(a, b);
  const StackId c = Intern({FakeFrame(1, 10), FakeFrame(5, 20)});
  EXPECT_NE(a, c);
  EXPECT_EQ(table_.SiteKey(a), table_.SiteKey(c));  // same innermost app frame
  EXPECT_EQ(table_.SiteOf(a), "/app/file1.py:5 in f1");
}

TEST_F(StackTableTest, SiteIsInnermostApplicationFrame) {
  // Innermost two frames are library code (code >= 1000 lives under /lib/).
  const StackId id = Intern({FakeFrame(1001, 4), FakeFrame(1002, 6), FakeFrame(7, 8)});
  EXPECT_EQ(table_.SiteIndex(id), 2u);
  EXPECT_EQ(table_.SiteOf(id), "/app/file7.py:4 in f7");
  const std::vector<Frame> frames = table_.FramesOf(id);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_TRUE(frames[0].library);
  EXPECT_FALSE(frames[2].library);
}

TEST(StackTableRuleTest, FrozenModulesAreLibraryButStringCodeIsNot) {
  StackTable table(100, 100);
  table.SetSource({&testing::FakeCapture,
                   [](const LeakprobeRawFrame* f, LeakprobeResolvedFrame* out) {
                     std::snprintf(
                         out->filename, sizeof out->filename, "%s",
                         f->offset == 0 ? "<frozen importlib._bootstrap>" : "<string>");
                     std::snprintf(out->function, sizeof out->function, "f");
                     out->line = 1;
                     return 0;
                   }});
  std::vector<LeakprobeRawFrame> frames = {FakeFrame(1, 0), FakeFrame(2, 2)};
  EXPECT_EQ(table.SiteOf(table.Intern(frames.data(), 2)), "<string>:1 in f");
}

TEST_F(StackTableTest, AllLibraryFallsBackToInnermostAndPrefixesCanChange) {
  const StackId id = Intern({FakeFrame(1001, 4), FakeFrame(1002, 6)});
  EXPECT_EQ(table_.SiteOf(id), "/lib/file1001.py:2 in f1001");
  table_.SetLibraryPrefixes({});
  EXPECT_EQ(table_.SiteIndex(id), 0u);
  table_.SetLibraryPrefixes({"/lib/file1001"});
  EXPECT_EQ(table_.SiteOf(id), "/lib/file1002.py:3 in f1002");
}

TEST(StackTableCapsTest, FullTablesReturnTheOverflowStackAndCount) {
  StackTable table(1000, 4);  // two ids are reserved: room for two stacks
  table.SetSource(testing::FakeSource());
  std::vector<LeakprobeRawFrame> frames = {FakeFrame(1, 2)};
  EXPECT_GT(table.Intern(frames.data(), 1), kOverflowStack);
  frames = {FakeFrame(2, 2)};
  EXPECT_GT(table.Intern(frames.data(), 1), kOverflowStack);
  frames = {FakeFrame(3, 2)};
  EXPECT_EQ(table.Intern(frames.data(), 1), kOverflowStack);
  EXPECT_EQ(table.overflows(), 1u);
  EXPECT_EQ(table.SiteOf(kOverflowStack), "[stack table full]");

  // Overflows are not remembered as answers: the next try counts again.
  frames = {FakeFrame(3, 2)};
  EXPECT_EQ(table.Intern(frames.data(), 1), kOverflowStack);
  EXPECT_EQ(table.overflows(), 2u);

  StackTable few_frames(2, 100);
  few_frames.SetSource(testing::FakeSource());
  frames = {FakeFrame(1, 2), FakeFrame(2, 2), FakeFrame(3, 2)};
  EXPECT_EQ(few_frames.Intern(frames.data(), 3), kOverflowStack);
  EXPECT_LT(few_frames.MemoryBytes(), 100'000u);
}

// Threads interning the same stacks at once, through the lock-free cache and
// past it: every thread gets one id per stack, and distinct stacks get
// distinct ids.
TEST(StackTableConcurrencyTest, ThreadsAgreeOnIds) {
  StackTable table(10'000, 10'000);
  table.SetSource(testing::FakeSource());
  constexpr int kThreads = 8;
  constexpr int kStacks = 300;
  std::vector<std::vector<StackId>> seen(kThreads, std::vector<StackId>(kStacks));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&table, &seen, t] {
      for (int round = 0; round < 20; ++round) {
        for (int i = 0; i < kStacks; ++i) {
          const int s = (i + t * 37) % kStacks;  // threads walk in different orders
          const LeakprobeRawFrame frames[] = {FakeFrame(s + 1, 2),
                                              FakeFrame(s % 7 + 1, 4)};
          const StackId id = table.Intern(frames, 2);
          if (round == 0) {
            seen[t][s] = id;
          } else if (seen[t][s] != id) {
            seen[t][s] = kOverflowStack;  // an id changed: reported below
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::set<StackId> distinct(seen[0].begin(), seen[0].end());
  EXPECT_EQ(distinct.size(), static_cast<std::size_t>(kStacks));
  EXPECT_EQ(distinct.count(kOverflowStack), 0u);
  for (int t = 1; t < kThreads; ++t) EXPECT_EQ(seen[t], seen[0]) << "thread " << t;
}

}  // namespace
}  // namespace leakprobe
