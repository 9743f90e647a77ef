#include "leakprobe/heap/pymem_hooks.h"

#include <Python.h>

#include <atomic>
#include <cstddef>
#include <iterator>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
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
  // The outer hooks' fast path takes requests of fewer bytes than this:
  // kNestingBytes + 1, or 0 while forward_only (every request then goes to
  // the slow path, which forwards it). One compare on the hottest path
  // covers both reasons to leave it. Changed with forward_only.
  std::atomic<std::size_t> fast_below{0};
};

constexpr PyMemAllocatorDomain kDomains[] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM,
                                             PYMEM_DOMAIN_OBJ};
HeapTracker* g_tracker = nullptr;
bool g_installed = false;
std::atomic<bool> g_mark_raw{false};  // MarkRawAllocatorCalls

// Marks the thread while a RAW hook calls the real allocator (see
// MarkRawAllocatorCalls): the malloc hooks read the mark.
struct RawMark {
  RawMark() noexcept { ++detail::tls_sampler.nesting; }
  ~RawMark() { --detail::tls_sampler.nesting; }
  RawMark(const RawMark&) = delete;
  RawMark& operator=(const RawMark&) = delete;
};

// The countdown first (a thread-local subtraction), then the real call; a
// block whose request crossed a sample point is recorded once the real
// call has returned it. A free is forgotten before the real free, so that
// an address reused at once by another thread can never meet its
// predecessor's record.
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
  // The real allocator's functions, called as noexcept: they are C and
  // cannot throw. Calling them so lets the noexcept hooks below tail-call
  // them (a noexcept caller of a function that may throw must stay on the
  // stack, ready to terminate, which rules the tail call out).
  using MallocFn = void* (*)(void*, size_t) noexcept;
  using FreeFn = void (*)(void*, void*) noexcept;
  static void* RealMalloc(const Domain* d, size_t size) noexcept {
    return reinterpret_cast<MallocFn>(d->original.malloc)(d->original.ctx, size);
  }
  static void RealFree(const Domain* d, void* p) noexcept {
    reinterpret_cast<FreeFn>(d->original.free)(d->original.ctx, p);
  }

  static bool Skip() noexcept { return !kOuter && detail::tls_sampler.nesting != 0; }
  // Allocations pass through a layer that only forwards (see Domain).
  static bool Forward(const Domain* d) noexcept {
    return Skip() || d->forward_only.load(std::memory_order_relaxed);
  }
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
  static bool MarkRaw() noexcept {
    return !kOuter && ABSL_PREDICT_FALSE(g_mark_raw.load(std::memory_order_relaxed)) &&
           !Skip();
  }
  // RAW while native tracking runs: the real call under the thread's mark.
  ABSL_ATTRIBUTE_NOINLINE static void* MarkedMalloc(const Domain* d,
                                                    size_t size) noexcept {
    const bool crossed = !d->forward_only.load(std::memory_order_relaxed) &&
                         HeapTracker::CountdownCrossed(size);
    void* p;
    {
      const RawMark mark;
      p = RealMalloc(d, size);
    }
    if (crossed) g_tracker->OnCrossedAlloc(p, size);
    return p;
  }

  static void* Malloc(void* ctx, size_t size) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if constexpr (kOuter) {
      // MEM/OBJ: a small request on a recording layer is the countdown and
      // the tail call (10 instructions on x86-64, gcc 12 -O2).
      if (ABSL_PREDICT_TRUE(size < d->fast_below.load(std::memory_order_relaxed))) {
        if (ABSL_PREDICT_TRUE(!HeapTracker::CountdownCrossed(size))) {
          return RealMalloc(d, size);
        }
        return MallocSlow(d, size, true);
      }
      if (Forward(d)) return RealMalloc(d, size);
      return MallocSlow(d, size, HeapTracker::CountdownCrossed(size));
    }
    if (MarkRaw()) return MarkedMalloc(d, size);
    if (Forward(d)) return RealMalloc(d, size);
    const bool crossed = HeapTracker::CountdownCrossed(size);
    if (ABSL_PREDICT_TRUE(!crossed && (!kOuter || size <= kNestingBytes))) {
      return RealMalloc(d, size);
    }
    return MallocSlow(d, size, crossed);
  }
  ABSL_ATTRIBUTE_NOINLINE static void* MallocSlow(const Domain* d, size_t size,
                                                  bool crossed) noexcept {
    void* p;
    {
      Scope scope(size > kNestingBytes);
      p = RealMalloc(d, size);
    }
    if (crossed) g_tracker->OnCrossedAlloc(p, size);
    return p;
  }

  static void* Calloc(void* ctx, size_t count, size_t size) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    const bool mark = MarkRaw();
    if (Forward(d)) {
      if (!mark) return d->original.calloc(d->original.ctx, count, size);
      const RawMark raw;
      return d->original.calloc(d->original.ctx, count, size);
    }
    void* p;
    {
      Scope scope(count * size > kNestingBytes);
      if (mark) {
        const RawMark raw;
        p = d->original.calloc(d->original.ctx, count, size);
      } else {
        p = d->original.calloc(d->original.ctx, count, size);
      }
    }
    g_tracker->OnAlloc(p, count * size);  // the allocator checked for overflow
    return p;
  }

  static void* Realloc(void* ctx, void* old, size_t size) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (Skip()) return d->original.realloc(d->original.ctx, old, size);
    g_tracker->OnFree(old);  // a failed realloc leaves `old` untracked, not wrong
    const bool mark = MarkRaw();
    if (d->forward_only.load(std::memory_order_relaxed)) {
      if (!mark) return d->original.realloc(d->original.ctx, old, size);
      const RawMark raw;
      return d->original.realloc(d->original.ctx, old, size);
    }
    void* p;
    {
      Scope scope(true);
      if (mark) {
        const RawMark raw;
        p = d->original.realloc(d->original.ctx, old, size);
      } else {
        p = d->original.realloc(d->original.ctx, old, size);
      }
    }
    g_tracker->OnAlloc(p, size);
    return p;
  }

  // The fast path is one probe of the sampled-address filter and a tail
  // call to the real free. Frees are honoured by forwarding layers too: a
  // block sampled here before may be freed through the chain.
  static void Free(void* ctx, void* p) noexcept {
    const Domain* d = static_cast<const Domain*>(ctx);
    if (ABSL_PREDICT_FALSE(!Skip() && g_tracker->MaybeSampled(p))) {
      FreeSampled(d, p);
      return;
    }
    RealFree(d, p);
  }
  ABSL_ATTRIBUTE_NOINLINE static void FreeSampled(const Domain* d, void* p) noexcept {
    g_tracker->OnMaybeSampledFree(p);
    RealFree(d, p);
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
    d->fast_below.store(d != top ? 0 : kNestingBytes + 1, std::memory_order_relaxed);
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

void MarkRawAllocatorCalls(bool on) noexcept {
  g_mark_raw.store(on, std::memory_order_relaxed);
}

}  // namespace leakprobe
