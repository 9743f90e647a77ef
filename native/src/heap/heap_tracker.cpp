#include "leakprobe/heap/heap_tracker.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/hash/hash.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/fork.h"

namespace leakprobe {
namespace detail {

__thread ThreadSampler tls_sampler __attribute__((tls_model("initial-exec"))) = {0, 0, 0};

void AddressFilter::Add(const void* p) noexcept {
  const std::size_t slot = Slot(p);
  std::atomic<std::uint8_t>& count = counts_[slot];
  const std::uint8_t value = count.load(std::memory_order_relaxed);
  // Saturated counters stay set forever: a false positive, never a miss.
  if (value == 0xFF) return;
  count.store(static_cast<std::uint8_t>(value + 1), std::memory_order_relaxed);
  if (value == 0) {
    bits_[slot >> 6].fetch_or(std::uint64_t{1} << (slot & 63), std::memory_order_release);
  }
}

void AddressFilter::Remove(const void* p) noexcept {
  const std::size_t slot = Slot(p);
  std::atomic<std::uint8_t>& count = counts_[slot];
  const std::uint8_t value = count.load(std::memory_order_relaxed);
  if (value == 0 || value == 0xFF) return;
  count.store(static_cast<std::uint8_t>(value - 1), std::memory_order_relaxed);
  if (value == 1) {
    bits_[slot >> 6].fetch_and(~(std::uint64_t{1} << (slot & 63)),
                               std::memory_order_relaxed);
  }
}

void AddressFilter::Clear() noexcept {
  for (auto& count : counts_) count.store(0, std::memory_order_relaxed);
  for (auto& word : bits_) word.store(0, std::memory_order_relaxed);
}

}  // namespace detail

namespace {

// A per-thread seed: abseil's hash of the thread's state address, the time
// and a process-wide counter.
std::uint64_t Seed(const void* salt) {
  static std::atomic<std::uint64_t> counter{0};
  const std::uint64_t seed =
      absl::HashOf(salt, MonotonicNs(), counter.fetch_add(1, std::memory_order_relaxed));
  return seed != 0 ? seed : 1;
}

}  // namespace

HeapTracker& HeapTracker::Instance() {
  // Never destroyed: allocator hooks run until the process is gone.
  static HeapTracker* const tracker = [] {
    auto* t = new HeapTracker();
    RegisterForkLock(ForkStage::kHeap, &t->mu_);
    return t;
  }();
  return *tracker;
}

HeapTracker::HeapTracker() = default;

std::int64_t HeapTracker::NextInterval(detail::ThreadSampler& t) const noexcept {
  // xorshift64*, then an exponential draw with the configured mean.
  t.rng ^= t.rng >> 12;
  t.rng ^= t.rng << 25;
  t.rng ^= t.rng >> 27;
  const std::uint64_t bits = (t.rng * 0x2545F4914F6CDD1DULL) >> 11;
  const double u = (static_cast<double>(bits) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double interval =
      -std::log(u) * static_cast<double>(sample_bytes_.load(std::memory_order_relaxed));
  return static_cast<std::int64_t>(std::clamp(interval, 1.0, 0x1.0p62));
}

void HeapTracker::SampleSlow(void* p, std::size_t size) noexcept {
  detail::ThreadSampler& t = detail::tls_sampler;
  // A zero-size block holds nothing (and would weigh 1/0): the sample point
  // stays pending for the next real allocation. So it does while the hook
  // guard is set (re-entry, fork, a tracker lock held on this thread).
  if (size == 0) return;
  const HookGuard guard(GuardedHook::kHeapAlloc);
  if (!guard.entered()) return;
  if (t.rng == 0) {
    // First allocation seen on this thread: start its countdown, then ask
    // whether this allocation crosses it.
    t.rng = Seed(&t);
    t.countdown = NextInterval(t) - static_cast<std::int64_t>(size);
    if (t.countdown >= 0) return;
  }
  // A sample point lies inside this allocation. The distance from its end
  // to the next point is again exponential (memorylessness).
  t.countdown = NextInterval(t);
  if (!enabled_.load(std::memory_order_relaxed) ||
      frozen_.load(std::memory_order_relaxed)) {
    return;
  }
  if (OnOwnThread()) {  // the profiler's own memory (guard.h)
    own_thread_samples_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const double mean = static_cast<double>(sample_bytes_.load(std::memory_order_relaxed));
  const double weight = 1.0 / -std::expm1(-static_cast<double>(size) / mean);

  LeakprobeRawFrame frames[StackTable::kMaxDepth];
  StackTable& stacks = StackTable::Instance();
  const int n = stacks.Capture(frames, max_frames_.load(std::memory_order_relaxed));
  const StackId stack = stacks.Intern(frames, n);
  {
    TrackerLock lock(&mu_);
    if (enabled_.load(std::memory_order_relaxed)) {
      ++samples_;
      const auto key = reinterpret_cast<std::uintptr_t>(p);
      auto existing = blocks_.find(key);
      if (existing != blocks_.end()) {
        // A block freed behind our back (not through the hooks, or while
        // the guard was set): forget it.
        ForgetLocked(existing);
        filter_.Remove(p);
      }
      StackStats* stats = nullptr;
      if (blocks_.size() >= max_blocks_ ||
          (stats = InsertLocked(key, Block{size, weight, stack})) == nullptr) {
        ++dropped_;  // the table is full, or memory ran out
      } else {
        const double bytes = static_cast<double>(size) * weight;
        stats->live_bytes += bytes;
        stats->live_count += weight;
        stats->allocated_bytes += bytes;
        stats->allocated_count += weight;
        allocated_bytes_ += bytes;
        live_bytes_ += bytes;
        if (size <= kSmallBlockBytes) small_live_bytes_ += bytes;
        filter_.Add(p);
      }
    }
  }
}

void HeapTracker::FreeSlow(void* p) noexcept {
  // With the guard set, the block stays in the table: it is forgotten when
  // its address is sampled again (see SampleSlow), and the pass is counted.
  const HookGuard guard(GuardedHook::kHeapFree);
  if (!guard.entered()) return;
  TrackerLock lock(&mu_);
  auto it = blocks_.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == blocks_.end()) return;  // a filter false positive
  freed_bytes_ += ForgetLocked(it);
  filter_.Remove(p);
}

// Allocates (it may run out of memory), on the sampled path where nothing
// may throw: each map's growth is reserved before its insert, and an insert
// that cannot be reserved is not attempted, so both tables stay as they
// were (a stack entry inserted for a block that then cannot be is undone).
HeapTracker::StackStats* HeapTracker::InsertLocked(std::uintptr_t key,
                                                   const Block& block) noexcept {
  try {
    const ReservedInsert stack_insert(&stacks_reserve_, stacks_);
    if (!stack_insert.ok()) return nullptr;
    const auto [stats, new_stack] = stacks_.try_emplace(block.stack);
    const ReservedInsert block_insert(&blocks_reserve_, blocks_);
    if (!block_insert.ok()) {
      if (new_stack) stacks_.erase(stats);
      return nullptr;
    }
    blocks_.emplace(key, block);
    return &stats->second;
  } catch (...) {  // not expected (the inserts are reserved): drop all the same
    return nullptr;
  }
}

// Allocates nothing: a free must succeed whatever the memory.
double HeapTracker::ForgetLocked(TableMap<std::uintptr_t, Block>::iterator it) noexcept {
  const Block& block = it->second;
  const double bytes = static_cast<double>(block.size) * block.weight;
  if (block.size <= kSmallBlockBytes) small_live_bytes_ -= bytes;
  auto stats = stacks_.find(block.stack);
  if (stats != stacks_.end()) {  // always: a block's stack is inserted first
    stats->second.live_bytes -= bytes;
    stats->second.live_count -= block.weight;
  }
  live_bytes_ -= bytes;
  blocks_.erase(it);
  return bytes;
}

void HeapTracker::Start(const HeapConfig& config) {
  TrackerLock lock(&mu_);
  sample_bytes_.store(std::max<std::uint64_t>(config.sample_bytes, 1));
  max_frames_.store(
      std::clamp(config.max_frames, 1, static_cast<int>(StackTable::kMaxDepth)));
  max_blocks_ = config.max_blocks;
  top_sites_.store(config.top_sites);
  frozen_.store(false);
  enabled_.store(true);
}

void HeapTracker::Stop() {
  TrackerLock lock(&mu_);
  enabled_.store(false);
  blocks_.clear();
  stacks_.clear();
  allocated_bytes_ = freed_bytes_ = live_bytes_ = small_live_bytes_ = 0;
  samples_ = dropped_ = 0;
  filter_.Clear();
}

void HeapTracker::Freeze() noexcept { frozen_.store(true); }

double HeapTracker::LiveBytes() const {
  TrackerLock lock(&mu_);
  return live_bytes_;
}

HeapSummary HeapTracker::Summary(std::size_t top_n) const {
  HeapSummary summary;
  std::vector<std::pair<StackId, StackStats>> live;
  {
    TrackerLock lock(&mu_);
    summary.enabled = enabled_.load();
    summary.sample_bytes = sample_bytes_.load();
    summary.allocated_bytes = allocated_bytes_;
    summary.freed_bytes = freed_bytes_;
    summary.small_live_bytes = std::max(0.0, small_live_bytes_);
    summary.samples = samples_;
    summary.live_blocks = blocks_.size();
    summary.dropped_samples = dropped_;
    summary.own_thread_samples = own_thread_samples_.load(std::memory_order_relaxed);
    summary.memory_bytes =
        sizeof(*this) +
        blocks_.capacity() * (sizeof(std::pair<std::uintptr_t, Block>) + 1) +
        stacks_.capacity() * (sizeof(std::pair<StackId, StackStats>) + 1) +
        blocks_reserve_.bytes() + stacks_reserve_.bytes();
    for (const auto& [stack, stats] : stacks_) {
      if (stats.live_count > 0.5) live.emplace_back(stack, stats);
    }
  }
  StackTable& table = StackTable::Instance();
  summary.stack_table = table.Stats();
  summary.memory_bytes += summary.stack_table.memory_bytes;
  summary.stack_overflows =
      summary.stack_table.frames_full + summary.stack_table.stacks_full +
      summary.stack_table.unresolved + summary.stack_table.out_of_memory;
  // Aggregate stacks by attribution site; name only the top ones.
  struct Aggregate {
    StackId example;
    double live_bytes = 0;
    double live_count = 0;
  };
  absl::flat_hash_map<std::uint64_t, Aggregate> sites;
  for (const auto& [stack, stats] : live) {
    summary.live_bytes += stats.live_bytes;
    Aggregate& site =
        sites.try_emplace(table.SiteKey(stack), Aggregate{stack}).first->second;
    site.live_bytes += stats.live_bytes;
    site.live_count += stats.live_count;
  }
  std::vector<Aggregate> ranked;
  ranked.reserve(sites.size());
  for (const auto& [key, site] : sites) ranked.push_back(site);
  const std::size_t n = std::min(top_n, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(n),
                    ranked.end(), [](const Aggregate& a, const Aggregate& b) {
                      return a.live_bytes != b.live_bytes ? a.live_bytes > b.live_bytes
                                                          : a.example < b.example;
                    });
  for (std::size_t i = 0; i < n; ++i) {
    summary.top_sites.push_back(
        {table.SiteOf(ranked[i].example), ranked[i].live_bytes, ranked[i].live_count});
  }
  return summary;
}

std::vector<HeapStackStat> HeapTracker::Stacks() const {
  TrackerLock lock(&mu_);
  std::vector<HeapStackStat> out;
  out.reserve(stacks_.size());
  for (const auto& [stack, stats] : stacks_) {
    out.push_back({stack, stats.live_bytes, stats.live_count, stats.allocated_bytes,
                   stats.allocated_count});
  }
  return out;
}

}  // namespace leakprobe
