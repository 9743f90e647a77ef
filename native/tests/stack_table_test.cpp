#include "leakprobe/stacks/stack_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
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

TEST_F(StackTableTest, TaskStepsAreStitchedToTheStackThatCreatedTheTask) {
  // The task was created by library code (1001, 1002) called from the
  // application's handler (7), under the event loop (1003) and <module> (9).
  const StackId parent = Intern({FakeFrame(1001, 2), FakeFrame(1002, 2), FakeFrame(7, 8),
                                 FakeFrame(1003, 2), FakeFrame(9, 30)});
  EXPECT_EQ(table_.SiteOf(parent), "/app/file7.py:4 in f7");
  // The task's step: library coroutines (1004, 1005) under the event loop
  // (1006) and <module> (9): unstitched, <module> is the site.
  testing::tls_fake_stack = {FakeFrame(1004, 2), FakeFrame(1005, 2), FakeFrame(1006, 2),
                             FakeFrame(9, 30)};
  testing::tls_fake_task_depth = 2;
  const StackId alone = table_.CaptureAndIntern(32);
  EXPECT_EQ(table_.SiteOf(alone), "/app/file9.py:15 in f9");

  EXPECT_EQ(SetTaskParent(parent), kEmptyStack);
  const StackId stitched = table_.CaptureAndIntern(32);
  LeakprobeRawFrame raw[StackTable::kMaxDepth];
  const StackId via_intern = table_.Intern(raw, table_.Capture(raw, 32));
  EXPECT_EQ(table_.CaptureAndIntern(32), stitched);  // remembered
  testing::tls_fake_stack.clear();
  EXPECT_EQ(table_.CaptureAndIntern(32), parent);  // no frame of its own
  EXPECT_EQ(SetTaskParent(kEmptyStack), parent);
  testing::tls_fake_task_depth = 0;

  EXPECT_EQ(via_intern, stitched);
  EXPECT_EQ(table_.SiteOf(stitched), "/app/file7.py:4 in f7");
  std::vector<int> codes;
  for (const Frame& f : table_.FramesOf(stitched))
    codes.push_back(std::stoi(f.function.substr(1)));
  EXPECT_EQ(codes, (std::vector<int>{1004, 1005, 1001, 1002, 7, 1003, 9}));
  // Another thread has no parent.
  StackId elsewhere = kOverflowStack;
  std::thread([&] {
    testing::tls_fake_stack = {FakeFrame(1004, 2), FakeFrame(9, 30)};
    elsewhere = table_.CaptureAndIntern(32);
  }).join();
  EXPECT_EQ(table_.SiteOf(elsewhere), "/app/file9.py:15 in f9");
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

// A caller holding the GIL (object tracking) captures through the source's
// capture_held / capture_task_held; without them, through capture /
// capture_task; other callers never use the held ones.
TEST(StackTableSourceTest, GilHeldCallersUseTheHeldCaptureWhenThereIsOne) {
  StackTable table(100, 100);
  constexpr auto held = [](LeakprobeRawFrame* out, int max_frames) {
    return max_frames > 0 ? (out[0] = FakeFrame(77, 20), 1) : 0;
  };
  constexpr auto held_task = [](LeakprobeRawFrame* out, int max_frames) {
    return max_frames > 0 ? (out[0] = FakeFrame(78, 20), 1) : 0;
  };
  testing::tls_fake_stack = {FakeFrame(5, 10), FakeFrame(6, 12)};
  testing::tls_fake_task_depth = 1;
  FrameSource source = testing::FakeSource();
  table.SetSource(source);  // no held captures: the plain ones
  EXPECT_EQ(table.SiteOf(table.CaptureAndIntern(32, /*gil_held=*/true)),
            "/app/file5.py:5 in f5");
  source.capture_held = held;
  source.capture_task_held = held_task;
  table.SetSource(source);
  EXPECT_EQ(table.SiteOf(table.CaptureAndIntern(32, /*gil_held=*/true)),
            "/app/file77.py:10 in f77");
  EXPECT_EQ(table.SiteOf(table.CaptureAndIntern(32)), "/app/file5.py:5 in f5");
  LeakprobeRawFrame frames[4];
  {
    const std::uint32_t previous = SetTaskParent(table.CaptureAndIntern(32));
    EXPECT_EQ(table.Capture(frames, 4, /*gil_held=*/true), 1);
    EXPECT_EQ(frames[0].code, reinterpret_cast<const void*>(78));
    EXPECT_EQ(table.Capture(frames, 4), 1);  // the task chain's depth
    EXPECT_EQ(frames[0].code, reinterpret_cast<const void*>(5));
    SetTaskParent(previous);
  }
  testing::tls_fake_task_depth = 0;
  testing::tls_fake_stack.clear();
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

TEST(StackTableRuleTest, GeneratedWrappersAreLibrary) {
  // SQLAlchemy's create_engine is a wrapper it generates with exec(): its
  // frame must not be the site of an engine the application created.
  StackTable table(100, 100);
  table.SetSource({&testing::FakeCapture,
                   [](const LeakprobeRawFrame* f, LeakprobeResolvedFrame* out) {
                     std::snprintf(out->filename, sizeof out->filename, "%s",
                                   f->offset == 0
                                       ? "<sqlalchemy generated warned() wrapper for "
                                         "sqlalchemy.engine.create.create_engine>"
                                       : "/app/tasks.py");
                     std::snprintf(out->function, sizeof out->function, "f");
                     out->line = 1;
                     return 0;
                   }});
  std::vector<LeakprobeRawFrame> frames = {FakeFrame(1, 0), FakeFrame(2, 2)};
  EXPECT_EQ(table.SiteOf(table.Intern(frames.data(), 2)), "/app/tasks.py:1 in f");
}

TEST_F(StackTableTest, AllLibraryFallsBackToInnermostAndPrefixesCanChange) {
  const StackId id = Intern({FakeFrame(1001, 4), FakeFrame(1002, 6)});
  EXPECT_EQ(table_.SiteOf(id), "/lib/file1001.py:2 in f1001");
  table_.SetLibraryPrefixes({});
  EXPECT_EQ(table_.SiteIndex(id), 0u);
  table_.SetLibraryPrefixes({"/lib/file1001"});
  EXPECT_EQ(table_.SiteOf(id), "/lib/file1002.py:3 in f1002");
}

// A thread a framework starts is counted inside leakprobe's adapter: with
// no application frame, the site is the framework's call, not the adapter.
TEST_F(StackTableTest, AllLibraryFallsBackPastLeakprobesOwnFrames) {
  table_.SetLibraryPrefixes({"/lib/"}, {"/lib/file1001"});
  const StackId id = Intern({FakeFrame(1001, 4), FakeFrame(1002, 6), FakeFrame(1003, 2)});
  EXPECT_EQ(table_.SiteOf(id), "/lib/file1002.py:3 in f1002");
  EXPECT_FALSE(table_.ReachesApplication(id));
  // Own frames are library code even outside the library prefixes (an
  // editable install of leakprobe).
  table_.SetLibraryPrefixes({}, {"/lib/file1001"});
  EXPECT_EQ(table_.SiteOf(id), "/lib/file1002.py:3 in f1002");
  EXPECT_TRUE(table_.ReachesApplication(id));
  // Only own frames: the innermost.
  table_.SetLibraryPrefixes({"/lib/"}, {"/lib/"});
  EXPECT_EQ(table_.SiteIndex(id), 0u);
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

// A process that compiles code at run time (eval, exec, templates) makes
// new code objects forever: every index stays under its cap, each overflow is
// counted, and a full position index degrades to resolving (still exact).
// docs/heap.md states the memory figure; native/bench/stack_table_bench.cpp
// measures it with the process's RSS.
TEST(StackTableBoundsTest, AMillionCodeObjectsAndPositionsStayBounded) {
  const StackTableLimits limits;  // the process-wide table's
  StackTable table(limits);
  table.SetSource(testing::FakeSource());
  const LeakprobeRawFrame outer = FakeFrame(1, 4);  // "/app/file1.py:2 in f1"
  const StackId known = table.Intern(&outer, 1);
  ASSERT_GT(known, kOverflowStack);

  // Half a million code objects, each in a new two-frame stack, then half a
  // million positions. Sanitizer builds (Debug, ~100x slower) take 150,000
  // of each: still past every cap.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kCodes = 150'000;
#else
  constexpr int kCodes = 500'000;
#endif
  std::uint64_t overflowed = 0;
  for (int i = 0; i < kCodes; ++i) {
    const LeakprobeRawFrame frames[] = {FakeFrame(2 + i, 2), outer};
    if (table.Intern(frames, 2) == kOverflowStack) ++overflowed;
  }
  // Positions of other code objects, same filename and line: one frame, one
  // stack, whatever the position index holds.
  constexpr int kPositions = kCodes;
  int wrong = 0;
  for (int i = 0; i < kPositions; ++i) {
    LeakprobeRawFrame frame = outer;
    frame.filename = reinterpret_cast<const void*>(std::uintptr_t{1} + i);
    if (table.Intern(&frame, 1) != known) ++wrong;
  }
  EXPECT_EQ(wrong, 0);

  const StackTableStats stats = table.Stats();
  EXPECT_EQ(stats.frames, limits.frames);
  EXPECT_EQ(stats.positions, limits.positions);
  EXPECT_EQ(stats.stacks, limits.stacks);
  // Stacks filled first (two ids are reserved, one is `known`), then frames
  // (one is `outer`'s).
  EXPECT_EQ(stats.stacks_full, (limits.frames - 1) - (limits.stacks - 3));
  EXPECT_EQ(stats.frames_full, kCodes - (limits.frames - 1));
  EXPECT_EQ(stats.stacks_full + stats.frames_full, overflowed);
  EXPECT_EQ(table.overflows(), overflowed);
  EXPECT_EQ(stats.unresolved, 0u);
  EXPECT_GE(stats.positions_full, static_cast<std::uint64_t>(kPositions));
  // The stated bound for these names (docs/heap.md): 16 MiB.
  EXPECT_LT(table.MemoryBytes(), std::size_t{16} << 20);
  EXPECT_EQ(stats.memory_bytes, table.MemoryBytes());
  EXPECT_EQ(table.SiteOf(known), "/app/file1.py:2 in f1");
}

// MemoryBytes() counts the heap blocks of long names, not only the tables.
TEST(StackTableBoundsTest, MemoryBytesCountsNames) {
  StackTable table(100, 100);
  std::string long_name(400, 'x');
  static std::string* name = nullptr;
  name = &long_name;
  const FrameSource table_source{
      &testing::FakeCapture, [](const LeakprobeRawFrame* f, LeakprobeResolvedFrame* out) {
        std::snprintf(out->filename, sizeof out->filename, "/%s%d.py", name->c_str(),
                      f->offset);
        std::snprintf(out->function, sizeof out->function, "f");
        out->line = 1;
        return 0;
      }};
  table.SetSource(table_source);
  const std::size_t empty = table.MemoryBytes();
  for (int i = 0; i < 50; ++i) {
    const LeakprobeRawFrame frame = FakeFrame(1, i);
    ASSERT_GT(table.Intern(&frame, 1), kOverflowStack);
  }
  // 50 frames, each a ~410-byte filename held twice (the frame, its text).
  EXPECT_GT(table.MemoryBytes() - empty, 50u * 2 * 410);
  EXPECT_LT(table.MemoryBytes() - empty, 50u * 2 * 410 + 32'000);

  // Names have a budget of their own: long ones fill it before the count.
  StackTableLimits limits;
  limits.name_bytes = 20'000;
  StackTable small(limits);
  small.SetSource(table_source);
  int fitted = 0;
  for (int i = 0; i < 50; ++i) {
    const LeakprobeRawFrame frame = FakeFrame(1, i);
    if (small.Intern(&frame, 1) != kOverflowStack) ++fitted;
  }
  EXPECT_GT(fitted, 5);
  EXPECT_LT(fitted, 25);  // 20'000 / (2 * 410)
  EXPECT_EQ(small.Stats().frames_full, 50u - fitted);
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
