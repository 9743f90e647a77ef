// Out of memory on the native heap's sampled path (leakprobe_oom_tests, with
// the failing operator new of failing_allocator.cpp): a sample or a mapping
// is recorded or dropped and counted; nothing throws, the tables stay
// consistent, and recording resumes once memory is back.
#include <gtest/gtest.h>

#include <cstdint>

#include "failing_allocator.h"
#include "leakprobe/malloc/native_heap.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {
namespace {

using testing::AllowAllocations;
using testing::FailAllocationsAfter;
using testing::FailedAllocations;

void* Block(std::uintptr_t i) { return reinterpret_cast<void*>(0x50000000 + i * 64); }

TEST(NativeHeapOomTest, SamplesAreDroppedAndCountedThenRecordedAgain) {
  StackTable::Instance();  // made at import in the process, before any hook
  NativeHeap heap;
  heap.Start({.sample_bytes = 1});  // every allocation is sampled
  NativeHeap::ResetThreadCountdown();
  constexpr std::uintptr_t kFailing = 2000;
  FailAllocationsAfter(0);  // the block and stack tables get nothing more
  for (std::uintptr_t i = 0; i < kFailing; ++i) {
    ASSERT_TRUE(NativeHeap::CountdownCrossed(64));
    heap.OnCrossedAlloc(Block(i), 64, nullptr);  // noexcept: a throw would terminate
  }
  const std::uint64_t failed = FailedAllocations();
  AllowAllocations();
  NativeSummary s = heap.Summary(0);
  EXPECT_GT(failed, 0U);
  EXPECT_EQ(s.samples, kFailing);
  EXPECT_GT(s.dropped_samples, 0U);  // the tables filled their reserves, then dropped
  EXPECT_EQ(s.live_blocks + s.dropped_samples, kFailing);
  // Memory is back: the next samples are recorded.
  for (std::uintptr_t i = kFailing; i < kFailing + 100; ++i) {
    ASSERT_TRUE(NativeHeap::CountdownCrossed(64));
    heap.OnCrossedAlloc(Block(i), 64, nullptr);
  }
  const NativeSummary after = heap.Summary(0);
  EXPECT_EQ(after.live_blocks, s.live_blocks + 100);
  EXPECT_EQ(after.dropped_samples, s.dropped_samples);
  // Frees allocate nothing: they succeed with every allocation failing.
  FailAllocationsAfter(0);
  for (std::uintptr_t i = 0; i < kFailing + 100; ++i) {
    if (heap.MaybeSampled(Block(i))) heap.OnMaybeSampledFree(Block(i));
  }
  EXPECT_EQ(FailedAllocations(), 0U);
  AllowAllocations();
  s = heap.Summary(0);
  EXPECT_EQ(s.live_blocks, 0U);
  EXPECT_NEAR(s.live_bytes, 0, 1e-6);
  heap.Stop();
}

TEST(NativeHeapOomTest, MappingsAreDroppedAndCountedWhenTheirTableCannotGrow) {
  StackTable::Instance();
  NativeHeap heap;
  heap.Start({});
  FailAllocationsAfter(0);
  for (std::uintptr_t i = 0; i < 50; ++i) {
    heap.OnMap(reinterpret_cast<void*>(0x60000000 + i * 0x10000), 0x10000, nullptr);
  }
  AllowAllocations();
  NativeSummary s = heap.Summary(0);
  EXPECT_EQ(s.mmap_regions + s.mmap_dropped, 50U);
  EXPECT_GT(s.mmap_dropped, 0U);
  EXPECT_EQ(s.mmap_bytes, s.mmap_regions * 0x10000);
  // A partial unmap needs a node for what is left: out of memory, the
  // whole region is forgotten (counted), never half-recorded.
  if (s.mmap_regions > 0) {
    FailAllocationsAfter(0);
    heap.OnUnmap(reinterpret_cast<void*>(0x60000000 + 0x1000), 0x1000);
    AllowAllocations();
  }
  heap.OnUnmap(reinterpret_cast<void*>(0x60000000), 50 * 0x10000);
  s = heap.Summary(0);
  EXPECT_EQ(s.mmap_regions, 0U);
  EXPECT_EQ(s.mmap_bytes, 0U);
  heap.Stop();
}

}  // namespace
}  // namespace leakprobe
