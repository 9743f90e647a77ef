#include "leakprobe/heap/heap_tracker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "fake_frames.h"
#include "leakprobe/runtime/guard.h"

namespace leakprobe {
namespace {

using testing::FakeFrame;

// Fake, never dereferenced addresses, 16-byte aligned like real blocks.
void* Address(std::uintptr_t i) { return reinterpret_cast<void*>(0x10000000 + i * 16); }

class HeapTrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StackTable::Instance().SetSource(testing::FakeSource());
    StackTable::Instance().SetLibraryPrefixes({"/lib/"});
  }
  void TearDown() override { tracker_.Stop(); }
  void Start(std::uint64_t sample_bytes, std::size_t max_blocks = 1 << 17) {
    HeapConfig config;
    config.sample_bytes = sample_bytes;
    config.max_blocks = max_blocks;
    tracker_.Start(config);
  }
  HeapTracker tracker_;
};

double SiteBytes(const HeapSummary& s, const std::string& site) {
  for (const HeapSite& h : s.top_sites) {
    if (h.site == site) return h.live_bytes;
  }
  return 0;
}

// The filter every free probes: never a false negative, whatever the order
// of adds and removes in a granule; its bit clears when the granule's last
// sampled block goes; a saturated granule stays set.
TEST(AddressFilterTest, AGranuleIsSetWhileAnyOfItsBlocksIsAndSaturatesSet) {
  auto filter = std::make_unique<detail::AddressFilter>();
  const auto at = [](std::uintptr_t address) {
    return reinterpret_cast<const void*>(address);
  };
  const std::uintptr_t base = 0x7f0000100000;
  EXPECT_FALSE(filter->MaybeContains(at(base)));
  filter->Add(at(base + 16));
  filter->Add(at(base + 48));                           // the same 256-byte granule
  EXPECT_TRUE(filter->MaybeContains(at(base + 200)));   // granule-wide
  EXPECT_FALSE(filter->MaybeContains(at(base + 256)));  // the next granule
  EXPECT_FALSE(filter->MaybeContains(at(base - 1)));    // the previous one
  EXPECT_TRUE(filter->MaybeContains(at(base + (std::uintptr_t{1} << 28))));  // aliased
  filter->Remove(at(base + 16));
  EXPECT_TRUE(filter->MaybeContains(at(base + 48)));  // one block left
  filter->Remove(at(base + 48));
  EXPECT_FALSE(filter->MaybeContains(at(base + 48)));
  filter->Remove(at(base + 48));  // a remove below zero changes nothing
  filter->Add(at(base + 64));
  EXPECT_TRUE(filter->MaybeContains(at(base + 64)));
  filter->Remove(at(base + 64));
  EXPECT_FALSE(filter->MaybeContains(at(base + 64)));
  // Neighbouring granules share a word of bits: each keeps its own.
  for (std::uintptr_t g = 0; g < 64; ++g) filter->Add(at(base + g * 256));
  for (std::uintptr_t g = 0; g < 64; g += 2) filter->Remove(at(base + g * 256));
  for (std::uintptr_t g = 0; g < 64; ++g) {
    EXPECT_EQ(filter->MaybeContains(at(base + g * 256)), g % 2 == 1) << g;
  }
  for (int i = 0; i < 300; ++i) filter->Add(at(base + 1024 * 1024));
  for (int i = 0; i < 300; ++i) filter->Remove(at(base + 1024 * 1024));
  EXPECT_TRUE(filter->MaybeContains(at(base + 1024 * 1024)));  // saturated: stays
  filter->Clear();
  EXPECT_FALSE(filter->MaybeContains(at(base + 1024 * 1024)));
  EXPECT_FALSE(filter->MaybeContains(at(base + 256)));
}

TEST_F(HeapTrackerTest, EstimatesAreUnbiasedPerSite) {
  Start(64 * 1024);
  // Site A holds 1 GiB in 1000-byte blocks, site B 256 MiB in 64 KiB blocks.
  testing::tls_fake_stack = {FakeFrame(1, 10)};
  constexpr std::uintptr_t kA = 1 << 20;
  for (std::uintptr_t i = 0; i < kA; ++i) tracker_.OnAlloc(Address(i), 1024);
  testing::tls_fake_stack = {FakeFrame(1001, 0), FakeFrame(2, 10)};
  for (std::uintptr_t i = 0; i < 4096; ++i) tracker_.OnAlloc(Address(kA + i), 64 * 1024);
  const HeapSummary s = tracker_.Summary(10);
  // ~16k samples for A: the standard error is under 1%; allow 5 of them.
  EXPECT_NEAR(SiteBytes(s, "/app/file1.py:5 in f1"), 1024.0 * kA, 0.05 * 1024 * kA);
  EXPECT_NEAR(SiteBytes(s, "/app/file2.py:5 in f2"), 256.0 * (1 << 20),
              0.05 * 256 * (1 << 20));
  ASSERT_GE(s.top_sites.size(), 2u);
  EXPECT_EQ(s.top_sites[0].site, "/app/file1.py:5 in f1");  // largest first
  EXPECT_NEAR(s.top_sites[0].live_count, static_cast<double>(kA), 0.05 * kA);
  EXPECT_NEAR(s.live_bytes, 1280.0 * (1 << 20), 0.05 * 1280 * (1 << 20));
}

// leakprobe's own threads (the sampler, the exporter's) mark themselves:
// their allocations are the profiler's memory, never the application's.
// Their blocks freed on another thread are forgotten as usual.
TEST_F(HeapTrackerTest, OwnThreadsAreNotSampled) {
  Start(4096);
  HeapSummary own{};
  std::thread([&] {
    MarkOwnThread();
    testing::tls_fake_stack = {FakeFrame(5, 10)};
    for (std::uintptr_t i = 0; i < 100000; ++i) tracker_.OnAlloc(Address(i), 512);
    own = tracker_.Summary(10);
  }).join();
  EXPECT_EQ(own.samples, 0u);
  EXPECT_EQ(own.live_blocks, 0u);
  EXPECT_GT(own.own_thread_samples, 5000u);      // 50 MB at a 4 KiB mean: ~12,500
  testing::tls_fake_stack = {FakeFrame(5, 10)};  // the same work on this thread
  for (std::uintptr_t i = 100000; i < 200000; ++i) tracker_.OnAlloc(Address(i), 512);
  const HeapSummary app = tracker_.Summary(10);
  EXPECT_GT(app.samples, 5000u);
  EXPECT_EQ(app.own_thread_samples, own.own_thread_samples);
  std::thread([&] {
    MarkOwnThread();
    for (std::uintptr_t i = 100000; i < 200000; ++i) tracker_.OnFree(Address(i));
  }).join();
  EXPECT_EQ(tracker_.Summary(10).live_blocks, 0u);  // frees on an own thread still count
}

TEST_F(HeapTrackerTest, FreesRemoveSampledBlocks) {
  Start(4096);
  testing::tls_fake_stack = {FakeFrame(3, 10)};
  for (std::uintptr_t i = 0; i < 100000; ++i) tracker_.OnAlloc(Address(i), 512);
  const HeapSummary before = tracker_.Summary(10);
  EXPECT_GT(before.live_blocks, 1000u);
  for (std::uintptr_t i = 0; i < 100000; ++i) tracker_.OnFree(Address(i));
  const HeapSummary after = tracker_.Summary(10);
  EXPECT_EQ(after.live_blocks, 0u);
  EXPECT_NEAR(after.live_bytes, 0, 1);
  EXPECT_NEAR(after.freed_bytes, after.allocated_bytes, 1);
  // Freeing unknown pointers (allocated before tracking) changes nothing.
  for (std::uintptr_t i = 200000; i < 300000; ++i) tracker_.OnFree(Address(i));
  tracker_.OnFree(nullptr);
  EXPECT_EQ(tracker_.Summary(10).live_blocks, 0u);
}

// A thread's countdown outlives a change of configuration; a fresh thread
// starts from the configuration in force.
template <typename F>
void OnFreshThread(F f) {
  std::thread(f).join();
}

TEST_F(HeapTrackerTest, FullTableDropsAndCounts) {
  Start(1, 10);  // every allocation is sampled; room for 10
  OnFreshThread([&] {
    testing::tls_fake_stack = {FakeFrame(4, 10)};
    for (std::uintptr_t i = 0; i < 50; ++i) tracker_.OnAlloc(Address(i), 100);
  });
  const HeapSummary s = tracker_.Summary(10);
  EXPECT_EQ(s.live_blocks, 10u);
  EXPECT_GE(s.dropped_samples, 39u);  // the first allocation per thread may not sample
  EXPECT_LT(s.memory_bytes, 32u << 20);
}

TEST_F(HeapTrackerTest, StopForgetsAndLaterFreesArePassThrough) {
  Start(1);
  OnFreshThread([&] {
    testing::tls_fake_stack = {FakeFrame(5, 10)};
    for (std::uintptr_t i = 0; i < 100; ++i) tracker_.OnAlloc(Address(i), 100);
  });
  EXPECT_GT(tracker_.Summary(10).live_blocks, 90u);
  tracker_.Stop();
  EXPECT_FALSE(tracker_.enabled());
  for (std::uintptr_t i = 0; i < 100; ++i) tracker_.OnFree(Address(i));
  for (std::uintptr_t i = 0; i < 100; ++i) tracker_.OnAlloc(Address(i), 100);
  EXPECT_EQ(tracker_.Summary(10).live_blocks, 0u);
  EXPECT_EQ(tracker_.Summary(10).samples, 0u);
}

TEST_F(HeapTrackerTest, ZeroSizeAndNullAreHarmless) {
  Start(1);
  testing::tls_fake_stack = {FakeFrame(6, 10)};
  tracker_.OnAlloc(nullptr, 100);
  for (std::uintptr_t i = 0; i < 10; ++i) tracker_.OnAlloc(Address(i), 0);
  EXPECT_EQ(tracker_.Summary(10).live_blocks, 0u);
}

// Many threads allocating and freeing real memory at once; run under ASan
// and TSan by scripts/test.sh. HEAP_STRESS_SECONDS sets the duration.
TEST_F(HeapTrackerTest, ThirtyTwoThreadsAllocatingAndFreeing) {
  Start(4096);
  const char* env = std::getenv("HEAP_STRESS_SECONDS");
  const double seconds = env != nullptr ? std::atof(env) : 2.0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::atomic<std::uint64_t> operations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&, t] {
      testing::tls_fake_stack = {FakeFrame(static_cast<std::uintptr_t>(10 + t % 4), 10)};
      std::vector<void*> held;
      std::uint64_t ops = 0;
      while (std::chrono::steady_clock::now() < deadline) {
        for (int i = 0; i < 256; ++i) {
          const std::size_t size = 16 + static_cast<std::size_t>((i * 37) % 2048);
          void* p = std::malloc(size);
          tracker_.OnAlloc(p, size);
          held.push_back(p);
        }
        for (void* p : held) {
          tracker_.OnFree(p);
          std::free(p);
        }
        ops += held.size();
        held.clear();
      }
      operations += ops;
    });
  }
  std::thread scraper([&] {
    while (std::chrono::steady_clock::now() < deadline) (void)tracker_.Summary(10);
  });
  for (auto& thread : threads) thread.join();
  scraper.join();
  const HeapSummary s = tracker_.Summary(10);
  EXPECT_GT(operations.load(), 0u);
  EXPECT_EQ(s.live_blocks, 0u);  // everything allocated was freed
  EXPECT_GT(s.samples, 0u);
  EXPECT_NEAR(s.live_bytes, 0, 1e-3 * s.allocated_bytes);
}

}  // namespace
}  // namespace leakprobe
