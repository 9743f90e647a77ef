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
static_assert(kStages <= 32, "one bit per stage");

// What this thread's Prepare did, per stage, for its parent/child handlers:
// a stage registered by another thread between the two (a component created
// meanwhile) must not be unlocked or handled as if it had been prepared.
// Per thread: two threads may fork at once. initial-exec: no allocation.
__thread std::uint32_t tls_locked __attribute__((tls_model("initial-exec"))) = 0;
__thread std::uint32_t tls_prepared __attribute__((tls_model("initial-exec"))) = 0;

void Prepare() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  detail::tls_hook_guard |= detail::kGuardForking;
  tls_locked = tls_prepared = 0;
  for (std::size_t i = 0; i < kStages; ++i) {
    if (Mutex* mu = g_slots[i].lock.load(std::memory_order_acquire)) {
      mu->Lock();
      tls_locked |= 1U << i;
    }
    if (auto* f = g_slots[i].prepare.load(std::memory_order_acquire)) {
      f();
      tls_prepared |= 1U << i;
    }
  }
}

template <std::atomic<void (*)()> Slot::*kMember>
void After() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (std::size_t i = kStages; i-- > 0;) {
    const Slot& slot = g_slots[i];
    // A stage's handler runs if its prepare ran here, or if it has none.
    const bool prepared = (tls_prepared >> i) & 1U;
    if (prepared || slot.prepare.load(std::memory_order_acquire) == nullptr) {
      if (auto* f = (slot.*kMember).load(std::memory_order_acquire)) f();
    }
    if ((tls_locked >> i) & 1U) slot.lock.load(std::memory_order_acquire)->Unlock();
  }
  tls_locked = tls_prepared = 0;
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
  // Once per stage: a fork in progress unlocks the lock it took.
  g_slots[static_cast<std::size_t>(stage)].lock.store(mu, std::memory_order_release);
  RegisterForkHandlers(stage, {});
}

const char* ForkStageName(ForkStage stage) noexcept {
  switch (stage) {
    case ForkStage::kExporter:
      return "exporter";
    case ForkStage::kRole:
      return "role";
    case ForkStage::kTrends:
      return "trends";
    case ForkStage::kReconciler:
      return "reconciler";
    case ForkStage::kFdSummary:
      return "fd-summary";
    case ForkStage::kSymbols:
      return "symbols";
    case ForkStage::kInterposer:
      return "interposer";
    case ForkStage::kObjects:
      return "objects";
    case ForkStage::kHeap:
      return "heap";
    case ForkStage::kNativeHeap:
      return "native-heap";
    case ForkStage::kStacks:
      return "stacks";
    case ForkStage::kFdOwners:
      return "fd-owners";
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
