// The fd hooks' stack provider (see leakprobe/fd/fd_stacks.h).
#include "leakprobe/fd/fd_stacks.h"

#include <algorithm>
#include <atomic>

#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {
namespace {

std::atomic<int> g_max_frames{0};
std::atomic<bool> g_frozen{false};
std::atomic<std::uint64_t> g_skips{0};

}  // namespace

void EnableFdStacks(int max_frames) noexcept {
  g_max_frames.store(
      std::clamp<int>(max_frames, 0, static_cast<int>(StackTable::kMaxDepth)),
      std::memory_order_relaxed);
  SetFdStackIdProvider(&CaptureFdStack);
}

void DisableFdStacks() noexcept { SetFdStackIdProvider(nullptr); }

void FreezeFdStacks() noexcept { g_frozen.store(true, std::memory_order_relaxed); }

std::uint32_t CaptureFdStack() noexcept {
  // Runs inside an fd hook that entered the hook guard: no other hook of
  // this thread records meanwhile, and no tracker lock is held here.
  if (g_frozen.load(std::memory_order_relaxed)) {
    g_skips.fetch_add(1, std::memory_order_relaxed);
    return kEmptyStack;
  }
  const int max_frames = g_max_frames.load(std::memory_order_relaxed);
  if (max_frames <= 0) return kEmptyStack;
  StackId id = kEmptyStack;
  try {
    id = StackTable::Instance().CaptureAndIntern(max_frames);
  } catch (...) {  // out of memory while interning
    id = kOverflowStack;
  }
  return id;
}

std::uint64_t FdStackSkips() noexcept { return g_skips.load(std::memory_order_relaxed); }

}  // namespace leakprobe
