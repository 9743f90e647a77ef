// leakprobe/malloc/native_heap.h — sampled tracking of native (malloc-family)
// blocks and exact tracking of anonymous mappings, attributed to the Python
// line that led to them and to the native stack below it.
//
//   NativeHeap& native = NativeHeap::Instance();
//   native.Start({.sample_bytes = 128 * 1024});
//   // the malloc hooks (leakprobe/malloc/malloc_hooks.h), around the real calls:
//   if (NativeHeap::CountdownCrossed(size)) native.OnCrossedAlloc(p, size, caller);
//   if (native.MaybeSampled(p)) native.OnMaybeSampledFree(p);
//   NativeSummary s = native.Summary(10);   // cold path
//
// Sampling: the Python heap's scheme (leakprobe/heap/heap_tracker.h), with
// its own per-thread countdown and its own mean: a Poisson process over
// allocated bytes, each sampled block weighted 1 / (1 - exp(-size / mean)).
// Freeing is one probe of a counting filter over sampled addresses (the
// same AddressFilter as the heap's): an unsampled free takes no lock.
//
// No double counting: CPython's own allocators end in malloc (PyMem_Raw*,
// pymalloc's blocks over 512 bytes, its arenas through mmap), and those
// blocks are the Python heap's. A sample point that falls in an allocation
// whose caller (the return address of the malloc call) lies in an excluded
// text range (SetExcludedCaller: the interpreter's own code) is discarded
// and counted (interpreter_samples); the countdown moves on, so the other
// callers' blocks keep their probability and the estimate stays unbiased.
//
// Stacks (sampled events only): the Python stack through the shared
// StackTable, and the native return addresses through libunwind
// (unw_backtrace, with libunwind's per-thread cache), cut where the
// interpreter called into native code; symbolized only on the cold path.
//
// Bounds: max_blocks live sampled blocks, max_stacks native stacks,
// max_regions mappings; past them a sample is dropped and counted
// (dropped_samples, stacks_full, mmap_dropped). Out of memory on the sampled
// path drops and counts too: nothing here throws into a hook.
//
// Thread-safety: the On* calls may run on any thread, concurrently, with or
// without the GIL; they honour the hook guard (leakprobe/runtime/guard.h).
// Start/Stop/Summary/Stacks are thread-safe. Fork: Instance() registers the
// tables' lock with the fork protocol (ForkStage::kNativeHeap).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/malloc/native_summary.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/runtime/table_map.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {

struct NativeHeapConfig {
  std::uint64_t sample_bytes = std::uint64_t{256} * 1024;  // mean sample interval
  int max_frames = 32;                // Python frames kept per sample
  std::size_t max_blocks = 1 << 16;   // live sampled blocks
  std::size_t max_stacks = 4096;      // distinct native stacks
  std::size_t max_regions = 1 << 14;  // anonymous mappings
  std::size_t top_sites = 10;         // sites named in Summary()
};

using NativeStackId = std::uint32_t;
inline constexpr NativeStackId kNoNativeStack = 0;        // no frames captured
inline constexpr NativeStackId kNativeStackOverflow = 1;  // the table was full

// One (Python stack, native stack) pair's figures, for snapshots.
struct NativeStackStat {
  StackId python = kEmptyStack;
  std::vector<const void*> pcs;  // native return addresses, innermost first
  double live_bytes = 0;
  double live_count = 0;
  double allocated_bytes = 0;
  double allocated_count = 0;
};

namespace detail {
// The native countdown: its own, so that the two rates are independent.
extern __thread ThreadSampler tls_native_sampler
    __attribute__((tls_model("initial-exec")));
}  // namespace detail

class NativeHeap {
 public:
  static constexpr std::size_t kMaxNativeDepth = 32;
  static constexpr std::size_t kMaxExcluded = 4;

  static NativeHeap& Instance();
  // Tests make their own.
  NativeHeap();

  // Allocates the native stack table (cold path; may throw std::bad_alloc).
  void Start(const NativeHeapConfig& config);
  // Stops sampling and forgets every block, mapping and statistic.
  void Stop();
  // At exit: stop sampling for good, keep memory as is.
  void Freeze() noexcept;
  bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }

  // Calls whose return address lies in [lo, hi) are the interpreter's own
  // (see the header comment). Cold path, before the hooks are installed.
  void SetExcludedCaller(std::uintptr_t lo, std::uintptr_t hi) noexcept;
  // Leading frames in [lo, hi) are the hooks' own (leakprobe's object).
  void SetOwnCode(std::uintptr_t lo, std::uintptr_t hi) noexcept;
  bool ExcludedCaller(const void* pc) const noexcept;

  // --- hot path -----------------------------------------------------------
  static bool CountdownCrossed(std::size_t size) noexcept {
    detail::ThreadSampler& t = detail::tls_native_sampler;
    t.countdown -= static_cast<std::int64_t>(size);
    return ABSL_PREDICT_FALSE(t.countdown < 0);
  }
  bool MaybeSampled(const void* p) const noexcept { return filter_.MaybeContains(p); }
  // Draws this thread's next sample point afresh at the next allocation
  // (after a change of mean; tests).
  static void ResetThreadCountdown() noexcept { detail::tls_native_sampler = {0, 0, 0}; }
  // Anonymous mappings are recorded exactly; munmap asks this first.
  bool HasRegions() const noexcept {
    return region_count_.load(std::memory_order_relaxed) != 0;
  }

  // --- slow paths (noexcept; they honour the hook guard) -------------------
  // The allocation of `size` bytes whose countdown crossed a sample point
  // returned `p` (nullptr: failed; the point stays pending). `caller` is
  // the return address of the hooked call.
  // `footprint`: what the block holds in the allocator (glibc: its usable
  // size plus its 8-byte header), the bytes the estimate counts; 0: `size`.
  // The sampling weight comes from the requested `size`, as the countdown.
  void OnCrossedAlloc(void* p, std::size_t size, const void* caller,
                      std::size_t footprint = 0) noexcept {
    if (p != nullptr) SampleSlow(p, size, caller, footprint != 0 ? footprint : size);
  }
  // Before the real free of `p`, when MaybeSampled(p).
  void OnMaybeSampledFree(void* p) noexcept {
    if (p != nullptr) FreeSlow(p);
  }
  // After a successful anonymous mmap / before a munmap.
  void OnMap(void* p, std::size_t length, const void* caller) noexcept;
  void OnUnmap(void* p, std::size_t length) noexcept;

  // --- cold path ----------------------------------------------------------
  NativeSummary Summary(std::size_t top_n) const;
  NativeSummary Summary() const {
    return Summary(top_sites_.load(std::memory_order_relaxed));
  }
  std::vector<NativeStackStat> Stacks() const;
  // The site of a native-only stack: the innermost frame outside the C/C++
  // runtime and leakprobe, "symbol+0x12 (object)"; its index in `pcs`.
  static std::size_t NativeSiteIndex(const std::vector<const void*>& pcs);

 private:
  struct Block {
    std::uint64_t size;
    double weight;
    StackId python;
    NativeStackId native;
  };
  struct Region {
    std::uint64_t length;
    StackId python;
    NativeStackId native;
  };
  struct StackStats {
    double live_bytes = 0;
    double live_count = 0;
    double allocated_bytes = 0;
    double allocated_count = 0;
  };
  struct NativeStack {
    std::uint64_t hash = 0;
    std::uint32_t depth = 0;
    const void* pcs[kMaxNativeDepth] = {};
  };
  struct Range {
    std::atomic<std::uintptr_t> lo{0};
    std::atomic<std::uintptr_t> hi{0};
  };

  void SampleSlow(void* p, std::size_t size, const void* caller,
                  std::size_t footprint) noexcept;
  void FreeSlow(void* p) noexcept;
  // Stacks of the calling thread: the Python stack id and the native frames
  // (cut where the interpreter called in when there are Python frames).
  std::size_t CaptureNative(const void** pcs, bool cut_at_interpreter) const noexcept;
  NativeStackId InternNativeLocked(const void* const* pcs, std::size_t n) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  StackStats* InsertLocked(std::uintptr_t key, const Block& block) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  StackStats* StatsLocked(StackId python, NativeStackId native) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  double ForgetLocked(TableMap<std::uintptr_t, Block>::iterator it) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `bytes` of `region` unmapped; `whole`: none of it is left.
  void ForgetRegionBytesLocked(const Region& region, std::uint64_t bytes,
                               bool whole) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::int64_t NextInterval(detail::ThreadSampler& t) const noexcept;
  bool InRange(const Range* ranges, std::size_t n, std::uintptr_t pc) const noexcept;
  std::vector<const void*> PcsOfLocked(NativeStackId id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::atomic<bool> enabled_{false};
  std::atomic<bool> frozen_{false};
  std::atomic<std::uint64_t> sample_bytes_{std::uint64_t{256} * 1024};
  std::atomic<int> max_frames_{32};
  std::atomic<std::size_t> top_sites_{10};
  std::atomic<std::size_t> region_count_{0};
  std::array<Range, kMaxExcluded> excluded_{};
  std::atomic<std::size_t> excluded_count_{0};
  Range own_;
  detail::AddressFilter filter_;

  mutable Mutex mu_;
  std::size_t max_blocks_ ABSL_GUARDED_BY(mu_) = 1 << 16;
  std::size_t max_regions_ ABSL_GUARDED_BY(mu_) = 1 << 14;
  TableMap<std::uintptr_t, Block> blocks_ ABSL_GUARDED_BY(mu_);
  TableMap<std::uint64_t, StackStats> stacks_ ABSL_GUARDED_BY(mu_);
  TableReserve blocks_reserve_ ABSL_GUARDED_BY(mu_);
  TableReserve stacks_reserve_ ABSL_GUARDED_BY(mu_);
  // Native stacks: a fixed array and an open-addressing index (power of two
  // slots, 0 = free), both allocated by Start: interning allocates nothing.
  std::unique_ptr<NativeStack[]> native_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<std::uint32_t[]> native_index_ ABSL_GUARDED_BY(mu_);
  std::size_t native_capacity_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t native_used_ ABSL_GUARDED_BY(mu_) = 2;  // ids 0 and 1 are reserved
  std::size_t native_index_mask_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::uintptr_t, Region> regions_ ABSL_GUARDED_BY(mu_);  // by start
  double allocated_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double freed_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t mmap_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t stacks_full_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t mmap_dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<std::uint64_t> interpreter_samples_{0};
  std::atomic<std::uint64_t> own_thread_samples_{0};  // guard.h: MarkOwnThread
};

}  // namespace leakprobe
