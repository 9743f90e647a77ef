#include "leakprobe/heap/arena_stats.h"

#include <atomic>

namespace leakprobe {
namespace {
std::atomic<std::int64_t> g_arena_bytes{0};
std::atomic<bool> g_known{false};
}  // namespace

void AddArenaBytes(std::int64_t delta) noexcept {
  g_arena_bytes.fetch_add(delta, std::memory_order_relaxed);
}

std::uint64_t ArenaBytes() noexcept {
  const std::int64_t bytes = g_arena_bytes.load(std::memory_order_relaxed);
  return bytes > 0 ? static_cast<std::uint64_t>(bytes) : 0;
}

bool ArenaBytesKnown() noexcept { return g_known.load(std::memory_order_relaxed); }
void SetArenaBytesKnown() noexcept { g_known.store(true, std::memory_order_relaxed); }

}  // namespace leakprobe
