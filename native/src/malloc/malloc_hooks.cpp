// The malloc-family hooks (see leakprobe/malloc/malloc_hooks.h).
#include "leakprobe/malloc/malloc_hooks.h"

#include <link.h>
#include <malloc.h>
#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
#include "leakprobe/interpose/interpose.h"
#include "leakprobe/malloc/native_heap.h"

namespace leakprobe {
namespace {

NativeHeap* g_heap = nullptr;  // set once, before any GOT entry leads here
std::atomic<bool> g_installed{false};

std::atomic<void*> real_malloc{nullptr}, real_calloc{nullptr}, real_realloc{nullptr},
    real_reallocarray{nullptr}, real_free{nullptr}, real_posix_memalign{nullptr},
    real_aligned_alloc{nullptr}, real_memalign{nullptr}, real_valloc{nullptr},
    real_pvalloc{nullptr}, real_mmap{nullptr}, real_mmap64{nullptr}, real_munmap{nullptr};

// The real functions are C: called as noexcept, so that the noexcept hooks
// can tail-call them.
template <typename Fn>
Fn Real(const std::atomic<void*>& real) noexcept {
  return reinterpret_cast<Fn>(real.load(std::memory_order_relaxed));
}
using MallocFn = void* (*)(std::size_t) noexcept;
using CallocFn = void* (*)(std::size_t, std::size_t) noexcept;
using ReallocFn = void* (*)(void*, std::size_t) noexcept;
using ReallocarrayFn = void* (*)(void*, std::size_t, std::size_t) noexcept;
using FreeFn = void (*)(void*) noexcept;
using PosixMemalignFn = int (*)(void**, std::size_t, std::size_t) noexcept;
using AlignedFn = void* (*)(std::size_t, std::size_t) noexcept;
using MmapFn = void* (*)(void*, std::size_t, int, int, int, off_t) noexcept;
using MunmapFn = int (*)(void*, std::size_t) noexcept;

// --- allocation: the countdown, then a tail call, or the sampled path -------

// The block's footprint in glibc's heap: its usable size (the request
// rounded up to the allocator's granule) plus the chunk header, so that the
// estimate is the memory the blocks hold, not what was asked for (OpenSSL's
// many small blocks hold about a fifth more than they ask).
ABSL_ATTRIBUTE_NOINLINE void* Sampled(void* p, std::size_t size,
                                      const void* caller) noexcept {
  if (p != nullptr) {
    g_heap->OnCrossedAlloc(p, size, caller, malloc_usable_size(p) + sizeof(std::size_t));
  }
  return p;
}

void* HookMalloc(std::size_t size) noexcept {
  if (ABSL_PREDICT_TRUE(!NativeHeap::CountdownCrossed(size))) {
    return Real<MallocFn>(real_malloc)(size);
  }
  return Sampled(Real<MallocFn>(real_malloc)(size), size, __builtin_return_address(0));
}

void* HookCalloc(std::size_t count, std::size_t size) noexcept {
  std::size_t bytes = 0;
  if (ABSL_PREDICT_FALSE(__builtin_mul_overflow(count, size, &bytes)) ||
      ABSL_PREDICT_TRUE(!NativeHeap::CountdownCrossed(bytes))) {
    return Real<CallocFn>(real_calloc)(count, size);  // overflow: calloc fails it
  }
  return Sampled(Real<CallocFn>(real_calloc)(count, size), bytes,
                 __builtin_return_address(0));
}

// The old block is forgotten before the real call (its address may be
// reused at once by another thread); the new one is a new allocation. A
// failed realloc leaves the old block untracked, never wrong.
ABSL_ATTRIBUTE_NOINLINE void ForgetIfSampled(void* p) noexcept {
  g_heap->OnMaybeSampledFree(p);
}

void* HookRealloc(void* old, std::size_t size) noexcept {
  if (ABSL_PREDICT_FALSE(g_heap->MaybeSampled(old))) ForgetIfSampled(old);
  if (ABSL_PREDICT_TRUE(!NativeHeap::CountdownCrossed(size))) {
    return Real<ReallocFn>(real_realloc)(old, size);
  }
  return Sampled(Real<ReallocFn>(real_realloc)(old, size), size,
                 __builtin_return_address(0));
}

void* HookReallocarray(void* old, std::size_t count, std::size_t size) noexcept {
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(count, size, &bytes)) {
    return Real<ReallocarrayFn>(real_reallocarray)(old, count, size);  // fails, old kept
  }
  if (ABSL_PREDICT_FALSE(g_heap->MaybeSampled(old))) ForgetIfSampled(old);
  if (ABSL_PREDICT_TRUE(!NativeHeap::CountdownCrossed(bytes))) {
    return Real<ReallocarrayFn>(real_reallocarray)(old, count, size);
  }
  return Sampled(Real<ReallocarrayFn>(real_reallocarray)(old, count, size), bytes,
                 __builtin_return_address(0));
}

int HookPosixMemalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  const int error = Real<PosixMemalignFn>(real_posix_memalign)(out, alignment, size);
  if (ABSL_PREDICT_FALSE(NativeHeap::CountdownCrossed(size)) && error == 0) {
    Sampled(*out, size, __builtin_return_address(0));
  }
  return error;
}

template <std::atomic<void*>* kReal>
void* HookAligned(std::size_t alignment, std::size_t size) noexcept {
  if (ABSL_PREDICT_TRUE(!NativeHeap::CountdownCrossed(size))) {
    return Real<AlignedFn>(*kReal)(alignment, size);
  }
  return Sampled(Real<AlignedFn>(*kReal)(alignment, size), size,
                 __builtin_return_address(0));
}

template <std::atomic<void*>* kReal>
void* HookPageAligned(std::size_t size) noexcept {
  if (ABSL_PREDICT_TRUE(!NativeHeap::CountdownCrossed(size))) {
    return Real<MallocFn>(*kReal)(size);
  }
  return Sampled(Real<MallocFn>(*kReal)(size), size, __builtin_return_address(0));
}

// --- free: one filter probe, then a tail call --------------------------------

void HookFree(void* p) noexcept {
  if (ABSL_PREDICT_FALSE(g_heap->MaybeSampled(p))) ForgetIfSampled(p);
  Real<FreeFn>(real_free)(p);
}

// --- anonymous mappings: every one, exactly ----------------------------------

template <std::atomic<void*>* kReal>
void* HookMmap(void* addr, std::size_t length, int prot, int flags, int fd,
               off_t offset) noexcept {
  void* p = Real<MmapFn>(*kReal)(addr, length, prot, flags, fd, offset);
  if ((flags & MAP_ANONYMOUS) != 0 && p != MAP_FAILED) {
    g_heap->OnMap(p, length, __builtin_return_address(0));
  }
  return p;
}

int HookMunmap(void* addr, std::size_t length) noexcept {
  if (g_heap->HasRegions()) g_heap->OnUnmap(addr, length);
  return Real<MunmapFn>(real_munmap)(addr, length);
}

template <typename F>
void* Fn(F* f) noexcept {
  return reinterpret_cast<void*>(f);
}

const InterposeHook kMallocHooks[] = {
    {"malloc", Fn(&HookMalloc), &real_malloc},
    {"calloc", Fn(&HookCalloc), &real_calloc},
    {"realloc", Fn(&HookRealloc), &real_realloc},
    {"reallocarray", Fn(&HookReallocarray), &real_reallocarray},
    {"free", Fn(&HookFree), &real_free},
    {"posix_memalign", Fn(&HookPosixMemalign), &real_posix_memalign},
    {"aligned_alloc", Fn(&HookAligned<&real_aligned_alloc>), &real_aligned_alloc},
    {"memalign", Fn(&HookAligned<&real_memalign>), &real_memalign},
    {"valloc", Fn(&HookPageAligned<&real_valloc>), &real_valloc},
    {"pvalloc", Fn(&HookPageAligned<&real_pvalloc>), &real_pvalloc},
    {"mmap", Fn(&HookMmap<&real_mmap>), &real_mmap},
    {"mmap64", Fn(&HookMmap<&real_mmap64>), &real_mmap64},
    {"munmap", Fn(&HookMunmap), &real_munmap},
};

// The executable segments of the object holding `address`.
struct TextRange {
  std::uintptr_t address = 0;
  std::uintptr_t lo = 0;
  std::uintptr_t hi = 0;
};

int FindText(dl_phdr_info* info, std::size_t /*size*/, void* data) noexcept {
  auto* range = static_cast<TextRange*>(data);
  std::uintptr_t lo = UINTPTR_MAX;
  std::uintptr_t hi = 0;
  bool contains = false;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & PF_X) == 0) continue;
    const std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
    const std::uintptr_t end = start + ph.p_memsz;
    lo = std::min(lo, start);
    hi = std::max(hi, end);
    if (range->address >= start && range->address < end) contains = true;
  }
  if (!contains) return 0;
  range->lo = lo;
  range->hi = hi;
  return 1;
}

TextRange TextOf(const void* address) noexcept {
  TextRange range;
  range.address = reinterpret_cast<std::uintptr_t>(address);
  dl_iterate_phdr(&FindText, &range);
  return range;
}

}  // namespace

void InstallMallocHooks(const void* interpreter_symbol) {
  static std::once_flag once;
  std::call_once(once, [] {
    NativeHeap& heap = NativeHeap::Instance();
    const TextRange own = TextOf(reinterpret_cast<const void*>(&HookMalloc));
    heap.SetOwnCode(own.lo, own.hi);
    g_heap = &heap;
  });
  if (interpreter_symbol != nullptr) {
    const TextRange interpreter = TextOf(interpreter_symbol);
    g_heap->SetExcludedCaller(interpreter.lo, interpreter.hi);
  }
  Interposer::Instance().Install(kMallocHooks,
                                 sizeof kMallocHooks / sizeof kMallocHooks[0]);
  // ctypes' `libc.malloc(n)`: a dlsym lookup, then a call through a pointer.
  Interposer::Instance().RedirectDlsym(kMallocHooks,
                                       sizeof kMallocHooks / sizeof kMallocHooks[0]);
  g_installed.store(true, std::memory_order_release);
}

bool MallocHooksInstalled() noexcept {
  return g_installed.load(std::memory_order_acquire) &&
         Interposer::Instance().installed();
}

}  // namespace leakprobe
