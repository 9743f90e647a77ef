// leakprobe/fd/fd_stacks.h — the fd hooks' StackIdProvider: the calling
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
// takes the StackTable lock. The provider is only called by an fd hook
// that entered the runtime's hook guard (leakprobe/runtime/guard.h): on a
// thread that is already in a hook, is forking, or holds a tracker lock
// such as the StackTable's, the fd hook passes its call through before
// any capture, so the provider never waits for a lock its own thread holds.
// After FreezeFdStacks() (exit) it gives kEmptyStack for good; those skips
// are counted (FdStackSkips).
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

// Captures skipped after FreezeFdStacks.
std::uint64_t FdStackSkips() noexcept;

}  // namespace leakprobe
