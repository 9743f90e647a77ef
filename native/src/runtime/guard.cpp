#include "leakprobe/runtime/guard.h"

#include <array>
#include <atomic>
#include <cstddef>

namespace leakprobe {
namespace detail {

__thread std::uint32_t tls_hook_guard __attribute__((tls_model("initial-exec"))) = 0;

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

}  // namespace leakprobe
