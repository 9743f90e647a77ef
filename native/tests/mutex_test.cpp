// leakprobe::Mutex (leakprobe/runtime/mutex.h): mutual exclusion under
// contention, sleepers woken by Unlock, and CondVar's timed wait on it.
#include "leakprobe/runtime/mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace leakprobe {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

TEST(MutexTest, ThreadsIncrementingUnderTheLockLoseNoUpdate) {
  Mutex mu;
  // Not atomic: a lost update shows as a short count (and as a race under
  // TSan). Each hold is a few instructions, as a table update is, so the
  // threads meet in both the spinning and the sleeping paths.
  std::uint64_t count = 0;
  constexpr int kThreads = 4;
  constexpr int kEach = 200000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        MutexLock lock(&mu);
        count = count + 1;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  MutexLock lock(&mu);
  EXPECT_EQ(count, std::uint64_t{kThreads} * kEach);
}

TEST(MutexTest, AWaiterSleepsUntilTheHolderUnlocks) {
  Mutex mu;
  std::atomic<bool> released{false};
  std::atomic<bool> acquired{false};
  bool released_when_acquired = false;
  mu.Lock();
  std::thread waiter([&] {
    MutexLock lock(&mu);  // longer than the spin: goes to sleep
    released_when_acquired = released.load();
    acquired = true;
  });
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(acquired.load()) << "the lock was taken while held";
  released = true;
  mu.Unlock();
  waiter.join();  // hangs (test timeout) if Unlock did not wake it
  EXPECT_TRUE(acquired.load());
  EXPECT_TRUE(released_when_acquired);
  // And the lock is free again: a fresh Lock does not block.
  mu.Lock();
  mu.Unlock();
}

TEST(MutexTest, CondVarWaitsReleaseTheLockAndTimeOut) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread notifier([&] {
    std::this_thread::sleep_for(milliseconds(50));
    MutexLock lock(&mu);  // only possible while the waiter has released it
    ready = true;
    cv.NotifyAll();
  });
  {
    MutexLock lock(&mu);
    const auto deadline = steady_clock::now() + std::chrono::seconds(10);
    while (!ready && cv.WaitUntil(&mu, deadline)) {
    }
    EXPECT_TRUE(ready);
  }
  notifier.join();
  MutexLock lock(&mu);
  const auto start = steady_clock::now();
  EXPECT_FALSE(cv.WaitUntil(&mu, start + milliseconds(30)));  // nobody notifies
  EXPECT_GE(steady_clock::now() - start, milliseconds(30));
}

}  // namespace
}  // namespace leakprobe
