// cpu_budget.h (private) — caps the CPU the exporter's server threads spend
// serving scrapes at a share of one CPU, so a storm of scrapers delays
// scrapes instead of taking the host's CPU.
//
//   CpuBudget budget(0.05, std::chrono::milliseconds(20));  // 5 % of a CPU
//   budget.Wait(std::chrono::seconds(2));          // before a render
//   budget.Charge(cpu_spent, Clock::now());        // after each scrape
//
// A token bucket over CPU time: it fills at `share` seconds of CPU per
// second of wall time up to `burst`, each scrape's CPU (measured by its
// server thread, the connection's handling included) is charged after it is
// served, and a render starts only once the balance is back to zero.
// Scrapes that arrive while the render waits join it (single-flight), so
// the wait costs them latency, not CPU, and their page is rendered after
// they arrived. At Prometheus' pace (one scrape every few seconds, ~0.1 ms
// of CPU each) the bucket is always full and nothing waits.
// Thread-safety: every member may be called from any thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "leakprobe/runtime/mutex.h"

namespace leakprobe::prometheus_exporter {

class CpuBudget {
 public:
  using Clock = std::chrono::steady_clock;

  // `share`: of one CPU, in (0, 1]; `burst`: the CPU time that may be spent
  // at once after a quiet spell (the bucket's size; it starts full).
  CpuBudget(double share, std::chrono::nanoseconds burst,
            Clock::time_point now = Clock::now())
      : share_(share),
        burst_ns_(static_cast<double>(burst.count())),
        balance_ns_(burst_ns_),
        last_(now) {}

  CpuBudget(const CpuBudget&) = delete;
  CpuBudget& operator=(const CpuBudget&) = delete;

  // Records `cpu` spent serving, at `now`.
  void Charge(std::chrono::nanoseconds cpu, Clock::time_point now) {
    MutexLock lock(&mu_);
    RefillLocked(now);
    balance_ns_ -= static_cast<double>(std::max<std::int64_t>(cpu.count(), 0));
    charged_ns_ += static_cast<std::uint64_t>(std::max<std::int64_t>(cpu.count(), 0));
  }

  // How long a render must wait at `now` for the balance to be back to zero.
  std::chrono::nanoseconds Delay(Clock::time_point now) {
    MutexLock lock(&mu_);
    RefillLocked(now);
    return DelayLocked();
  }

  // Waits until the balance is back to zero, at most `max_wait`, or until
  // Close(); returns the time waited.
  std::chrono::nanoseconds Wait(std::chrono::nanoseconds max_wait) {
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + max_wait;
    MutexLock lock(&mu_);
    while (!closed_) {
      const Clock::time_point now = Clock::now();
      RefillLocked(now);
      const std::chrono::nanoseconds delay = DelayLocked();
      if (delay.count() == 0 || now >= deadline) break;
      cv_.WaitUntil(&mu_, std::min(deadline, now + delay));
    }
    const auto waited =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
    waited_ns_ += static_cast<std::uint64_t>(waited.count());
    return waited;
  }

  // Ends every wait now and makes later ones return at once (shutdown).
  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    cv_.NotifyAll();
  }

  // CPU charged and time waited since the start, in nanoseconds.
  std::uint64_t charged_ns() const {
    MutexLock lock(&mu_);
    return charged_ns_;
  }
  std::uint64_t waited_ns() const {
    MutexLock lock(&mu_);
    return waited_ns_;
  }

 private:
  void RefillLocked(Clock::time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (now <= last_) return;
    const double elapsed_ns = static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count());
    balance_ns_ = std::min(burst_ns_, balance_ns_ + share_ * elapsed_ns);
    last_ = now;
  }

  std::chrono::nanoseconds DelayLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (balance_ns_ >= 0) return std::chrono::nanoseconds(0);
    // At least 1 ns, so a debt too small to round to a nanosecond still waits.
    return std::chrono::nanoseconds(
        std::max<std::int64_t>(1, static_cast<std::int64_t>(-balance_ns_ / share_)));
  }

  const double share_;
  const double burst_ns_;
  mutable Mutex mu_;
  CondVar cv_;  // signalled at Close()
  double balance_ns_ ABSL_GUARDED_BY(mu_);
  Clock::time_point last_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::uint64_t charged_ns_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t waited_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace leakprobe::prometheus_exporter
