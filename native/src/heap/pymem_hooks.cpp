#include "leakprobe/heap/pymem_hooks.h"

#include <Python.h>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "leakprobe/heap/heap_tracker.h"

namespace leakprobe {
namespace {

struct Domain {
  PyMemAllocatorDomain domain = PYMEM_DOMAIN_RAW;
  PyMemAllocatorEx original{};  // what was installed before us
};

constexpr PyMemAllocatorDomain kDomains[] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM,
                                             PYMEM_DOMAIN_OBJ};
HeapTracker* g_tracker = nullptr;
bool g_installed = false;

// The original call first; then the tracker's countdown. A free is
// forgotten before the real free, so that an address reused at once by
// another thread can never meet its predecessor's record.
//
// Nesting: pymalloc serves large MEM/OBJ requests from the RAW domain, so
// one allocation can pass through two of our hooks. The outer (MEM/OBJ)
// hook marks the thread while it calls down; the RAW hook then only
// forwards, and each block is counted once, at the level the caller used.
// Outer = the MEM and OBJ domains; RAW is never outer.
//
// The mark costs two thread-local writes per call, on the hottest path
// there is, so it is set only where a call can reach RAW:
//  - malloc/calloc of more than kNestingBytes. pymalloc serves requests of
//    up to 512 bytes from its pools and never calls RAW for them (except
//    to grow its array of arenas, a rare and real allocation). The margin
//    below 512 covers the debug hooks (PYTHONMALLOC=debug, -X dev), which
//    add their own bytes before pymalloc sees the request.
//  - every realloc: a RAW-served block stays RAW-served at any new size.
//  - never on free. A large block freed through MEM/OBJ then also passes
//    through the RAW hook's OnFree: a second probe for an address that was
//    forgotten a moment ago, and not yet freed, so it finds nothing.
constexpr std::size_t kNestingBytes = 256;

template <bool kOuter>
struct Hooks {
  static bool Skip() noexcept { return !kOuter && detail::tls_sampler.nesting != 0; }
  struct Scope {  // marks the thread while an outer hook calls down
    explicit Scope(bool mark) noexcept : mark_(kOuter && mark) {
      if (mark_) ++detail::tls_sampler.nesting;
    }
    ~Scope() {
      if (mark_) --detail::tls_sampler.nesting;
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const bool mark_;
  };

  // The fast path is the countdown and a tail call to the real allocator:
  // no stack frame, no work after the call. Only a request that may reach
  // RAW (marked) or that crosses a sample point takes MallocSlow.
  // Malloc and Free are deliberately not noexcept: a noexcept function must
  // be ready to terminate around its call to the real (C) allocator, which
  // rules the tail call out. Nothing on their fast paths can throw, and the
  // slow halves they call are noexcept.
  static void* Malloc(void* ctx, size_t size) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.malloc(d->original.ctx, size);
    const bool crossed = HeapTracker::CountdownCrossed(size);
    if (ABSL_PREDICT_TRUE(!crossed && (!kOuter || size <= kNestingBytes))) {
      return d->original.malloc(d->original.ctx, size);
    }
    return MallocSlow(d, size, crossed);
  }
  ABSL_ATTRIBUTE_NOINLINE static void* MallocSlow(const Domain* d, size_t size,
                                                  bool crossed) noexcept {
    void* p;
    {
      Scope scope(size > kNestingBytes);
      p = d->original.malloc(d->original.ctx, size);
    }
    if (crossed) g_tracker->OnCrossedAlloc(p, size);
    return p;
  }

  static void* Calloc(void* ctx, size_t count, size_t size) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.calloc(d->original.ctx, count, size);
    void* p;
    {
      Scope scope(count * size > kNestingBytes);
      p = d->original.calloc(d->original.ctx, count, size);
    }
    g_tracker->OnAlloc(p, count * size);  // the allocator checked for overflow
    return p;
  }

  static void* Realloc(void* ctx, void* old, size_t size) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.realloc(d->original.ctx, old, size);
    g_tracker->OnFree(old);  // a failed realloc leaves `old` untracked, not wrong
    void* p;
    {
      Scope scope(true);
      p = d->original.realloc(d->original.ctx, old, size);
    }
    g_tracker->OnAlloc(p, size);
    return p;
  }

  // The fast path is one probe of the sampled-address filter and a tail
  // call to the real free.
  static void Free(void* ctx, void* p) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (ABSL_PREDICT_FALSE(!Skip() && g_tracker->MaybeSampled(p))) {
      FreeSampled(d, p);
      return;
    }
    d->original.free(d->original.ctx, p);
  }
  ABSL_ATTRIBUTE_NOINLINE static void FreeSampled(const Domain* d, void* p) noexcept {
    g_tracker->OnMaybeSampledFree(p);
    d->original.free(d->original.ctx, p);
  }
};

bool IsOurs(const PyMemAllocatorEx& allocator) {
  return allocator.malloc == &Hooks<true>::Malloc ||
         allocator.malloc == &Hooks<false>::Malloc;
}

void Install() {
  g_tracker = &HeapTracker::Instance();
  for (PyMemAllocatorDomain domain : kDomains) {
    PyMemAllocatorEx current;
    PyMem_GetAllocator(domain, &current);
    if (IsOurs(current)) continue;  // ours already: never wrap ourselves
    // A fresh Domain each time, never freed: a thread still inside an older
    // hook keeps reading a consistent (function, context) pair.
    auto* d = new Domain{domain, current};
    PyMemAllocatorEx hooks =
        domain == PYMEM_DOMAIN_RAW
            ? PyMemAllocatorEx{d, Hooks<false>::Malloc, Hooks<false>::Calloc,
                               Hooks<false>::Realloc, Hooks<false>::Free}
            : PyMemAllocatorEx{d, Hooks<true>::Malloc, Hooks<true>::Calloc,
                               Hooks<true>::Realloc, Hooks<true>::Free};
    PyMem_SetAllocator(domain, &hooks);
  }
  g_installed = true;
}

}  // namespace

void InstallHeapHooks() {
  if (!g_installed) Install();
}

void ReinstallHeapHooks() { Install(); }

}  // namespace leakprobe
