// Out of memory on the sampled path (leakprobe_oom_tests, with the failing
// operator new of failing_allocator.cpp): the hooks' tables either record a
// sample or drop it and count the drop; they never throw, never corrupt,
// and record again once memory is back. Each case sweeps the point of
// failure: allow k allocations, fail the rest, for k = 0, 1, ... until the
// call needs no more than k.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "failing_allocator.h"
#include "fake_frames.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/runtime/table_map.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {
namespace {

using testing::AllowAllocations;
using testing::FailAllocationsAfter;
using testing::FailedAllocations;
using testing::FakeFrame;

constexpr std::int64_t kMaxSweep = 64;  // no call here makes that many allocations

TEST(FailingAllocatorTest, FailsOnlyWhenArmedAndOnlyOnThisThread) {
  FailAllocationsAfter(1);
  auto* first = new int(1);
  EXPECT_THROW((void)new int(2), std::bad_alloc);
  EXPECT_EQ(FailedAllocations(), 1U);
  AllowAllocations();
  auto* third = new int(3);
  EXPECT_EQ(*first + *third, 4);
  delete first;
  delete third;
}

TEST(TableMapTest, GrowthDrawsOnTheReserveWhenAllocationFails) {
  TableMap<int, int> map;
  TableReserve reserve;
  for (int i = 0; i < 5000; ++i) {
    const ReservedInsert insert(&reserve, map);
    ASSERT_TRUE(insert.ok());
    FailAllocationsAfter(0);  // the map gets nothing from operator new
    map.emplace(i, i);
    AllowAllocations();
  }
  ASSERT_EQ(map.size(), 5000U);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(map.at(i), i);
}

TEST(TableMapTest, NoReserveNoInsert) {
  TableMap<int, int> map;
  TableReserve reserve;
  FailAllocationsAfter(0);
  {
    const ReservedInsert insert(&reserve, map);
    EXPECT_FALSE(insert.ok());
  }
  AllowAllocations();
  EXPECT_GT(FailedAllocations(), 0U);
  const ReservedInsert insert(&reserve, map);
  EXPECT_TRUE(insert.ok());
}

TEST(StackTableOomTest, InternOutOfMemoryReturnsOverflowCountsAndRecovers) {
  StackTable table(4096, 4096);
  table.SetSource(testing::FakeSource());
  table.SetLibraryPrefixes({"/lib/"});
  std::uint64_t dropped_calls = 0;   // an allocation failed: overflow stack
  std::uint64_t absorbed_calls = 0;  // an allocation failed: a reserve served
  for (std::uintptr_t s = 0; s < 200; ++s) {
    // A new stack each round: two new frames and a shared one.
    const LeakprobeRawFrame raw[3] = {FakeFrame(10 + s, 10), FakeFrame(1500, 4),
                                      FakeFrame(2000 + s, 6)};
    StackId id = kEmptyStack;
    for (std::int64_t k = 0;; ++k) {
      ASSERT_LT(k, kMaxSweep);
      const std::uint64_t overflows = table.overflows();
      FailAllocationsAfter(k);
      id = table.Intern(raw, 3);
      const std::uint64_t failed = FailedAllocations();
      AllowAllocations();
      if (id == kOverflowStack) {
        ASSERT_GT(failed, 0U);
        ASSERT_EQ(table.overflows(), overflows + 1) << "round " << s << ", k " << k;
        ++dropped_calls;
        continue;
      }
      ASSERT_EQ(table.overflows(), overflows);
      if (failed == 0) break;
      ++absorbed_calls;  // interned all the same; the sweep goes on
    }
    // Nothing half-inserted by the failed attempts: stack ids and frame
    // indexes are dense, as if the failures had never happened.
    ASSERT_EQ(id, 2 + s);
    EXPECT_EQ(table.SiteKey(id), 2 + (s == 0 ? 0 : 1 + 2 * s));
    const std::string file = "/app/file" + std::to_string(10 + s) + ".py";
    EXPECT_EQ(table.SiteOf(id), file + ":5 in f" + std::to_string(10 + s));
    ASSERT_EQ(table.FramesOf(id).size(), 3U);
    EXPECT_EQ(table.Intern(raw, 3), id);
    // Another position on the same line finds the same frame by its text.
    const LeakprobeRawFrame moved[3] = {FakeFrame(10 + s, 11), raw[1], raw[2]};
    EXPECT_EQ(table.Intern(moved, 3), id);
  }
  EXPECT_GE(dropped_calls, 200U);  // every round failed at least once
  EXPECT_GT(absorbed_calls, 0U);   // and the reserves served some growths
}

void* Address(std::uintptr_t i) { return reinterpret_cast<void*>(0x30000000 + i * 16); }

TEST(HeapTrackerOomTest, SamplesAreDroppedAndCountedThenRecordedAgain) {
  StackTable::Instance().SetSource(testing::FakeSource());
  HeapTracker tracker;
  HeapConfig config;
  config.sample_bytes = 1;  // every 4 KiB allocation is sampled
  tracker.Start(config);
  detail::tls_sampler.countdown = 0;
  std::uint64_t dropped_calls = 0;
  std::uint64_t absorbed_calls = 0;
  constexpr std::uintptr_t kRounds = 300;
  for (std::uintptr_t i = 0; i < kRounds; ++i) {
    testing::tls_fake_stack = {FakeFrame(100 + i, 20), FakeFrame(3000, 2)};
    for (std::int64_t k = 0;; ++k) {
      ASSERT_LT(k, kMaxSweep);
      const HeapSummary before = tracker.Summary(0);
      FailAllocationsAfter(k);
      tracker.OnAlloc(Address(i), 4096);
      const std::uint64_t failed = FailedAllocations();
      AllowAllocations();
      const HeapSummary after = tracker.Summary(0);
      ASSERT_EQ(after.samples, before.samples + 1);
      const std::uint64_t drops = after.dropped_samples - before.dropped_samples;
      const std::uint64_t overflows = after.stack_overflows - before.stack_overflows;
      if (drops + overflows > 0) {
        // An allocation failed and could not be served: the stack or the
        // whole sample was dropped, and counted.
        ASSERT_GT(failed, 0U) << "round " << i << ", k " << k;
        ++dropped_calls;
        continue;
      }
      if (failed == 0) break;
      ++absorbed_calls;  // recorded all the same (a reserve served a growth)
    }
  }
  EXPECT_GE(dropped_calls, kRounds);
  EXPECT_GT(absorbed_calls, 0U);
  const HeapSummary s = tracker.Summary(0);
  EXPECT_GT(s.dropped_samples, 0U);  // the tracker's own tables failed too
  EXPECT_GT(s.stack_overflows, 0U);
  EXPECT_EQ(s.live_blocks, kRounds);
  // The tables agree: every stack entry had a sample (none left behind by
  // an undone insert), and every round's block is under its own stack.
  std::size_t live_stacks = 0;
  for (const HeapStackStat& stat : tracker.Stacks()) {
    EXPECT_GT(stat.allocated_count, 0) << "stack " << stat.stack;
    if (stat.live_count > 0.5) {
      ++live_stacks;
      EXPECT_NE(stat.stack, kOverflowStack);
    }
  }
  EXPECT_EQ(live_stacks, kRounds);
  // A free allocates nothing: it succeeds with every allocation failing.
  FailAllocationsAfter(0);
  for (std::uintptr_t i = 0; i < kRounds; ++i) tracker.OnFree(Address(i));
  const std::uint64_t failed = FailedAllocations();
  AllowAllocations();
  EXPECT_EQ(failed, 0U);
  const HeapSummary freed = tracker.Summary(0);
  EXPECT_EQ(freed.live_blocks, 0U);
  EXPECT_NEAR(freed.live_bytes, 0, 1e-3);
  tracker.Stop();
}

}  // namespace
}  // namespace leakprobe
