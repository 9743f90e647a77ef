#include "leakprobe/objects/object_registry.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "fake_frames.h"

namespace leakprobe {
namespace {

using testing::FakeFrame;
using Result = ObjectRegistry::AddResult;

// Addresses stand in for the weak references the bindings key records
// by: the registry never dereferences them.
void* Handle(std::uintptr_t n) { return reinterpret_cast<void*>(n * 16 + 8); }

class ObjectRegistryTest : public ::testing::Test {
 protected:
  ObjectRegistryTest() : stacks_(1000, 100), registry_(8, &stacks_) {
    stacks_.SetSource(testing::FakeSource());
    stacks_.SetLibraryPrefixes({"/lib/"});
    registry_.Start(1000, 5);
  }
  StackId Stack(std::vector<LeakprobeRawFrame> frames) {
    return stacks_.Intern(frames.data(), static_cast<int>(frames.size()));
  }
  // By value: callers pass temporaries.
  static ObjectTypeSummary TypeOf(const ObjectSummary& s, const std::string& name) {
    for (const ObjectTypeSummary& t : s.types) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no type " << name;
    return s.types.at(0);
  }
  StackTable stacks_;
  ObjectRegistry registry_;
};

TEST_F(ObjectRegistryTest, CountsCreatedClosedCollectedAndLive) {
  const ObjectTypeId client = registry_.RegisterType("httpx.Client");
  EXPECT_EQ(registry_.RegisterType("httpx.Client"), client);  // idempotent
  const ObjectTypeId session = registry_.RegisterType("Session");
  EXPECT_NE(session, client);
  EXPECT_NE(client, kOverflowType);
  for (std::uintptr_t i = 1; i <= 5; ++i) {
    EXPECT_EQ(registry_.Add(client, Handle(i), kEmptyStack, 100), Result::kAdded);
  }
  EXPECT_EQ(registry_.Add(session, Handle(6), kEmptyStack, 100), Result::kAdded);
  // A second record for a handle, even under another type, is refused.
  EXPECT_EQ(registry_.Add(session, Handle(1), kEmptyStack, 100), Result::kDuplicate);
  EXPECT_TRUE(registry_.Tracked(Handle(1)));
  EXPECT_FALSE(registry_.Tracked(Handle(99)));
  EXPECT_TRUE(registry_.Close(Handle(1)));
  EXPECT_FALSE(registry_.Close(Handle(1)));   // given back once only
  EXPECT_FALSE(registry_.Close(Handle(99)));  // never tracked
  EXPECT_TRUE(registry_.Collected(Handle(2)));
  EXPECT_FALSE(registry_.Collected(Handle(2)));
  EXPECT_FALSE(registry_.Collected(Handle(1)));  // closed before
  EXPECT_FALSE(registry_.Tracked(Handle(2)));

  const ObjectSummary s = registry_.Summary(100);
  const ObjectTypeSummary c = TypeOf(s, "httpx.Client");
  EXPECT_EQ(c.created, 5u);
  EXPECT_EQ(c.closed, 1u);
  EXPECT_EQ(c.collected_open, 1u);
  EXPECT_EQ(c.live, 3u);
  EXPECT_EQ(c.dropped, 0u);
  const ObjectTypeSummary t = TypeOf(s, "Session");
  EXPECT_EQ(t.created, 1u);  // the duplicate was not counted
  EXPECT_EQ(t.live, 1u);
  EXPECT_EQ(s.records, 4u);
  EXPECT_EQ(s.types.at(0).name, kOverflowTypeName);
  EXPECT_GT(s.memory_bytes, sizeof(ObjectRegistry));
}

// What a unit of work reads: live counts by type id as it begins, and the
// types whose count changed (by name) as it ends, a type registered
// meanwhile counted from 0.
TEST_F(ObjectRegistryTest, LiveChangesSinceNameTheTypesWhoseCountMoved) {
  const ObjectTypeId client = registry_.RegisterType("httpx.Client");
  const ObjectTypeId session = registry_.RegisterType("Session");
  ASSERT_EQ(registry_.Add(client, Handle(1), kEmptyStack, 100), Result::kAdded);
  ASSERT_EQ(registry_.Add(session, Handle(2), kEmptyStack, 100), Result::kAdded);
  const std::vector<std::uint64_t> before = registry_.LiveCounts();
  ASSERT_GT(before.size(), static_cast<std::size_t>(std::max(client, session)));
  EXPECT_EQ(before[client], 1u);
  EXPECT_EQ(before[session], 1u);
  EXPECT_TRUE(registry_.LiveChangesSince(before).empty());
  ASSERT_EQ(registry_.Add(client, Handle(3), kEmptyStack, 100), Result::kAdded);
  ASSERT_EQ(registry_.Add(client, Handle(4), kEmptyStack, 100), Result::kAdded);
  EXPECT_TRUE(registry_.Close(Handle(2)));
  const ObjectTypeId engine = registry_.RegisterType("Engine");
  ASSERT_EQ(registry_.Add(engine, Handle(5), kEmptyStack, 100), Result::kAdded);
  auto changes = registry_.LiveChangesSince(before);
  std::sort(changes.begin(), changes.end());
  EXPECT_EQ(changes, (std::vector<std::pair<std::string, std::int64_t>>{
                         {"Engine", 1}, {"Session", -1}, {"httpx.Client", 2}}));
}

TEST_F(ObjectRegistryTest, RecordCapDropsAndCounts) {
  registry_.Start(2, 5);
  const ObjectTypeId t = registry_.RegisterType("T");
  EXPECT_EQ(registry_.Add(t, Handle(1), kEmptyStack, 1), Result::kAdded);
  EXPECT_FALSE(registry_.AtCapacity());
  EXPECT_EQ(registry_.Add(t, Handle(2), kEmptyStack, 1), Result::kAdded);
  EXPECT_TRUE(registry_.AtCapacity());
  EXPECT_EQ(registry_.Add(t, Handle(3), kEmptyStack, 1), Result::kDropped);
  registry_.CountDropped(t);                 // what the bindings do when AtCapacity
  EXPECT_FALSE(registry_.Close(Handle(3)));  // dropped: its close is not seen
  EXPECT_TRUE(registry_.Close(Handle(1)));
  EXPECT_FALSE(registry_.AtCapacity());
  EXPECT_EQ(registry_.Add(t, Handle(4), kEmptyStack, 1), Result::kAdded);
  registry_.CountError(t);
  const ObjectTypeSummary s = TypeOf(registry_.Summary(1), "T");
  EXPECT_EQ(s.created, 5u);  // 3 tracked, 2 dropped
  EXPECT_EQ(s.dropped, 2u);
  EXPECT_EQ(s.closed, 1u);
  EXPECT_EQ(s.live, 2u);
  EXPECT_EQ(s.errors, 1u);
  EXPECT_EQ(registry_.Summary(1).max_records, 2u);
}

TEST_F(ObjectRegistryTest, TypeCapOverflowsIntoOneCountedType) {
  ObjectRegistry small(3, &stacks_);  // the overflow type and two more
  small.Start(100, 5);
  const ObjectTypeId a = small.RegisterType("a");
  const ObjectTypeId b = small.RegisterType("b");
  EXPECT_EQ(small.RegisterType("c"), kOverflowType);
  EXPECT_EQ(small.RegisterType("d"), kOverflowType);
  EXPECT_EQ(small.RegisterType("a"), a);  // known names still resolve
  EXPECT_NE(a, b);
  EXPECT_EQ(small.Add(kOverflowType, Handle(1), kEmptyStack, 1), Result::kAdded);
  const ObjectSummary s = small.Summary(1);
  EXPECT_EQ(s.type_overflows, 2u);
  ASSERT_EQ(s.types.size(), 3u);
  EXPECT_EQ(s.types[0].name, kOverflowTypeName);
  EXPECT_EQ(s.types[0].live, 1u);
  EXPECT_EQ(small.TypeName(kOverflowType), kOverflowTypeName);
  // Names are cut at kMaxNameBytes.
  const std::string longer(ObjectRegistry::kMaxNameBytes + 50, 'x');
  ObjectRegistry named(4, &stacks_);
  EXPECT_EQ(named.TypeName(named.RegisterType(longer)).size(),
            ObjectRegistry::kMaxNameBytes);
}

TEST_F(ObjectRegistryTest, OldestAgeFollowsTheOldestLiveRecord) {
  const ObjectTypeId t = registry_.RegisterType("T");
  registry_.Add(t, Handle(1), kEmptyStack, 1'000'000'000);
  registry_.Add(t, Handle(2), kEmptyStack, 2'000'000'000);
  registry_.Add(t, Handle(3), kEmptyStack, 3'000'000'000);
  EXPECT_DOUBLE_EQ(TypeOf(registry_.Summary(5'000'000'000), "T").oldest_age_seconds, 4.0);
  registry_.Close(Handle(2));  // from the middle
  EXPECT_DOUBLE_EQ(TypeOf(registry_.Summary(5'000'000'000), "T").oldest_age_seconds, 4.0);
  registry_.Collected(Handle(1));  // the head
  EXPECT_DOUBLE_EQ(TypeOf(registry_.Summary(5'000'000'000), "T").oldest_age_seconds, 2.0);
  registry_.Close(Handle(3));
  EXPECT_DOUBLE_EQ(TypeOf(registry_.Summary(5'000'000'000), "T").oldest_age_seconds, 0.0);
  // A clock read that raced another thread's keeps creation order.
  registry_.Add(t, Handle(4), kEmptyStack, 4'000'000'000);
  registry_.Add(t, Handle(5), kEmptyStack, 3'500'000'000);
  const std::vector<ObjectRecord> records = registry_.Records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_LT(records[0].sequence, records[1].sequence);
  EXPECT_EQ(records[1].created_ns, 4'000'000'000);
}

TEST_F(ObjectRegistryTest, TopSitesByLiveInstancesPerType) {
  const ObjectTypeId t = registry_.RegisterType("T");
  const ObjectTypeId u = registry_.RegisterType("U");
  // Two stacks with one attribution site (the library frame differs).
  const StackId site_a1 = Stack({FakeFrame(1001, 4), FakeFrame(5, 20)});
  const StackId site_a2 = Stack({FakeFrame(1002, 4), FakeFrame(5, 20)});
  const StackId site_b = Stack({FakeFrame(6, 10)});
  std::uintptr_t n = 0;
  const auto add = [&](ObjectTypeId type, StackId stack) {
    ++n;
    registry_.Add(type, Handle(n), stack, 1);
  };
  for (int i = 0; i < 3; ++i) add(t, site_a1);
  for (int i = 0; i < 2; ++i) add(t, site_a2);
  for (int i = 0; i < 4; ++i) add(t, site_b);
  add(u, site_b);
  add(t, kEmptyStack);
  ObjectSummary s = registry_.Summary(1);
  std::vector<ObjectSite> sites = TypeOf(s, "T").top_sites;
  ASSERT_EQ(sites.size(), 3u);
  EXPECT_EQ(sites[0].site, "/app/file5.py:10 in f5");
  EXPECT_EQ(sites[0].live, 5u);
  EXPECT_EQ(sites[1].site, "/app/file6.py:5 in f6");
  EXPECT_EQ(sites[1].live, 4u);
  EXPECT_EQ(sites[2].site, "<native>");
  ASSERT_EQ(TypeOf(s, "U").top_sites.size(), 1u);
  EXPECT_EQ(TypeOf(s, "U").top_sites[0].live, 1u);
  // Closing moves the counts; at most top-N are kept.
  for (std::uintptr_t i = 1; i <= 4; ++i) registry_.Close(Handle(i));
  registry_.Start(1000, 1);
  s = registry_.Summary(1);
  sites = TypeOf(s, "T").top_sites;
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].site, "/app/file6.py:5 in f6");
  EXPECT_EQ(sites[0].live, 4u);
}

TEST_F(ObjectRegistryTest, SitesWithNoLiveInstanceAreNotListedAndDoNotAccumulate) {
  const ObjectTypeId t = registry_.RegisterType("T");
  const StackId kept = Stack({FakeFrame(7, 10)});
  const StackId churned = Stack({FakeFrame(8, 10)});
  registry_.Add(t, Handle(1), kept, 1);
  // A churning owner: made and closed at one site, over and over.
  for (std::uintptr_t n = 2; n < 1000; ++n) {
    ASSERT_EQ(registry_.Add(t, Handle(n), churned, 1), Result::kAdded);
    ASSERT_TRUE(registry_.Close(Handle(n)));
  }
  std::vector<ObjectSite> sites = TypeOf(registry_.Summary(1), "T").top_sites;
  ASSERT_EQ(sites.size(), 1u);  // the churned site holds none: not listed
  EXPECT_EQ(sites[0].site, "/app/file7.py:5 in f7");
  EXPECT_EQ(sites[0].live, 1u);
  // 100,000 distinct creation stacks, each closed at once: the entries
  // left at 0 are swept, so the registry's memory does not grow with them
  // (kept, the site map alone would hold 100,000 entries, over 2 MB).
  const std::size_t before = registry_.MemoryBytes();
  for (std::uintptr_t n = 0; n < 100000; ++n) {
    const auto stack = static_cast<StackId>(1000 + n);  // ids the table never made
    ASSERT_EQ(registry_.Add(t, Handle(5000 + n), stack, 1), Result::kAdded);
    ASSERT_TRUE(registry_.Close(Handle(5000 + n)));
  }
  EXPECT_LT(registry_.MemoryBytes(), before + 128 * 1024);
  ObjectTypeSummary summary = TypeOf(registry_.Summary(1), "T");
  EXPECT_EQ(summary.live, 1u);
  EXPECT_EQ(summary.created, 1u + 998u + 100000u);
  ASSERT_EQ(summary.top_sites.size(), 1u);
  // And a site that drops to 0 counts again from 0 when it makes more.
  registry_.Add(t, Handle(2), churned, 1);
  registry_.Add(t, Handle(3), churned, 1);
  sites = TypeOf(registry_.Summary(1), "T").top_sites;
  ASSERT_EQ(sites.size(), 2u);
  EXPECT_EQ(sites[0].site, "/app/file8.py:5 in f8");
  EXPECT_EQ(sites[0].live, 2u);
}

// The registry remembers the site it last counted (a churning owner then
// costs no lookup); sites, types, closes and collections interleaved in
// every order must still leave each site's live count exact.
TEST_F(ObjectRegistryTest, SiteCountsStayExactWhenSitesAndTypesInterleave) {
  const ObjectTypeId t = registry_.RegisterType("T");
  const ObjectTypeId u = registry_.RegisterType("U");
  const StackId stacks[] = {Stack({FakeFrame(11, 10)}), Stack({FakeFrame(12, 10)}),
                            Stack({FakeFrame(13, 10)})};
  const ObjectTypeId types[] = {t, u};
  // expected[type][stack]; live objects as (n, type, stack).
  std::uint64_t expected[2][3] = {};
  struct Live {
    std::uintptr_t n;
    int type;
    int stack;
  };
  std::vector<Live> live;
  std::uint64_t state = 12345;
  const auto next = [&state](std::uint64_t bound) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % bound;
  };
  const auto check = [&](int step) {
    const ObjectSummary s = registry_.Summary(1);
    for (int ty = 0; ty < 2; ++ty) {
      const ObjectTypeSummary summary = TypeOf(s, ty == 0 ? "T" : "U");
      for (int st = 0; st < 3; ++st) {
        const std::string site = "/app/file" + std::to_string(11 + st) + ".py:5 in f" +
                                 std::to_string(11 + st);
        std::uint64_t got = 0;
        for (const ObjectSite& entry : summary.top_sites) {
          if (entry.site == site) got = entry.live;
        }
        ASSERT_EQ(got, expected[ty][st])
            << "step " << step << ", type " << ty << ", site " << site;
      }
    }
  };
  std::uintptr_t n = 0;
  for (int step = 0; step < 3000; ++step) {
    const std::uint64_t what = next(10);
    if (what < 5 || live.empty()) {  // runs of one site, and switches
      const int ty = static_cast<int>(next(2));
      const int st = what < 3 && n > 0 && !live.empty() ? live.back().stack
                                                        : static_cast<int>(next(3));
      ++n;
      ASSERT_EQ(registry_.Add(types[ty], Handle(n), stacks[st], 1), Result::kAdded);
      live.push_back({n, ty, st});
      ++expected[ty][st];
    } else {
      const std::size_t at = next(live.size());
      const Live gone = live[at];
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(at));
      if (what < 8) {
        ASSERT_TRUE(registry_.Close(Handle(gone.n)));
      } else {
        ASSERT_TRUE(registry_.Collected(Handle(gone.n)));
      }
      --expected[gone.type][gone.stack];
    }
    if (step % 100 == 99) check(step);
  }
  check(3000);
  // After Stop (which forgets the remembered site) and a new Start, the
  // same site counts from zero.
  registry_.Stop();
  registry_.Start(1000, 5);
  registry_.Add(t, Handle(n + 1), stacks[0], 1);
  registry_.Add(t, Handle(n + 2), stacks[0], 1);
  const std::vector<ObjectSite> sites = TypeOf(registry_.Summary(1), "T").top_sites;
  ASSERT_EQ(sites.size(), 1u);
  EXPECT_EQ(sites[0].live, 2u);
}

TEST_F(ObjectRegistryTest, CollectedOpenCountedPerCreationSite) {
  const ObjectTypeId t = registry_.RegisterType("T");
  const ObjectTypeId u = registry_.RegisterType("U");
  // Two stacks with one attribution site, a third site, and a close.
  const StackId site_a1 = Stack({FakeFrame(1001, 4), FakeFrame(5, 20)});
  const StackId site_a2 = Stack({FakeFrame(1002, 4), FakeFrame(5, 20)});
  const StackId site_b = Stack({FakeFrame(6, 10)});
  std::uintptr_t n = 0;
  const auto collect = [&](ObjectTypeId type, StackId stack) {
    ++n;
    ASSERT_EQ(registry_.Add(type, Handle(n), stack, 1), Result::kAdded);
    ASSERT_TRUE(registry_.Collected(Handle(n)));
  };
  for (int i = 0; i < 2; ++i) collect(t, site_a1);
  for (int i = 0; i < 3; ++i) collect(t, site_a2);
  for (int i = 0; i < 4; ++i) collect(t, site_b);
  collect(u, site_b);
  // Closed, then collected: not collected while open.
  registry_.Add(t, Handle(100), site_b, 1);
  registry_.Close(Handle(100));
  EXPECT_FALSE(registry_.Collected(Handle(100)));
  // Live: not in the collected sites.
  registry_.Add(t, Handle(101), site_a1, 1);
  const ObjectSummary s = registry_.Summary(1);
  const ObjectTypeSummary ts = TypeOf(s, "T");
  EXPECT_EQ(ts.collected_open, 9u);
  ASSERT_EQ(ts.collected_open_sites.size(), 2u);
  EXPECT_EQ(ts.collected_open_sites[0].site, "/app/file5.py:10 in f5");
  EXPECT_EQ(ts.collected_open_sites[0].collected_open, 5u);
  // The stack that contributed most to the site: its frames name it.
  EXPECT_EQ(ts.collected_open_sites[0].stack, site_a2);
  EXPECT_EQ(ts.collected_open_sites[1].site, "/app/file6.py:5 in f6");
  EXPECT_EQ(ts.collected_open_sites[1].collected_open, 4u);
  EXPECT_EQ(ts.collected_open_sites[1].stack, site_b);
  const ObjectTypeSummary us = TypeOf(s, "U");
  ASSERT_EQ(us.collected_open_sites.size(), 1u);
  EXPECT_EQ(us.collected_open_sites[0].collected_open, 1u);
  // The live-site list is unaffected by collections.
  ASSERT_EQ(ts.top_sites.size(), 1u);
  EXPECT_EQ(ts.top_sites[0].live, 1u);
  // At most top_sites of them.
  registry_.Start(1000, 1);
  EXPECT_EQ(TypeOf(registry_.Summary(1), "T").collected_open_sites.size(), 1u);
  // Stop forgets them.
  registry_.Stop();
  registry_.Start(1000, 5);
  EXPECT_TRUE(TypeOf(registry_.Summary(1), "T").collected_open_sites.empty());
}

TEST_F(ObjectRegistryTest, CollectedOpenSitesAreBoundedWithAnOverflowEntry) {
  const ObjectTypeId t = registry_.RegisterType("T");
  registry_.Start(1000, 100);
  constexpr std::size_t kSites = ObjectRegistry::kMaxCollectedSites + 4;
  std::uintptr_t n = 0;
  std::vector<StackId> stacks;
  for (std::size_t i = 0; i < kSites; ++i) {
    stacks.push_back(Stack({FakeFrame(static_cast<int>(10 + i), 1)}));
  }
  // Stack i collects i + 1 instances, the first 16 stacks seen first.
  for (std::size_t i = 0; i < kSites; ++i) {
    for (std::size_t k = 0; k <= i; ++k) {
      ++n;
      registry_.Add(t, Handle(n), stacks[i], 1);
      registry_.Collected(Handle(n));
    }
  }
  const ObjectTypeSummary s = TypeOf(registry_.Summary(1), "T");
  EXPECT_EQ(s.collected_open, n);
  ASSERT_EQ(s.collected_open_sites.size(), ObjectRegistry::kMaxCollectedSites + 1);
  // Stacks 16..19 collected 17 + 18 + 19 + 20 = 74: the overflow entry, first.
  EXPECT_EQ(s.collected_open_sites[0].site, kCollectedSitesOverflowName);
  EXPECT_EQ(s.collected_open_sites[0].collected_open, 74u);
  EXPECT_EQ(s.collected_open_sites[0].stack, kEmptyStack);
  EXPECT_EQ(s.collected_open_sites[1].collected_open, 16u);
  EXPECT_EQ(s.collected_open_sites[1].stack, stacks[15]);
  EXPECT_EQ(s.collected_open_sites.back().collected_open, 1u);
  std::uint64_t total = 0;
  for (const ObjectCollectedSite& site : s.collected_open_sites)
    total += site.collected_open;
  EXPECT_EQ(total, n);
  // More collections from yet more stacks add no collected site: they
  // count in the overflow entry. (The live-site map keeps their entries at
  // 0 until a sweep: SitesWithNoLiveInstanceAreNotListedAndDoNotAccumulate.)
  for (int i = 0; i < 50; ++i) {
    ++n;
    registry_.Add(t, Handle(n), Stack({FakeFrame(200 + i, 1)}), 1);
    registry_.Collected(Handle(n));
  }
  const ObjectTypeSummary after = TypeOf(registry_.Summary(1), "T");
  ASSERT_EQ(after.collected_open_sites.size(), ObjectRegistry::kMaxCollectedSites + 1);
  EXPECT_EQ(after.collected_open_sites[0].collected_open, 124u);
}

TEST_F(ObjectRegistryTest, StopForgetsRecordsAndCountsKeepsNames) {
  const ObjectTypeId t = registry_.RegisterType("T");
  registry_.Add(t, Handle(1), kEmptyStack, 1);
  registry_.Add(t, Handle(2), kEmptyStack, 1);
  registry_.Close(Handle(1));
  std::vector<void*> handles = registry_.Stop();
  EXPECT_EQ(handles, std::vector<void*>{Handle(2)});
  EXPECT_FALSE(registry_.enabled());
  EXPECT_EQ(registry_.Add(t, Handle(3), kEmptyStack, 1), Result::kDisabled);
  EXPECT_FALSE(registry_.Collected(Handle(2)));
  registry_.Start(10, 5);
  EXPECT_EQ(registry_.RegisterType("T"), t);
  const ObjectTypeSummary s = TypeOf(registry_.Summary(1), "T");
  EXPECT_EQ(s.created, 0u);
  EXPECT_EQ(s.closed, 0u);
  EXPECT_EQ(s.live, 0u);
  EXPECT_EQ(registry_.Records().size(), 0u);
}

TEST_F(ObjectRegistryTest, ThreadsCreatingAndClosingWhileScraped) {
  const ObjectTypeId t = registry_.RegisterType("T");
  registry_.Start(1'000'000, 5);
  constexpr int kThreads = 4;
  constexpr std::uintptr_t kPerThread = 20000;
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    while (!done.load()) {
      const ObjectSummary s = registry_.Summary(1);
      EXPECT_LE(s.records, kThreads * kPerThread);
    }
  });
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      const std::uintptr_t base = static_cast<std::uintptr_t>(k) * kPerThread * 2 + 1;
      for (std::uintptr_t i = 0; i < kPerThread; ++i) {
        const std::uintptr_t n = base + i;
        EXPECT_EQ(registry_.Add(t, Handle(n), kEmptyStack, 1), Result::kAdded);
        if (i % 3 == 0) {
          EXPECT_TRUE(registry_.Close(Handle(n)));
        } else if (i % 3 == 1) {
          EXPECT_TRUE(registry_.Collected(Handle(n)));
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  done = true;
  scraper.join();
  const ObjectTypeSummary s = TypeOf(registry_.Summary(1), "T");
  constexpr std::uint64_t kTotal = kThreads * kPerThread;
  EXPECT_EQ(s.created, kTotal);
  EXPECT_EQ(s.closed, kThreads * ((kPerThread + 2) / 3));
  EXPECT_EQ(s.collected_open, kThreads * ((kPerThread + 1) / 3));
  EXPECT_EQ(s.live, kTotal - s.closed - s.collected_open);
  EXPECT_EQ(registry_.Records().size(), s.live);
}

TEST(ObjectRegistryForkTest, ChildOfAForkDuringTrackingIsUsable) {
  // The process-wide registry's lock is a fork stage: a fork while another
  // thread creates and closes leaves the child a registry it can use.
  ObjectRegistry& registry = ObjectRegistry::Instance();
  registry.Start(1'000'000, 5);
  const ObjectTypeId t = registry.RegisterType("fork-test");
  std::atomic<bool> done{false};
  std::thread churn([&] {
    for (std::uintptr_t n = 1; !done.load(); ++n) {
      registry.Add(t, Handle(n), kEmptyStack, 1);
      registry.Close(Handle(n));
    }
  });
  int failed_children = 0;
  for (int i = 0; i < 20 && failed_children == 0; ++i) {
    const pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      alarm(5);  // a child that inherited the lock held dies: a failure, not a hang
      const auto result = registry.Add(t, Handle(1u << 30), kEmptyStack, 1);
      const ObjectSummary s = registry.Summary(1);
      _exit(result == Result::kAdded && s.records >= 1 ? 0 : 1);
    }
    int status = 0;
    const bool ok =
        waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) ++failed_children;
  }
  done = true;
  churn.join();
  EXPECT_EQ(failed_children, 0);
  registry.Stop();
}

}  // namespace
}  // namespace leakprobe
