// leakprobe/runtime/mutex.h — the lock of the tables that hooks update (heap
// tracker, stack table, object registry, fd owners): a small futex mutex
// (std::atomic's wait/notify) with abseil's thread-safety annotations, so
// clang's -Wthread-safety checks its users.
//
//   Mutex mu;
//   int value ABSL_GUARDED_BY(mu);
//   { MutexLock lock(&mu); ++value; }
//
// Why not std::mutex: the object registry takes its lock on every tracked
// creation and close, and pthread_mutex_lock/unlock cost ~60 instructions a
// pair there (a library call that checks the mutex's kind each time); this
// one is one compare-and-swap to lock and one exchange to unlock, inline,
// and a system call only when a thread has to wait.
// Why not absl::Mutex: Debian's abseil is a prebuilt library that
// ThreadSanitizer cannot see into, so a TSan build could not check these
// tables; this one is std::atomic operations (acquire on lock, release on
// unlock), which TSan sees.
// CondVar waits on a Mutex (the exporter's single-flight scrapes):
//   while (!ready) cv.WaitUntil(&mu, deadline);  // mu held
// Thread-safety: it is a mutex. Not recursive; not fair.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"

namespace leakprobe {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    int expected = kFree;
    if (ABSL_PREDICT_TRUE(state_.compare_exchange_strong(
            expected, kLocked, std::memory_order_acquire, std::memory_order_relaxed))) {
      return;
    }
    LockSlow();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    if (ABSL_PREDICT_FALSE(state_.exchange(kFree, std::memory_order_release) ==
                           kContended)) {
      state_.notify_one();
    }
  }
  // std::condition_variable_any's lockable interface (CondVar).
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { Lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { Unlock(); }

 private:
  static constexpr int kFree = 0;
  static constexpr int kLocked = 1;     // held, nobody waits
  static constexpr int kContended = 2;  // held, and a thread may wait
  // Spins briefly (a holder keeps it for a few hundred instructions), then
  // sleeps in the kernel until an Unlock that saw kContended wakes it.
  void LockSlow() noexcept;

  std::atomic<int> state_{kFree};
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Releases `mu` until notified, spuriously woken or `deadline` passes,
  // then holds it again. False when the deadline passed.
  bool WaitUntil(Mutex* mu, std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return cv_.wait_until(*mu, deadline) == std::cv_status::no_timeout;
  }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

}  // namespace leakprobe
