// leakprobe/fd_stacks.h — the fd hooks' StackIdProvider: the calling
// thread's Python stack, captured and interned by StackTable::Instance(),
// so every fd record names the code that created it.
//
//   EnableFdStacks(32);   // SetFdStackIdProvider(&CaptureFdStack), depth 32
//   ...
//   DisableFdStacks();    // records carry kNoStackId again
//
// CaptureFdStack runs inside an fd hook, on any thread, with or without the
// GIL. Capture reads the thread's own frames (PyGILState_GetThisThreadState);
// a thread without Python frames gets kEmptyStack ("<native>"). Interning
// takes the StackTable lock, so the provider gives kEmptyStack at once,
// without touching the table, when that lock may not be taken:
//  - re-entry: this thread is already capturing or interning a stack (an fd
//    hook reached from the heap tracker's slow path, or from ourselves). The
//    guard is the heap tracker's per-thread `busy` flag, which both set;
//  - fork: on the forking thread between FdStacksPrepareFork() and
//    FdStacksAfterFork(); the extension's atfork handlers call these around
//    taking and releasing the StackTable lock, so that an fd created by
//    another library's atfork handler never waits for a lock its own thread
//    holds;
//  - exit: after FreezeFdStacks(), for good.
// Skipped captures are counted (FdStackSkips).
//
// Thread-safety: all functions may be called from any thread at any time.
#pragma once

#include <cstdint>

namespace leakprobe {

// Installs CaptureFdStack as the fd layer's provider, keeping up to
// `max_frames` frames (clamped to StackTable::kMaxDepth; 0 records no stack).
void EnableFdStacks(int max_frames) noexcept;
// Removes the provider.
void DisableFdStacks() noexcept;
// At interpreter exit: no more captures, whatever Enable is called later.
void FreezeFdStacks() noexcept;

// The provider (see above). noexcept; allocates only when interning a stack
// not seen before.
std::uint32_t CaptureFdStack() noexcept;

// Around fork(), on the forking thread (see above).
void FdStacksPrepareFork() noexcept;
void FdStacksAfterFork() noexcept;

// Captures skipped for re-entry, fork or exit since the process started.
std::uint64_t FdStackSkips() noexcept;

}  // namespace leakprobe
