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
// Thread-safety: it is a mutex.
#pragma once

#include <mutex>

#include "absl/base/thread_annotations.h"

namespace leakprobe {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
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

}  // namespace leakprobe
