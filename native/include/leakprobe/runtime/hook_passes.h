// leakprobe/runtime/hook_passes.h — the hook guard's figures as plain values,
// for the snapshot: how many calls each kind of hook passed through
// untracked because it found the guard set (re-entry, fork, a tracker lock
// held on its thread; see leakprobe/runtime/guard.h, which counts them).
//
//   const HookPasses passes = ReadHookPasses();
//   passes.of(GuardedHook::kHeapAlloc);   // since the process started
//
// Thread-safety: ReadHookPasses reads relaxed atomics; HookPasses is a value.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace leakprobe {

// Who passed a call through: the figure is kept per kind of hook.
enum class GuardedHook : std::uint8_t {
  kHeapAlloc,
  kHeapFree,
  kFd,
  kNativeAlloc,  // malloc family and anonymous mmap (leakprobe/malloc/)
  kNativeFree,   // free and munmap
  kCount
};

inline constexpr std::size_t kGuardedHookCount =
    static_cast<std::size_t>(GuardedHook::kCount);

// The label of a kind in metrics: "heap_alloc", "heap_free", "fd",
// "native_alloc", "native_free".
const char* GuardedHookName(GuardedHook hook) noexcept;

struct HookPasses {
  std::array<std::uint64_t, kGuardedHookCount> passes{};

  std::uint64_t of(GuardedHook hook) const noexcept {
    return passes[static_cast<std::size_t>(hook)];
  }
};

// Every kind's passes now.
HookPasses ReadHookPasses() noexcept;

}  // namespace leakprobe
