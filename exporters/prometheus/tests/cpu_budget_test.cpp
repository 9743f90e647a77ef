#include "../src/cpu_budget.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace leakprobe::prometheus_exporter {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using Clock = CpuBudget::Clock;

TEST(CpuBudgetTest, SpendingWithinTheBurstNeverWaits) {
  const Clock::time_point t0 = Clock::now();
  CpuBudget budget(0.05, milliseconds(20), t0);
  budget.Charge(milliseconds(19), t0);
  EXPECT_EQ(budget.Delay(t0), nanoseconds(0));
  EXPECT_EQ(budget.charged_ns(), 19'000'000U);
}

TEST(CpuBudgetTest, ADebtWaitsUntilTheShareHasRepaidIt) {
  const Clock::time_point t0 = Clock::now();
  CpuBudget budget(0.05, milliseconds(20), t0);
  budget.Charge(milliseconds(30), t0);  // 10 ms past the burst
  // 10 ms of CPU at 5 % of a CPU: 200 ms of wall time.
  EXPECT_EQ(budget.Delay(t0), milliseconds(200));
  EXPECT_EQ(budget.Delay(t0 + milliseconds(150)), milliseconds(50));
  EXPECT_EQ(budget.Delay(t0 + milliseconds(200)), nanoseconds(0));
}

TEST(CpuBudgetTest, AQuietSpellRefillsNoMoreThanTheBurst) {
  const Clock::time_point t0 = Clock::now();
  CpuBudget budget(0.05, milliseconds(20), t0);
  const Clock::time_point later = t0 + std::chrono::hours(1);  // 180 s of CPU earned
  budget.Charge(milliseconds(20), later);
  EXPECT_EQ(budget.Delay(later), nanoseconds(0));
  budget.Charge(milliseconds(1), later);  // the bucket held 20 ms, not 180 s
  EXPECT_EQ(budget.Delay(later), milliseconds(20));
}

TEST(CpuBudgetTest, ChargesAddUpAcrossCallers) {
  const Clock::time_point t0 = Clock::now();
  CpuBudget budget(0.1, milliseconds(0), t0);
  for (int i = 0; i < 10; ++i) budget.Charge(milliseconds(1), t0);
  EXPECT_EQ(budget.Delay(t0), milliseconds(100));
  budget.Charge(nanoseconds(-5), t0);  // a clock that went back charges nothing
  EXPECT_EQ(budget.Delay(t0), milliseconds(100));
  EXPECT_EQ(budget.charged_ns(), 10'000'000U);
}

TEST(CpuBudgetTest, WaitSleepsOffTheDebtAndIsBoundedByItsMaximum) {
  CpuBudget budget(0.5, milliseconds(0));
  budget.Charge(milliseconds(25), Clock::now());  // 50 ms of wall time at 50 %
  const nanoseconds waited = budget.Wait(seconds(5));
  EXPECT_GE(waited, milliseconds(45));
  EXPECT_LT(waited, seconds(3));
  EXPECT_EQ(budget.Delay(Clock::now()), nanoseconds(0));
  EXPECT_GE(budget.waited_ns(), 45'000'000U);

  budget.Charge(seconds(100), Clock::now());  // 200 s owed
  const nanoseconds bounded = budget.Wait(milliseconds(50));
  EXPECT_GE(bounded, milliseconds(50));
  EXPECT_LT(bounded, seconds(3));
}

TEST(CpuBudgetTest, CloseEndsAWaitAtOnceAndLaterWaitsDoNotWait) {
  CpuBudget budget(0.001, milliseconds(0));
  budget.Charge(seconds(1), Clock::now());  // 1000 s owed
  nanoseconds waited{0};
  std::thread waiter([&] { waited = budget.Wait(seconds(30)); });
  std::this_thread::sleep_for(milliseconds(50));
  budget.Close();
  waiter.join();
  EXPECT_LT(waited, seconds(10));
  EXPECT_LT(budget.Wait(seconds(30)), seconds(1));
}

}  // namespace
}  // namespace leakprobe::prometheus_exporter
