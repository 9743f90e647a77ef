#include "heap_hooks.h"

#include <Python.h>

#include "leakprobe/heap_tracker.h"

namespace leakprobe {
namespace {

struct Domain {
  PyMemAllocatorDomain domain;
  PyMemAllocatorEx original;  // what was installed before us
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
template <bool kOuter>
struct Hooks {
  static bool Skip() noexcept { return !kOuter && detail::tls_sampler.nesting != 0; }
  struct Scope {  // marks the thread while an outer hook calls down
    Scope() noexcept {
      if (kOuter) ++detail::tls_sampler.nesting;
    }
    ~Scope() {
      if (kOuter) --detail::tls_sampler.nesting;
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
  };

  static void* Malloc(void* ctx, size_t size) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.malloc(d->original.ctx, size);
    void* p;
    {
      Scope scope;
      p = d->original.malloc(d->original.ctx, size);
    }
    g_tracker->OnAlloc(p, size);
    return p;
  }

  static void* Calloc(void* ctx, size_t count, size_t size) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.calloc(d->original.ctx, count, size);
    void* p;
    {
      Scope scope;
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
      Scope scope;
      p = d->original.realloc(d->original.ctx, old, size);
    }
    g_tracker->OnAlloc(p, size);
    return p;
  }

  static void Free(void* ctx, void* p) {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (!Skip()) g_tracker->OnFree(p);
    Scope scope;
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
