// leakprobe/heap/heap_tracker.h — sampled tracking of heap blocks by bytes, with
// unbiased estimates of live bytes and counts per creation stack.
//
//   HeapTracker& heap = HeapTracker::Instance();
//   heap.Start({.sample_bytes = 128 * 1024});
//   // allocator hooks, after the real allocation / before the real free:
//   heap.OnAlloc(ptr, size);
//   heap.OnFree(ptr);
//   HeapSummary s = heap.Summary(10);   // cold path: totals and top sites
//
// Sampling: a Poisson process over allocated bytes with mean `sample_bytes`.
// Each thread keeps a countdown of bytes to the next sample point; an
// allocation that crosses it is sampled and weighted 1 / P(sampled) =
// 1 / (1 - exp(-size / sample_bytes)), so sums of weights estimate counts and
// sums of size x weight estimate bytes without bias.
//
// Hot path (inline below): OnAlloc is a thread-local subtraction and a
// branch; OnFree is one probe of a fixed counting filter over sampled
// addresses, so freeing an unsampled block takes no lock and touches no
// hash map. Only sampled events (and rare filter false positives) take the
// slow path, which captures the Python stack, interns it (StackTable) and
// updates the tables under `mu_`.
//
// Bounds: at most `max_blocks` live sampled blocks; a sample that finds the
// table full, or that cannot be recorded because memory ran out, is dropped
// and counted (dropped_samples). Stacks are capped by StackTable (overflow
// stack; also its answer when interning runs out of memory). The filter is
// 1 MiB. Nothing on the sampled path throws: the hooks are noexcept.
//
// Thread-safety: OnAlloc/OnFree may run on any thread, with or without the
// GIL, concurrently. Start/Stop/Summary/Stacks are thread-safe. Fork:
// Instance() registers the tables' lock with the fork protocol
// (ForkStage::kHeap, leakprobe/runtime/fork.h), so the child inherits
// consistent tables (its inherited blocks are real blocks of the child).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/optimization.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "leakprobe/heap/heap_summary.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/runtime/table_map.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {

struct HeapConfig {
  std::uint64_t sample_bytes =
      std::uint64_t{128} * 1024;     // mean interval between samples
  int max_frames = 32;               // Python frames kept per sample
  std::size_t max_blocks = 1 << 17;  // live sampled blocks
  std::size_t top_sites = 10;        // sites named in Summary()
};

struct HeapStackStat {
  StackId stack = kEmptyStack;
  double live_bytes = 0;
  double live_count = 0;
  double allocated_bytes = 0;
  double allocated_count = 0;
};

namespace detail {

struct ThreadSampler {
  std::int64_t countdown;  // bytes to the next sample point
  std::uint64_t rng;       // xorshift state; 0 = not initialised
  std::uint32_t nesting;   // inside a MEM/OBJ (or, with native tracking, RAW) hook's call
                           // to the real allocator
};

// __thread, not thread_local: a C++ thread_local defined in another
// translation unit is reached through a TLS wrapper call (it might need
// dynamic initialisation); __thread is a plain access. initial-exec makes
// that access %fs-relative, with no __tls_get_addr call; it needs a few
// bytes of static TLS, which glibc reserves for dlopen'ed libraries.
extern __thread ThreadSampler tls_sampler __attribute__((tls_model("initial-exec")));

// A counting filter over sampled addresses: never a false negative. One
// counter per 256-byte granule of address space (aliasing every 256 MiB),
// and one bit per granule saying "its counter is not zero": the probe of
// every free reads the bit, not the counter, so frees of neighbouring
// blocks read the same cache line, and the bits of a 50 MiB heap (25 KiB)
// stay in the L1 cache where its counters (200 KiB) did not (the probe was
// ~70 % of the free hook's time on an ORM session loop: docs/benchmarks.md).
// A hashed index would miss on nearly every free.
//
// Add, Remove and Clear must be serialized by the owner (they run under
// its lock); MaybeContains is lock-free.
class AddressFilter {
 public:
  static constexpr int kBits = 20;
  static constexpr int kGranuleShift = 8;

  static std::size_t Slot(const void* p) noexcept {
    return static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(p) >>
                                    kGranuleShift) &
           ((std::size_t{1} << kBits) - 1);
  }
  bool MaybeContains(const void* p) const noexcept {
    const std::size_t slot = Slot(p);
    return ((bits_[slot >> 6].load(std::memory_order_relaxed) >> (slot & 63)) & 1) != 0;
  }
  void Add(const void* p) noexcept;
  void Remove(const void* p) noexcept;
  void Clear() noexcept;

 private:
  std::array<std::atomic<std::uint8_t>, std::size_t{1} << kBits> counts_{};
  std::array<std::atomic<std::uint64_t>, (std::size_t{1} << kBits) / 64> bits_{};
};

}  // namespace detail

class HeapTracker {
 public:
  static constexpr std::uint64_t kSmallBlockBytes = 512;  // pymalloc's largest

  static HeapTracker& Instance();
  // Tests make their own.
  HeapTracker();

  void Start(const HeapConfig& config);
  // Stops sampling and forgets every sampled block and statistic.
  void Stop();
  // At exit: stop sampling and stack capture for good, keep memory as is.
  void Freeze() noexcept;
  bool enabled() const noexcept { return enabled_.load(std::memory_order_relaxed); }

  void OnAlloc(void* p, std::size_t size) noexcept {
    if (CountdownCrossed(size)) OnCrossedAlloc(p, size);
  }
  void OnFree(void* p) noexcept {
    if (ABSL_PREDICT_FALSE(MaybeSampled(p))) OnMaybeSampledFree(p);
  }

  // OnAlloc and OnFree in halves, for hooks that tail-call the real
  // allocator: the countdown (and the filter probe) before the real call,
  // the rest only when it says so.
  //   if (!CountdownCrossed(size)) return real_malloc(size);    // tail call
  //   p = real_malloc(size); OnCrossedAlloc(p, size); return p;
  static bool CountdownCrossed(std::size_t size) noexcept {
    detail::ThreadSampler& t = detail::tls_sampler;
    t.countdown -= static_cast<std::int64_t>(size);
    return ABSL_PREDICT_FALSE(t.countdown < 0);
  }
  // The allocation of `size` bytes whose countdown crossed a sample point
  // returned `p` (nullptr: failed; the point stays pending).
  void OnCrossedAlloc(void* p, std::size_t size) noexcept {
    if (p != nullptr) SampleSlow(p, size);
  }
  bool MaybeSampled(const void* p) const noexcept { return filter_.MaybeContains(p); }
  // Before the real free of `p`, when MaybeSampled(p).
  void OnMaybeSampledFree(void* p) noexcept {
    if (p != nullptr) FreeSlow(p);
  }

  HeapSummary Summary(std::size_t top_n) const;
  // Summary().live_bytes alone, without walking the stacks (a unit of
  // work reads it twice per run).
  double LiveBytes() const;
  HeapSummary Summary() const {
    return Summary(top_sites_.load(std::memory_order_relaxed));
  }
  std::vector<HeapStackStat> Stacks() const;

 private:
  struct Block {
    std::uint64_t size;
    double weight;
    StackId stack;
  };
  struct StackStats {
    double live_bytes = 0;
    double live_count = 0;
    double allocated_bytes = 0;
    double allocated_count = 0;
  };

  void SampleSlow(void* p, std::size_t size) noexcept;
  void FreeSlow(void* p) noexcept;
  // The block's stack entry, or nullptr (nothing inserted) when out of memory.
  StackStats* InsertLocked(std::uintptr_t key, const Block& block) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a block out of the tables; returns its estimated bytes.
  double ForgetLocked(TableMap<std::uintptr_t, Block>::iterator it) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::int64_t NextInterval(detail::ThreadSampler& t) const noexcept;

  std::atomic<bool> enabled_{false};
  std::atomic<bool> frozen_{false};
  std::atomic<std::uint64_t> sample_bytes_{std::uint64_t{128} * 1024};
  std::atomic<int> max_frames_{32};
  std::atomic<std::size_t> top_sites_{10};
  std::atomic<std::uint64_t> own_thread_samples_{0};  // guard.h: MarkOwnThread
  detail::AddressFilter filter_;

  mutable Mutex mu_;
  std::size_t max_blocks_ ABSL_GUARDED_BY(mu_) = 1 << 17;
  // Inserted into on the sampled path: TableMaps, each with the reserve of
  // its next growth (leakprobe/runtime/table_map.h).
  TableMap<std::uintptr_t, Block> blocks_ ABSL_GUARDED_BY(mu_);
  TableMap<StackId, StackStats> stacks_ ABSL_GUARDED_BY(mu_);
  TableReserve blocks_reserve_ ABSL_GUARDED_BY(mu_);
  TableReserve stacks_reserve_ ABSL_GUARDED_BY(mu_);
  double allocated_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double freed_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double live_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // the sum of the stacks' live_bytes
  // Live blocks of pymalloc's sizes (<= kSmallBlockBytes), for the free
  // part of its arenas (MemoryComponents in leakprobe/malloc/native_summary.h).
  double small_live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace leakprobe
