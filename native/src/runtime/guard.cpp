#include "leakprobe/runtime/guard.h"

#include <array>
#include <atomic>
#include <cstddef>

namespace leakprobe {
namespace detail {

__thread std::uint32_t tls_hook_guard __attribute__((tls_model("initial-exec"))) = 0;
__thread bool tls_own_thread __attribute__((tls_model("initial-exec"))) = false;

namespace {
std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(GuardedHook::kCount)>
    g_passes{};
}  // namespace

void CountGuardedPass(GuardedHook hook) noexcept {
  g_passes[static_cast<std::size_t>(hook)].fetch_add(1, std::memory_order_relaxed);
}

}  // namespace detail

std::uint64_t GuardedPasses(GuardedHook hook) noexcept {
  return detail::g_passes[static_cast<std::size_t>(hook)].load(std::memory_order_relaxed);
}

HookPasses ReadHookPasses() noexcept {
  HookPasses out;
  for (std::size_t i = 0; i < kGuardedHookCount; ++i) {
    out.passes[i] = detail::g_passes[i].load(std::memory_order_relaxed);
  }
  return out;
}

const char* GuardedHookName(GuardedHook hook) noexcept {
  switch (hook) {
    case GuardedHook::kHeapAlloc:
      return "heap_alloc";
    case GuardedHook::kHeapFree:
      return "heap_free";
    case GuardedHook::kFd:
      return "fd";
    case GuardedHook::kNativeAlloc:
      return "native_alloc";
    case GuardedHook::kNativeFree:
      return "native_free";
    case GuardedHook::kCount:
      break;
  }
  return "?";
}

}  // namespace leakprobe
