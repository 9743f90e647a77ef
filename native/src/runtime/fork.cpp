#include "leakprobe/runtime/fork.h"

#include <pthread.h>

#include <array>
#include <atomic>

#include "leakprobe/runtime/guard.h"

namespace leakprobe {
namespace {

constexpr std::size_t kStages = static_cast<std::size_t>(ForkStage::kCount);

struct Slot {
  std::atomic<Mutex*> lock{nullptr};  // RegisterForkLock's
  std::atomic<void (*)()> prepare{nullptr};
  std::atomic<void (*)()> parent{nullptr};
  std::atomic<void (*)()> child{nullptr};
};

std::array<Slot, kStages> g_slots;
std::atomic<std::size_t> g_forks{0};

void Prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  detail::tls_hook_guard |= detail::kGuardForking;
  for (Slot& slot : g_slots) {
    if (Mutex* mu = slot.lock.load(std::memory_order_acquire)) mu->Lock();
    if (auto* f = slot.prepare.load(std::memory_order_acquire)) f();
  }
}

template <std::atomic<void (*)()> Slot::*kMember>
void After() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (std::size_t i = kStages; i-- > 0;) {
    if (auto* f = (g_slots[i].*kMember).load(std::memory_order_acquire)) f();
    if (Mutex* mu = g_slots[i].lock.load(std::memory_order_acquire)) mu->Unlock();
  }
  g_forks.fetch_add(1, std::memory_order_relaxed);
  detail::tls_hook_guard &= ~detail::kGuardForking;
}

}  // namespace

void RegisterForkHandlers(ForkStage stage, ForkHandlers handlers) noexcept {
  static std::atomic<bool> registered{false};
  Slot& slot = g_slots[static_cast<std::size_t>(stage)];
  slot.prepare.store(handlers.prepare, std::memory_order_release);
  slot.parent.store(handlers.parent, std::memory_order_release);
  slot.child.store(handlers.child, std::memory_order_release);
  // The only pthread_atfork of the core.
  if (!registered.exchange(true)) {
    pthread_atfork(&Prepare, &After<&Slot::parent>, &After<&Slot::child>);
  }
}

void RegisterForkLock(ForkStage stage, Mutex* mu) noexcept {
  g_slots[static_cast<std::size_t>(stage)].lock.store(mu, std::memory_order_release);
  RegisterForkHandlers(stage, {});
}

const char* ForkStageName(ForkStage stage) noexcept {
  switch (stage) {
    case ForkStage::kExporter:
      return "exporter";
    case ForkStage::kReconciler:
      return "reconciler";
    case ForkStage::kFdSummary:
      return "fd-summary";
    case ForkStage::kInterposer:
      return "interposer";
    case ForkStage::kHeap:
      return "heap";
    case ForkStage::kStacks:
      return "stacks";
    case ForkStage::kFdTable:
      return "fd-table";
    case ForkStage::kFdHooks:
      return "fd-hooks";
    case ForkStage::kLog:
      return "log";
    case ForkStage::kCount:
      break;
  }
  return "?";
}

std::size_t ForksSeen() noexcept { return g_forks.load(std::memory_order_relaxed); }

}  // namespace leakprobe
