#define UNW_LOCAL_ONLY
#include "leakprobe/malloc/native_heap.h"

#include <dlfcn.h>
#include <libunwind.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/stacks/native_stack.h"

namespace leakprobe {
namespace detail {

__thread ThreadSampler tls_native_sampler
    __attribute__((tls_model("initial-exec"))) = {0, 0, 0};

}  // namespace detail

namespace {

std::uint64_t Seed(const void* salt) {
  static std::atomic<std::uint64_t> counter{0};
  const std::uint64_t seed =
      absl::HashOf(salt, MonotonicNs(), counter.fetch_add(1, std::memory_order_relaxed),
                   std::uint64_t{0x6e617469});
  return seed != 0 ? seed : 1;
}

std::uint64_t StatsKey(StackId python, NativeStackId native) noexcept {
  return (std::uint64_t{python} << 32) | native;
}

std::uint64_t HashPcs(const void* const* pcs, std::size_t n) noexcept {
  std::uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= reinterpret_cast<std::uintptr_t>(pcs[i]);
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
  }
  return h != 0 ? h : 1;
}

// Objects of the C/C++ runtime and leakprobe: never a native site.
bool RuntimeObject(const char* path, const void* base) {
  static const void* const own = [] {
    Dl_info info{};
    return dladdr(reinterpret_cast<const void*>(&NativeHeap::NativeSiteIndex), &info) != 0
               ? info.dli_fbase
               : nullptr;
  }();
  if (base != nullptr && base == own) return true;
  if (path == nullptr) return false;
  const std::string_view p(path);
  const std::string_view name =
      p.substr(p.rfind('/') == std::string_view::npos ? 0 : p.rfind('/') + 1);
  for (std::string_view runtime :
       {"libc.so", "libstdc++.so", "libgcc_s.so", "ld-linux", "libunwind", "libm.so"}) {
    if (name.substr(0, runtime.size()) == runtime) return true;
  }
  return false;
}

}  // namespace

NativeHeap& NativeHeap::Instance() {
  // Never destroyed: the malloc hooks run until the process is gone.
  static NativeHeap* const heap = [] {
    auto* h = new NativeHeap();
    RegisterForkLock(ForkStage::kNativeHeap, &h->mu_);
    return h;
  }();
  return *heap;
}

NativeHeap::NativeHeap() = default;

void NativeHeap::SetExcludedCaller(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  const std::size_t i = excluded_count_.load(std::memory_order_relaxed);
  if (i >= kMaxExcluded || lo >= hi) return;
  for (std::size_t j = 0; j < i; ++j) {
    if (excluded_[j].lo.load() == lo) return;  // already known
  }
  excluded_[i].lo.store(lo, std::memory_order_relaxed);
  excluded_[i].hi.store(hi, std::memory_order_relaxed);
  excluded_count_.store(i + 1, std::memory_order_release);
}

void NativeHeap::SetOwnCode(std::uintptr_t lo, std::uintptr_t hi) noexcept {
  own_.lo.store(lo, std::memory_order_relaxed);
  own_.hi.store(hi, std::memory_order_relaxed);
}

bool NativeHeap::InRange(const Range* ranges, std::size_t n,
                         std::uintptr_t pc) const noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (pc >= ranges[i].lo.load(std::memory_order_relaxed) &&
        pc < ranges[i].hi.load(std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

bool NativeHeap::ExcludedCaller(const void* pc) const noexcept {
  return InRange(excluded_.data(), excluded_count_.load(std::memory_order_acquire),
                 reinterpret_cast<std::uintptr_t>(pc));
}

std::int64_t NativeHeap::NextInterval(detail::ThreadSampler& t) const noexcept {
  t.rng ^= t.rng >> 12;
  t.rng ^= t.rng << 25;
  t.rng ^= t.rng >> 27;
  const std::uint64_t bits = (t.rng * 0x2545F4914F6CDD1DULL) >> 11;
  const double u = (static_cast<double>(bits) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double interval =
      -std::log(u) * static_cast<double>(sample_bytes_.load(std::memory_order_relaxed));
  return static_cast<std::int64_t>(std::clamp(interval, 1.0, 0x1.0p62));
}

std::size_t NativeHeap::CaptureNative(const void** pcs,
                                      bool cut_at_interpreter) const noexcept {
  // libunwind's fast path: unw_backtrace, with its per-thread cache of
  // unwind rules (falls back to unw_step where the cache cannot help).
  void* raw[kMaxNativeDepth + 8];
#if defined(__SANITIZE_THREAD__)
  // Under TSan, unw_step: libunwind's unw_backtrace keeps a per-thread
  // cache freed by a TSD destructor that locks a mutex after TSan has
  // finished the thread (a crash at thread exit, not a race).
  int got = 0;
  unw_context_t context;
  unw_cursor_t cursor;
  if (unw_getcontext(&context) == 0 && unw_init_local(&cursor, &context) == 0) {
    do {
      unw_word_t ip = 0;
      if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || ip == 0) break;
      raw[got++] = reinterpret_cast<void*>(ip);
    } while (got < static_cast<int>(std::size(raw)) && unw_step(&cursor) > 0);
  }
#else
  const int got = unw_backtrace(raw, static_cast<int>(std::size(raw)));
#endif
  const auto n = static_cast<std::size_t>(std::max(got, 0));
  std::size_t i = 0;
  // Our own frames first (this function, the slow path, the hook).
  while (i < n && InRange(&own_, 1, reinterpret_cast<std::uintptr_t>(raw[i]))) ++i;
  std::size_t out = 0;
  const std::size_t excluded = excluded_count_.load(std::memory_order_acquire);
  for (; i < n && out < kMaxNativeDepth; ++i) {
    if (cut_at_interpreter &&
        InRange(excluded_.data(), excluded, reinterpret_cast<std::uintptr_t>(raw[i]))) {
      break;  // the interpreter called in here: the Python stack follows
    }
    pcs[out++] = raw[i];
  }
  return out;
}

void NativeHeap::SampleSlow(void* p, std::size_t size, const void* caller,
                            std::size_t footprint) noexcept {
  detail::ThreadSampler& t = detail::tls_native_sampler;
  if (size == 0) return;
  const HookGuard guard(GuardedHook::kNativeAlloc);
  if (!guard.entered()) return;  // the sample point stays pending
  if (t.rng == 0) {
    t.rng = Seed(&t);
    t.countdown = NextInterval(t) - static_cast<std::int64_t>(size);
    if (t.countdown >= 0) return;
  }
  t.countdown = NextInterval(t);
  if (!enabled_.load(std::memory_order_relaxed) ||
      frozen_.load(std::memory_order_relaxed)) {
    return;
  }
  // The Python heap's block, counted there: called from the interpreter's
  // code, or under a PyMem hook's call to the real allocator (the RAW
  // hooks mark it: their chain to malloc is tail calls, which hide it).
  if (detail::tls_sampler.nesting != 0 || ExcludedCaller(caller)) {
    interpreter_samples_.fetch_add(1, std::memory_order_relaxed);
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
  const int nframes = stacks.Capture(frames, max_frames_.load(std::memory_order_relaxed));
  const StackId python = stacks.Intern(frames, nframes);
  const void* pcs[kMaxNativeDepth];
  const std::size_t npcs = CaptureNative(pcs, nframes > 0);
  TrackerLock lock(&mu_);
  if (!enabled_.load(std::memory_order_relaxed)) return;
  ++samples_;
  const auto key = reinterpret_cast<std::uintptr_t>(p);
  auto existing = blocks_.find(key);
  if (existing != blocks_.end()) {
    // Freed behind our back (by code that calls free without our hook, or
    // with the guard set): forget it.
    freed_bytes_ += ForgetLocked(existing);
    filter_.Remove(p);
  }
  const NativeStackId native = InternNativeLocked(pcs, npcs);
  StackStats* stats = nullptr;
  if (blocks_.size() >= max_blocks_ ||
      (stats = InsertLocked(key, Block{footprint, weight, python, native})) == nullptr) {
    ++dropped_;
    return;
  }
  const double bytes = static_cast<double>(footprint) * weight;
  stats->live_bytes += bytes;
  stats->live_count += weight;
  stats->allocated_bytes += bytes;
  stats->allocated_count += weight;
  allocated_bytes_ += bytes;
  filter_.Add(p);
}

void NativeHeap::FreeSlow(void* p) noexcept {
  const HookGuard guard(GuardedHook::kNativeFree);
  if (!guard.entered()) return;  // forgotten when the address is sampled again
  TrackerLock lock(&mu_);
  auto it = blocks_.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == blocks_.end()) return;  // a filter false positive
  freed_bytes_ += ForgetLocked(it);
  filter_.Remove(p);
}

NativeStackId NativeHeap::InternNativeLocked(const void* const* pcs,
                                             std::size_t n) noexcept {
  if (n == 0) return kNoNativeStack;
  if (native_capacity_ == 0) return kNativeStackOverflow;
  const std::uint64_t hash = HashPcs(pcs, n);
  std::size_t slot = hash & native_index_mask_;
  while (true) {
    const std::uint32_t id = native_index_[slot];
    if (id == 0) break;
    const NativeStack& s = native_[id];
    if (s.hash == hash && s.depth == n &&
        std::equal(pcs, pcs + n, static_cast<const void* const*>(s.pcs))) {
      return id;
    }
    slot = (slot + 1) & native_index_mask_;
  }
  if (native_used_ >= native_capacity_) {
    ++stacks_full_;
    return kNativeStackOverflow;
  }
  const auto id = static_cast<std::uint32_t>(native_used_++);
  NativeStack& s = native_[id];
  s.hash = hash;
  s.depth = static_cast<std::uint32_t>(n);
  std::copy(pcs, pcs + n, s.pcs);
  native_index_[slot] = id;
  return id;
}

NativeHeap::StackStats* NativeHeap::StatsLocked(StackId python,
                                                NativeStackId native) noexcept {
  try {
    const ReservedInsert insert(&stacks_reserve_, stacks_);
    if (!insert.ok()) return nullptr;
    return &stacks_.try_emplace(StatsKey(python, native)).first->second;
  } catch (...) {
    return nullptr;
  }
}

NativeHeap::StackStats* NativeHeap::InsertLocked(std::uintptr_t key,
                                                 const Block& block) noexcept {
  try {
    const std::uint64_t stats_key = StatsKey(block.python, block.native);
    const bool new_stack = !stacks_.contains(stats_key);
    StackStats* stats = StatsLocked(block.python, block.native);
    if (stats == nullptr) return nullptr;
    const ReservedInsert block_insert(&blocks_reserve_, blocks_);
    if (!block_insert.ok()) {
      if (new_stack) stacks_.erase(stats_key);
      return nullptr;
    }
    blocks_.emplace(key, block);
    return stats;
  } catch (...) {
    return nullptr;
  }
}

double NativeHeap::ForgetLocked(TableMap<std::uintptr_t, Block>::iterator it) noexcept {
  const Block& block = it->second;
  const double bytes = static_cast<double>(block.size) * block.weight;
  auto stats = stacks_.find(StatsKey(block.python, block.native));
  if (stats != stacks_.end()) {
    stats->second.live_bytes -= bytes;
    stats->second.live_count -= block.weight;
  }
  blocks_.erase(it);
  return bytes;
}

// --- anonymous mappings: exact -------------------------------------------------

void NativeHeap::OnMap(void* p, std::size_t length, const void* caller) noexcept {
  // pymalloc's arenas and the PyMem hooks' calls: the Python heap's.
  if (length == 0 || detail::tls_sampler.nesting != 0 || ExcludedCaller(caller)) return;
  const HookGuard guard(GuardedHook::kNativeAlloc);
  if (!guard.entered()) return;
  if (!enabled_.load(std::memory_order_relaxed) ||
      frozen_.load(std::memory_order_relaxed)) {
    return;
  }
  LeakprobeRawFrame frames[StackTable::kMaxDepth];
  StackTable& stacks = StackTable::Instance();
  const int nframes = stacks.Capture(frames, max_frames_.load(std::memory_order_relaxed));
  const StackId python = stacks.Intern(frames, nframes);
  const void* pcs[kMaxNativeDepth];
  const std::size_t npcs = CaptureNative(pcs, nframes > 0);
  TrackerLock lock(&mu_);
  if (!enabled_.load(std::memory_order_relaxed)) return;
  const NativeStackId native = InternNativeLocked(pcs, npcs);
  StackStats* stats =
      regions_.size() < max_regions_ ? StatsLocked(python, native) : nullptr;
  if (stats == nullptr) {
    ++mmap_dropped_;
    return;
  }
  try {
    const auto start = reinterpret_cast<std::uintptr_t>(p);
    auto old = regions_.find(start);
    if (old != regions_.end()) {  // a fixed mapping replaced it
      ForgetRegionBytesLocked(old->second, old->second.length, true);
      old->second = Region{length, python, native};
    } else {
      regions_.emplace(start, Region{length, python, native});
    }
  } catch (...) {
    ++mmap_dropped_;
    return;
  }
  const auto bytes = static_cast<double>(length);
  stats->live_bytes += bytes;
  stats->live_count += 1;
  stats->allocated_bytes += bytes;
  stats->allocated_count += 1;
  mmap_bytes_ += length;
  region_count_.store(regions_.size(), std::memory_order_relaxed);
}

void NativeHeap::ForgetRegionBytesLocked(const Region& region, std::uint64_t bytes,
                                         bool whole) noexcept {
  auto stats = stacks_.find(StatsKey(region.python, region.native));
  if (stats != stacks_.end()) {
    stats->second.live_bytes -= static_cast<double>(bytes);
    if (whole) stats->second.live_count -= 1;
  }
  mmap_bytes_ -= std::min<std::uint64_t>(mmap_bytes_, bytes);
}

void NativeHeap::OnUnmap(void* p, std::size_t length) noexcept {
  const HookGuard guard(GuardedHook::kNativeFree);
  if (!guard.entered()) return;
  TrackerLock lock(&mu_);
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t end = start + length;
  auto it = regions_.upper_bound(start);
  if (it != regions_.begin()) --it;
  while (it != regions_.end() && it->first < end) {
    const std::uintptr_t r_start = it->first;
    const std::uintptr_t r_end = r_start + it->second.length;
    if (r_end <= start) {
      ++it;
      continue;
    }
    const Region region = it->second;
    const std::uintptr_t cut_lo = std::max(r_start, start);
    const std::uintptr_t cut_hi = std::min(r_end, end);
    it = regions_.erase(it);
    // What is left of the region on either side stays mapped.
    std::uint64_t removed = cut_hi - cut_lo;
    bool whole = r_start >= cut_lo && cut_hi >= r_end;
    try {
      if (r_start < cut_lo) {
        regions_.emplace(r_start, Region{cut_lo - r_start, region.python, region.native});
      }
      if (cut_hi < r_end) {
        it =
            regions_.emplace(cut_hi, Region{r_end - cut_hi, region.python, region.native})
                .first;
        ++it;
      }
    } catch (...) {  // out of memory: the remainder is forgotten too
      removed = region.length;
      whole = true;
      ++mmap_dropped_;
    }
    ForgetRegionBytesLocked(region, removed, whole);
  }
  region_count_.store(regions_.size(), std::memory_order_relaxed);
}

// --- control and cold path ----------------------------------------------------

void NativeHeap::Start(const NativeHeapConfig& config) {
  std::size_t slots = 16;
  while (slots < 2 * config.max_stacks) slots *= 2;
  auto stacks = std::make_unique<NativeStack[]>(config.max_stacks + 2);
  auto index = std::make_unique<std::uint32_t[]>(slots);
  {
    TrackerLock lock(&mu_);
    sample_bytes_.store(std::max<std::uint64_t>(config.sample_bytes, 1));
    max_frames_.store(
        std::clamp(config.max_frames, 1, static_cast<int>(StackTable::kMaxDepth)));
    max_blocks_ = config.max_blocks;
    max_regions_ = config.max_regions;
    top_sites_.store(config.top_sites);
    if (native_capacity_ != config.max_stacks + 2 || blocks_.empty()) {
      native_.swap(stacks);
      native_index_.swap(index);
      native_capacity_ = config.max_stacks + 2;
      native_index_mask_ = slots - 1;
      native_used_ = 2;
    }
    frozen_.store(false);
    enabled_.store(true);
  }
  // libunwind's caches and its first-use set-up, outside any hook.
  unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
  void* warm[4];
  CaptureNativeStack(warm, 4);
}

void NativeHeap::Stop() {
  std::unique_ptr<NativeStack[]> stacks;
  std::unique_ptr<std::uint32_t[]> index;
  TrackerLock lock(&mu_);
  enabled_.store(false);
  blocks_.clear();
  stacks_.clear();
  regions_.clear();
  region_count_.store(0);
  allocated_bytes_ = freed_bytes_ = 0;
  mmap_bytes_ = 0;
  samples_ = dropped_ = stacks_full_ = mmap_dropped_ = 0;
  interpreter_samples_.store(0);
  own_thread_samples_.store(0);
  native_used_ = 2;
  if (native_index_) std::fill_n(native_index_.get(), native_index_mask_ + 1, 0U);
  filter_.Clear();
}

void NativeHeap::Freeze() noexcept { frozen_.store(true); }

std::vector<const void*> NativeHeap::PcsOfLocked(NativeStackId id) const {
  if (id < 2 || id >= native_used_) return {};
  const NativeStack& s = native_[id];
  return std::vector<const void*>(s.pcs, s.pcs + s.depth);
}

std::size_t NativeHeap::NativeSiteIndex(const std::vector<const void*>& pcs) {
  for (std::size_t i = 0; i < pcs.size(); ++i) {
    Dl_info info{};
    if (dladdr(pcs[i], &info) == 0) {
      return i;  // anonymous code (a JIT): the application's
    }
    if (!RuntimeObject(info.dli_fname, info.dli_fbase)) return i;
  }
  return 0;
}

std::vector<NativeStackStat> NativeHeap::Stacks() const {
  std::vector<NativeStackStat> out;
  TrackerLock lock(&mu_);
  out.reserve(stacks_.size());
  for (const auto& [key, stats] : stacks_) {
    out.push_back({static_cast<StackId>(key >> 32),
                   PcsOfLocked(static_cast<NativeStackId>(key & 0xFFFFFFFFU)),
                   stats.live_bytes, stats.live_count, stats.allocated_bytes,
                   stats.allocated_count});
  }
  return out;
}

NativeSummary NativeHeap::Summary(std::size_t top_n) const {
  NativeSummary summary;
  std::vector<NativeStackStat> live;
  {
    TrackerLock lock(&mu_);
    summary.enabled = enabled_.load();
    summary.sample_bytes = sample_bytes_.load();
    summary.allocated_bytes = allocated_bytes_;
    summary.freed_bytes = freed_bytes_;
    summary.live_bytes = std::max(0.0, allocated_bytes_ - freed_bytes_);
    summary.samples = samples_;
    summary.live_blocks = blocks_.size();
    summary.dropped_samples = dropped_;
    summary.stacks_full = stacks_full_;
    summary.mmap_bytes = mmap_bytes_;
    summary.mmap_regions = regions_.size();
    summary.mmap_dropped = mmap_dropped_;
    summary.memory_bytes =
        sizeof(*this) +
        blocks_.capacity() * (sizeof(std::pair<std::uintptr_t, Block>) + 1) +
        stacks_.capacity() * (sizeof(std::pair<std::uint64_t, StackStats>) + 1) +
        blocks_reserve_.bytes() + stacks_reserve_.bytes() +
        native_capacity_ * sizeof(NativeStack) +
        (native_index_ ? (native_index_mask_ + 1) * sizeof(std::uint32_t) : 0) +
        regions_.size() * (sizeof(std::pair<const std::uintptr_t, Region>) + 32);
    for (const auto& [key, stats] : stacks_) {
      if (stats.live_count > 0.5) {
        live.push_back({static_cast<StackId>(key >> 32),
                        PcsOfLocked(static_cast<NativeStackId>(key & 0xFFFFFFFFU)),
                        stats.live_bytes, stats.live_count, 0, 0});
      }
    }
  }
  summary.interpreter_samples = interpreter_samples_.load(std::memory_order_relaxed);
  summary.own_thread_samples = own_thread_samples_.load(std::memory_order_relaxed);
  // Sites are named outside the lock: dladdr takes the loader's lock. The
  // native-only sites in one call: a call that misses the symbolizer's
  // cache reads every object's symbols afresh.
  std::vector<const void*> native_sites;
  for (const NativeStackStat& s : live) {
    if (s.python == kEmptyStack && !s.pcs.empty()) {
      native_sites.push_back(s.pcs[NativeSiteIndex(s.pcs)]);
    }
  }
  const std::vector<std::string> native_names = DescribeAddresses(native_sites);
  std::size_t next_native = 0;
  const StackTable& table = StackTable::Instance();
  absl::flat_hash_map<std::string, NativeSite> sites;
  for (const NativeStackStat& s : live) {
    std::string name;
    if (s.python != kEmptyStack) {
      name = table.SiteOf(s.python);
    } else if (!s.pcs.empty()) {
      name = native_names[next_native++];
    } else {
      name = "<native>";
    }
    NativeSite& site = sites.try_emplace(name, NativeSite{name, 0, 0}).first->second;
    site.live_bytes += s.live_bytes;
    site.live_count += s.live_count;
  }
  std::vector<NativeSite> ranked;
  ranked.reserve(sites.size());
  for (auto& [name, site] : sites) ranked.push_back(std::move(site));
  const std::size_t n = std::min(top_n, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(n),
                    ranked.end(), [](const NativeSite& a, const NativeSite& b) {
                      return a.live_bytes != b.live_bytes ? a.live_bytes > b.live_bytes
                                                          : a.site < b.site;
                    });
  ranked.resize(n);
  summary.top_sites = std::move(ranked);
  return summary;
}

}  // namespace leakprobe
