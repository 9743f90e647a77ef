// The per-thread hook guard (leakprobe/runtime/guard.h) as the heap
// tracker's slow paths see it: while the guard is set on a thread (a
// tracker lock held, fork in progress, already in a hook) an allocation
// crossing the sample point is not sampled and a free of a sampled block
// leaves it in the table; both are counted by GuardedPasses. Also the
// guard word's own arithmetic: nesting restores it exactly.
#include "leakprobe/runtime/guard.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "fake_frames.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/runtime/hook_passes.h"

namespace leakprobe {
namespace {

using testing::FakeFrame;

void* Address(std::uintptr_t i) { return reinterpret_cast<void*>(0x20000000 + i * 16); }

// What the fork protocol does on the forking thread between its first
// prepare handler and its parent/child handler (runtime/fork.cpp).
class ForkingBit {
 public:
  ForkingBit() { detail::tls_hook_guard |= detail::kGuardForking; }
  ~ForkingBit() { detail::tls_hook_guard &= ~detail::kGuardForking; }
  ForkingBit(const ForkingBit&) = delete;
  ForkingBit& operator=(const ForkingBit&) = delete;
};

class HookGuardHeapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(detail::tls_hook_guard, 0U) << "a previous test left the guard set";
    StackTable::Instance().SetSource(testing::FakeSource());
    testing::tls_fake_stack = {FakeFrame(7, 10)};
    // A countdown left by an earlier test with a larger interval: the next
    // allocation is due for a sample.
    detail::tls_sampler.countdown = 0;
    HeapConfig config;
    config.sample_bytes = 1;  // every allocation of 4 KiB crosses a sample point
    tracker_.Start(config);
  }
  void TearDown() override { tracker_.Stop(); }

  std::uint64_t Samples() const { return tracker_.Summary(10).samples; }
  std::uint64_t Live() const { return tracker_.Summary(10).live_blocks; }

  HeapTracker tracker_;
  Mutex other_;  // some tracker lock, held by this thread
};

TEST_F(HookGuardHeapTest, AllocationUnderTrackerLockIsNotSampledAndCounted) {
  tracker_.OnAlloc(Address(0), 4096);
  ASSERT_EQ(Samples(), 1U);  // the guard clear: sampled
  const std::uint64_t passes = GuardedPasses(GuardedHook::kHeapAlloc);
  {
    TrackerLock lock(&other_);
    tracker_.OnAlloc(Address(1), 4096);
    tracker_.OnAlloc(Address(2), 4096);
  }
  EXPECT_EQ(GuardedPasses(GuardedHook::kHeapAlloc), passes + 2);
  EXPECT_EQ(Samples(), 1U);
  EXPECT_EQ(Live(), 1U);
  // The sample point stayed pending: the thread's next allocation, even of
  // one byte, is sampled once the lock is gone.
  tracker_.OnAlloc(Address(3), 1);
  EXPECT_EQ(Samples(), 2U);
  EXPECT_EQ(GuardedPasses(GuardedHook::kHeapAlloc), passes + 2);
}

TEST_F(HookGuardHeapTest, AllocationWhileForkingIsNotSampledAndCounted) {
  const std::uint64_t passes = GuardedPasses(GuardedHook::kHeapAlloc);
  {
    const ForkingBit forking;
    EXPECT_TRUE(HookGuardSet());
    tracker_.OnAlloc(Address(1), 4096);
  }
  EXPECT_FALSE(HookGuardSet());
  EXPECT_EQ(GuardedPasses(GuardedHook::kHeapAlloc), passes + 1);
  EXPECT_EQ(Samples(), 0U);
  tracker_.OnAlloc(Address(2), 4096);
  EXPECT_EQ(Samples(), 1U);
}

TEST_F(HookGuardHeapTest, FreeWithGuardSetKeepsTheBlockAndCounts) {
  tracker_.OnAlloc(Address(5), 4096);
  tracker_.OnAlloc(Address(6), 4096);
  ASSERT_EQ(Live(), 2U);
  const std::uint64_t passes = GuardedPasses(GuardedHook::kHeapFree);
  {
    TrackerLock lock(&other_);
    tracker_.OnFree(Address(5));
  }
  {
    const ForkingBit forking;
    tracker_.OnFree(Address(6));
  }
  EXPECT_EQ(GuardedPasses(GuardedHook::kHeapFree), passes + 2);
  const HeapSummary kept = tracker_.Summary(10);
  EXPECT_EQ(kept.live_blocks, 2U);
  EXPECT_EQ(kept.freed_bytes, 0);
  // A free of an unsampled block never reaches the slow path: no pass.
  {
    TrackerLock lock(&other_);
    tracker_.OnFree(Address(1000));
  }
  EXPECT_EQ(GuardedPasses(GuardedHook::kHeapFree), passes + 2);
  // The guard clear again, the same frees are recorded.
  tracker_.OnFree(Address(5));
  tracker_.OnFree(Address(6));
  const HeapSummary freed = tracker_.Summary(10);
  EXPECT_EQ(freed.live_blocks, 0U);
  EXPECT_NEAR(freed.freed_bytes, freed.allocated_bytes, 1e-6);
}

TEST_F(HookGuardHeapTest, BlockFreedWhileGuardedIsForgottenWhenItsAddressIsSampledAgain) {
  tracker_.OnAlloc(Address(8), 4096);
  {
    TrackerLock lock(&other_);
    tracker_.OnFree(Address(8));  // passed through: the block stays
  }
  tracker_.OnAlloc(Address(8), 100);  // the address reused, sampled again
  const HeapSummary s = tracker_.Summary(10);
  EXPECT_EQ(s.live_blocks, 1U);
  EXPECT_EQ(s.samples, 2U);
  tracker_.OnFree(Address(8));
  EXPECT_EQ(Live(), 0U);
  EXPECT_NEAR(tracker_.Summary(10).live_bytes, 0, 1e-6);
}

TEST(HookGuardTest, TrackerLockNestingRestoresTheGuardWord) {
  ASSERT_EQ(detail::tls_hook_guard, 0U);
  Mutex a;
  Mutex b;
  {
    TrackerLock outer(&a);
    EXPECT_EQ(detail::tls_hook_guard, detail::kGuardLockUnit);
    EXPECT_TRUE(HookGuardSet());
    {
      TrackerLock inner(&b);
      EXPECT_EQ(detail::tls_hook_guard, 2 * detail::kGuardLockUnit);
    }
    EXPECT_EQ(detail::tls_hook_guard, detail::kGuardLockUnit);
    EXPECT_TRUE(HookGuardSet());
  }
  EXPECT_EQ(detail::tls_hook_guard, 0U);
  EXPECT_FALSE(HookGuardSet());
  // Mixed with a hook scope and the forking bit, in any nesting.
  {
    const HookGuard hook(GuardedHook::kFd);
    ASSERT_TRUE(hook.entered());
    {
      TrackerLock lock(&a);
      const ForkingBit forking;
      EXPECT_EQ(detail::tls_hook_guard,
                detail::kGuardInHook | detail::kGuardForking | detail::kGuardLockUnit);
    }
    EXPECT_EQ(detail::tls_hook_guard, detail::kGuardInHook);
  }
  EXPECT_EQ(detail::tls_hook_guard, 0U);
}

TEST(HookGuardTest, NestedHookGuardIsNotEnteredAndCountsItsKind) {
  ASSERT_EQ(detail::tls_hook_guard, 0U);
  const HookPasses before = ReadHookPasses();
  {
    const HookGuard outer(GuardedHook::kFd);
    EXPECT_TRUE(outer.entered());
    {
      const HookGuard inner(GuardedHook::kHeapAlloc);
      EXPECT_FALSE(inner.entered());
    }
    // The inner scope did not clear the outer one's bit.
    EXPECT_EQ(detail::tls_hook_guard, detail::kGuardInHook);
    const HookGuard again(GuardedHook::kHeapFree);
    EXPECT_FALSE(again.entered());
  }
  EXPECT_EQ(detail::tls_hook_guard, 0U);
  const HookPasses after = ReadHookPasses();
  EXPECT_EQ(after.of(GuardedHook::kHeapAlloc), before.of(GuardedHook::kHeapAlloc) + 1);
  EXPECT_EQ(after.of(GuardedHook::kHeapFree), before.of(GuardedHook::kHeapFree) + 1);
  EXPECT_EQ(after.of(GuardedHook::kFd), before.of(GuardedHook::kFd));  // entered
  EXPECT_STREQ(GuardedHookName(GuardedHook::kHeapAlloc), "heap_alloc");
}

}  // namespace
}  // namespace leakprobe
