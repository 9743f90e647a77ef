#include "leakprobe/heap/pymem_hooks.h"

#include <Python.h>

#include <atomic>
#include <cstddef>
#include <iterator>
#include <vector>

#include "leakprobe/heap/heap_tracker.h"

namespace leakprobe {
namespace {

struct Domain {
  PyMemAllocatorDomain domain = PYMEM_DOMAIN_RAW;
  PyMemAllocatorEx original{};  // what was installed before us
  // Another tool's hooks were installed on top of these, and ours again on
  // top of theirs (Restack): these only forward allocations, so that each
  // block is counted once, by the hooks the application calls, and the
  // other tool's own bookkeeping (tracemalloc's trace records, allocated
  // through the allocator it found) is not counted as the application's.
  // Frees are still honoured: a block sampled here before may be freed
  // through the chain.
  std::atomic<bool> forward_only{false};
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

// Every hook is noexcept: an exception cannot cross the C allocator, and
// nothing it reaches throws (out of memory on the sampled path drops the
// sample and counts it; see HeapTracker).
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

  static void* Malloc(void* ctx, size_t size) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip() || d->forward_only.load(std::memory_order_relaxed)) {
      return d->original.malloc(d->original.ctx, size);
    }
    void* p;
    {
      Scope scope(size > kNestingBytes);
      p = d->original.malloc(d->original.ctx, size);
    }
    g_tracker->OnAlloc(p, size);
    return p;
  }

  static void* Calloc(void* ctx, size_t count, size_t size) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip() || d->forward_only.load(std::memory_order_relaxed)) {
      return d->original.calloc(d->original.ctx, count, size);
    }
    void* p;
    {
      Scope scope(count * size > kNestingBytes);
      p = d->original.calloc(d->original.ctx, count, size);
    }
    g_tracker->OnAlloc(p, count * size);  // the allocator checked for overflow
    return p;
  }

  static void* Realloc(void* ctx, void* old, size_t size) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.realloc(d->original.ctx, old, size);
    g_tracker->OnFree(old);
    if (d->forward_only.load(std::memory_order_relaxed)) {
      return d->original.realloc(d->original.ctx, old, size);
    }  // a failed realloc leaves `old` untracked, not wrong
    void* p;
    {
      Scope scope(true);
      p = d->original.realloc(d->original.ctx, old, size);
    }
    g_tracker->OnAlloc(p, size);
    return p;
  }

  static void Free(void* ctx, void* p) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (!Skip()) g_tracker->OnFree(p);
    d->original.free(d->original.ctx, p);
  }
};

bool IsOurs(const PyMemAllocatorEx& allocator) {
  return allocator.malloc == &Hooks<true>::Malloc ||
         allocator.malloc == &Hooks<false>::Malloc;
}

// Every Domain we ever installed, per domain (never freed: another tool
// may keep a copy of its allocator and call it later). Under the GIL.
std::vector<Domain*>& Installed(PyMemAllocatorDomain domain) {
  static auto* const installed = new std::vector<Domain*>[std::size(kDomains)];
  return installed[static_cast<std::size_t>(domain)];
}

// Makes `top` the only recording Domain of its domain.
void RecordOnlyThrough(const Domain* top) {
  for (Domain* d : Installed(top->domain)) {
    d->forward_only.store(d != top, std::memory_order_relaxed);
  }
}

int Restack() {
  g_tracker = &HeapTracker::Instance();
  int installed = 0;
  for (PyMemAllocatorDomain domain : kDomains) {
    PyMemAllocatorEx current;
    PyMem_GetAllocator(domain, &current);
    if (IsOurs(current)) {  // on top: ours records, the others forward
      RecordOnlyThrough(static_cast<const Domain*>(current.ctx));
      continue;
    }
    // A fresh Domain each time, never freed: a thread still inside an older
    // hook keeps reading a consistent (function, context) pair.
    auto* d = new Domain{domain, current};
    Installed(domain).push_back(d);
    RecordOnlyThrough(d);
    PyMemAllocatorEx hooks =
        domain == PYMEM_DOMAIN_RAW
            ? PyMemAllocatorEx{d, Hooks<false>::Malloc, Hooks<false>::Calloc,
                               Hooks<false>::Realloc, Hooks<false>::Free}
            : PyMemAllocatorEx{d, Hooks<true>::Malloc, Hooks<true>::Calloc,
                               Hooks<true>::Realloc, Hooks<true>::Free};
    PyMem_SetAllocator(domain, &hooks);
    ++installed;
  }
  g_installed = true;
  return installed;
}

}  // namespace

void InstallHeapHooks() {
  if (!g_installed) Restack();
}

int RestackHeapHooks() { return Restack(); }

}  // namespace leakprobe
