// The fd hooks' stack provider (see leakprobe/fd_stacks.h).
#include "leakprobe/fd_stacks.h"

#include <algorithm>
#include <atomic>

#include "leakprobe/fd_events.h"
#include "leakprobe/heap_tracker.h"
#include "leakprobe/stack_table.h"

namespace leakprobe {
namespace {

std::atomic<int> g_max_frames{0};
std::atomic<bool> g_frozen{false};
std::atomic<std::uint64_t> g_skips{0};

// Set on the forking thread only (the child's copy of that thread too).
__thread bool t_forking __attribute__((tls_model("initial-exec"))) = false;

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
  detail::ThreadSampler& t = detail::tls_sampler;
  if (t.busy || t_forking || g_frozen.load(std::memory_order_relaxed)) {
    g_skips.fetch_add(1, std::memory_order_relaxed);
    return kEmptyStack;
  }
  const int max_frames = g_max_frames.load(std::memory_order_relaxed);
  if (max_frames <= 0) return kEmptyStack;
  t.busy = true;  // before anything that may allocate or lock
  StackId id = kEmptyStack;
  try {
    LeakprobeRawFrame frames[StackTable::kMaxDepth];
    StackTable& table = StackTable::Instance();
    id = table.Intern(frames, table.Capture(frames, max_frames));
  } catch (...) {  // out of memory while interning
    id = kOverflowStack;
  }
  t.busy = false;
  return id;
}

void FdStacksPrepareFork() noexcept { t_forking = true; }
void FdStacksAfterFork() noexcept { t_forking = false; }

std::uint64_t FdStackSkips() noexcept { return g_skips.load(std::memory_order_relaxed); }

}  // namespace leakprobe
