// leakprobe/runtime/fork.h — the one fork protocol: every component that
// holds a lock a hook can take, or state a child must repair, registers its
// atfork handlers here, at its place in one documented lock order; the
// registry makes the only pthread_atfork registration of the core.
//
//   RegisterForkLock(ForkStage::kHeap, &mu_);     // a stage that is one lock
//   RegisterForkHandlers(ForkStage::kLog, {nullptr, nullptr, &ResetLog});
//
// Around fork(), on the forking thread:
//   prepare: the hook guard is set (leakprobe/runtime/guard.h), then every
//            stage's prepare runs in ForkStage order (outermost lock first);
//   parent / child: every stage's handler runs in the reverse order, then
//            the guard is cleared.
// Other libraries' atfork handlers run before or after ours (POSIX runs
// prepare handlers in reverse order of registration, the others in order)
// and may allocate, free or open fds: on the forking thread the guard makes
// our hooks pass those calls through, so they never wait for a lock that
// the forking thread itself holds, and the child never inherits a lock held
// by a thread that does not exist there.
//
// The lock order (a thread holding a lock of a stage may take the locks of
// later stages only) is the ForkStage order below; docs/architecture.md
// draws it.
//
// Thread-safety: Register may be called from any thread, once per stage
// (a second registration of a stage replaces the first; a lock registered
// with RegisterForkLock must not be replaced). A stage registered while
// another thread is forking takes no part in that fork: the parent/child
// handlers run for the stages whose prepare ran (and for those without a
// prepare), and unlock only the locks that prepare took. The handlers run
// on the forking thread; child handlers must be async-signal-safe in
// spirit: no locks, no allocation.
#pragma once

#include <cstddef>

#include "leakprobe/runtime/mutex.h"

namespace leakprobe {

enum class ForkStage : unsigned char {
  kExporter,    // the exporter slot (bindings): start/stop of the server
  kRole,        // the process role label (peers.h); scrapes take it, a leaf
  kTrends,      // the trend state (samples; verdicts); no hook takes it
  kReconciler,  // one fd reconcile pass at a time
  kFdSummary,   // the TCP state cache
  kSymbols,     // the native symboliser (cold path; it allocates and dlopens)
  kInterposer,  // GOT patching; the dlopen hooks take it
  kObjects,     // the tracked-object registry (created/closed, weakref callbacks)
  kHeap,        // the heap tracker's tables; the heap hooks take it
  kNativeHeap,  // the native heap's tables; the malloc hooks take it
  kStacks,      // the stack table; every hook that captures a stack takes it
  kFdOwners,    // the fd owner table (adapters intern owners; no hook takes it)
  kFdTable,     // no lock: the child frees slots half-written at the fork
  kFdHooks,     // no lock: the child learns its own pid
  kLog,         // no lock: the child gets a fresh logger
  kCount,
};

struct ForkHandlers {
  void (*prepare)() = nullptr;
  void (*parent)() = nullptr;
  void (*child)() = nullptr;
};

// Registers the handlers of `stage` (the first call also registers the
// registry itself with pthread_atfork).
void RegisterForkHandlers(ForkStage stage, ForkHandlers handlers) noexcept;
// For a stage whose whole part is one lock: prepare locks `mu`, the parent
// and the child unlock it. `mu` must live as long as the process.
void RegisterForkLock(ForkStage stage, Mutex* mu) noexcept;

// The name of a stage ("heap", ...), for docs and tests.
const char* ForkStageName(ForkStage stage) noexcept;

// Forks seen by the registry in this process (and its ancestors before the
// fork): for tests.
std::size_t ForksSeen() noexcept;

}  // namespace leakprobe
