// leakprobe/runtime/mutex.h — the lock of the tables that hooks update (heap
// tracker, stack table): a plain pthread mutex with abseil's thread-safety
// annotations, so clang's -Wthread-safety checks its users.
//
//   Mutex mu;
//   int value ABSL_GUARDED_BY(mu);
//   { MutexLock lock(&mu); ++value; }
//
// Why not absl::Mutex: Debian's abseil is a prebuilt library that
// ThreadSanitizer cannot see into, so a TSan build could not check these
// tables; a pthread mutex is intercepted by TSan. Locked only on sampled
// (rare) events, so its simplicity costs nothing.
// CondVar waits on a Mutex (the exporter's single-flight scrapes):
//   while (!ready) cv.WaitUntil(&mu, deadline);  // mu held
// Thread-safety: it is a mutex.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace leakprobe {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
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
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool woken = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();  // still held: the caller's MutexLock unlocks it
    return woken;
  }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace leakprobe
