// leakprobe/runtime/guard.h — the one per-thread hook guard. Every hook
// (PEP 445 heap hooks, fd hooks, and later malloc and object hooks) asks it
// whether it may record on this thread, and every holder of a lock that a
// hook can take tells it so. A hook that finds it set passes the call
// through untracked and counts the pass (GuardedPasses).
//
//   void* Hook(...) noexcept {
//     const HookGuard guard(GuardedHook::kHeap);
//     if (!guard.entered()) return Real(...);   // passed through, counted
//     ...record...
//   }
//   { TrackerLock lock(&mu_); ... }              // cold path: hooks pass
//
// The guard is set on a thread while
//  - a hook of ours records on it (re-entry: the hook's own allocations,
//    Python calls and libc calls reach other hooks);
//  - it runs fork(), from the fork protocol's first prepare handler to its
//    parent/child handler (leakprobe/runtime/fork.h): every tracker lock is
//    then held by this thread, and other libraries' atfork handlers may
//    allocate or open fds;
//  - it holds a tracker lock (TrackerLock), on the hot or the cold path.
//
// The pass counts are also in the snapshot (leakprobe/runtime/hook_passes.h)
// and exported as leakprobe_hook_passes_total{hook}.
//
// Cost on the hot path: one initial-exec TLS load and a compare.
// Thread-safety: per thread; the pass counters are relaxed atomics.
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "leakprobe/runtime/hook_passes.h"
#include "leakprobe/runtime/mutex.h"

namespace leakprobe {

namespace detail {

inline constexpr std::uint32_t kGuardInHook = 1U;         // a hook records
inline constexpr std::uint32_t kGuardForking = 1U << 1;   // inside fork()
inline constexpr std::uint32_t kGuardLockUnit = 1U << 8;  // per tracker lock held

// __thread with initial-exec: a plain %fs-relative access, no TLS wrapper
// call, no allocation on a thread's first use (see heap_tracker.h).
extern __thread std::uint32_t tls_hook_guard __attribute__((tls_model("initial-exec")));

void CountGuardedPass(GuardedHook hook) noexcept;

extern __thread bool tls_own_thread __attribute__((tls_model("initial-exec")));

}  // namespace detail

// leakprobe's own threads (the sampler, the exporter's server threads, the
// group's socket thread) mark themselves: what they allocate is the
// profiler's own memory (bounded and reported apart), not the
// application's, so the heaps' sampled paths drop their samples (counted
// as own_thread_samples). Only sampled paths ask, so it costs nothing on
// the hot path; frees are still followed (a block an application thread
// allocated may be freed on one of ours), and fd hooks still record.
inline void MarkOwnThread() noexcept { detail::tls_own_thread = true; }
inline bool OnOwnThread() noexcept { return detail::tls_own_thread; }

// True when a hook on this thread must pass its call through.
inline bool HookGuardSet() noexcept { return detail::tls_hook_guard != 0; }

// Calls passed through by `hook` since the process started.
std::uint64_t GuardedPasses(GuardedHook hook) noexcept;

// One hook's recording scope. entered() is false when the guard was set:
// the pass is counted and the hook must not record.
class HookGuard {
 public:
  explicit HookGuard(GuardedHook hook) noexcept : entered_(detail::tls_hook_guard == 0) {
    if (entered_) {
      detail::tls_hook_guard = detail::kGuardInHook;
    } else {
      detail::CountGuardedPass(hook);
    }
  }
  ~HookGuard() {
    if (entered_) detail::tls_hook_guard &= ~detail::kGuardInHook;
  }
  HookGuard(const HookGuard&) = delete;
  HookGuard& operator=(const HookGuard&) = delete;

  bool entered() const noexcept { return entered_; }

 private:
  const bool entered_;
};

// A lock that some hook takes (the heap tracker's, the stack table's, the
// interposer's). While this thread holds it, hooks on this thread pass
// through: they could otherwise wait for the lock their own thread holds.
class ABSL_SCOPED_LOCKABLE TrackerLock {
 public:
  explicit TrackerLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    detail::tls_hook_guard += detail::kGuardLockUnit;
    mu_->Lock();
  }
  ~TrackerLock() ABSL_UNLOCK_FUNCTION() {
    mu_->Unlock();
    detail::tls_hook_guard -= detail::kGuardLockUnit;
  }
  TrackerLock(const TrackerLock&) = delete;
  TrackerLock& operator=(const TrackerLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace leakprobe
