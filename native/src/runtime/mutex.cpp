// The waiting half of leakprobe::Mutex (see leakprobe/runtime/mutex.h): the
// lock as in Drepper's "Futexes Are Tricky" (mutex 3), on std::atomic's
// wait/notify, which are the futex system calls on Linux.
#include "leakprobe/runtime/mutex.h"

namespace leakprobe {

void Mutex::LockSlow() noexcept {
  // A holder keeps the lock for a table update: spin for about that long
  // before asking the kernel to put this thread to sleep.
  for (int spin = 0; spin < 64; ++spin) {
    int expected = kFree;
    if (state_.load(std::memory_order_relaxed) == kFree &&
        state_.compare_exchange_weak(expected, kLocked, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  // From here on the lock is marked kContended, so that the Unlock that
  // frees it wakes a sleeper; holding it as kContended (rather than
  // kLocked) costs one spurious wake at worst.
  while (state_.exchange(kContended, std::memory_order_acquire) != kFree) {
    state_.wait(kContended, std::memory_order_relaxed);
  }
}

}  // namespace leakprobe
