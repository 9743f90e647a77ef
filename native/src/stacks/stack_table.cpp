#include "leakprobe/stacks/stack_table.h"

#include "absl/hash/hash.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/runtime/utf8.h"

#include <algorithm>
#include <new>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace leakprobe {

namespace detail {
__thread std::uint32_t tls_task_parent __attribute__((tls_model("initial-exec"))) =
    kEmptyStack;
}  // namespace detail

std::string Frame::Describe() const {
  return absl::StrCat(filename, ":", line, " in ", function);
}

namespace {

// What glibc's malloc takes for a request of `n` bytes: 8 bytes of header,
// rounded up to 16, at least 32.
std::size_t MallocBytes(std::size_t n) {
  return n == 0 ? 0 : std::max<std::size_t>(32, (n + 8 + 15) & ~std::size_t{15});
}

std::size_t StringHeapBytes(const std::string& s) {
  static const std::size_t kInline = std::string().capacity();  // SSO
  return s.capacity() > kInline ? MallocBytes(s.capacity() + 1) : 0;
}

// An abseil flat_hash_map: one control byte per slot plus a group's worth of
// cloned ones, and the slots.
template <typename Map>
std::size_t HashMapBytes(const Map& map) {
  if (map.capacity() == 0) return 0;
  return MallocBytes(map.capacity() * (sizeof(typename Map::value_type) + 1) + 16);
}

// The stack table never erases, so one of its maps grows exactly when its
// size reaches abseil's growth threshold for its capacity (7/8 of it); only
// that insert allocates the map's arrays. The margin of two covers the
// threshold's rounding.
template <class Map>
bool GrowsOnInsert(const Map& map) noexcept {
  const std::size_t capacity = map.capacity();
  return map.size() + 2 >= capacity - capacity / 8;
}

// Covers the one insert that grows `map` with memory for its next arrays
// (leakprobe/runtime/table_map.h), held only for that insert: a full
// table would otherwise keep a second table's worth for a growth that
// never comes. ok() is false when that memory cannot be had.
class GrowthReserve {
 public:
  template <class Map>
  explicit GrowthReserve(const Map& map) noexcept {
    if (GrowsOnInsert(map)) insert_.emplace(&reserve_, map);
  }
  GrowthReserve(const GrowthReserve&) = delete;
  GrowthReserve& operator=(const GrowthReserve&) = delete;
  bool ok() const noexcept { return !insert_.has_value() || insert_->ok(); }

 private:
  TableReserve reserve_;                  // freed after the insert_
  std::optional<ReservedInsert> insert_;  // restores the thread's reserve first
};

}  // namespace

StackTable::StackTable(const Limits& limits)
    : max_frames_(limits.frames),
      max_positions_(limits.positions),
      max_stacks_(std::max<std::size_t>(limits.stacks, 2)),
      max_name_bytes_(limits.name_bytes),
      cache_(new CacheSlot[kCacheSlots]) {
  TrackerLock lock(&mu_);
  stacks_.resize(2);  // kEmptyStack, kOverflowStack
}

StackTable::StackTable(std::size_t max_frames, std::size_t max_stacks)
    : StackTable(
          Limits{max_frames, max_frames * 7 / 2, max_stacks, Limits().name_bytes}) {}

StackTable& StackTable::Instance() {
  // Default limits: about 14 MiB when full with short paths, about 27 MiB
  // at most (see docs/heap.md).
  static StackTable* const table = [] {
    auto* t = new StackTable(Limits{});
    RegisterForkLock(ForkStage::kStacks, &t->mu_);
    return t;
  }();
  return *table;
}

void StackTable::SetSource(FrameSource source) { source_ = source; }

void StackTable::SetLibraryPrefixes(std::vector<std::string> prefixes,
                                    std::vector<std::string> own) {
  for (std::string& prefix : prefixes) prefix = ToValidUtf8(prefix);  // as file names are
  for (std::string& prefix : own) prefix = ToValidUtf8(prefix);
  TrackerLock lock(&mu_);
  prefixes_ = std::move(prefixes);
  own_prefixes_ = std::move(own);
  for (Frame& frame : frames_) ClassifyLocked(&frame);
  for (Stack& stack : stacks_) ComputeSite(&stack);
}

void StackTable::ClassifyLocked(Frame* frame) const {
  frame->own = false;
  for (const std::string& prefix : own_prefixes_) {
    if (frame->filename.compare(0, prefix.size(), prefix) == 0) frame->own = true;
  }
  frame->library = frame->own || IsLibrary(frame->filename);
}

int StackTable::Capture(LeakprobeRawFrame* out, int max_frames,
                        bool gil_held) const noexcept {
  const bool task = detail::tls_task_parent != kEmptyStack;
  auto* capture =
      task && source_.capture_task != nullptr ? source_.capture_task : source_.capture;
  if (gil_held) {
    auto* held = task && source_.capture_task != nullptr ? source_.capture_task_held
                                                         : source_.capture_held;
    if (held != nullptr) capture = held;
  }
  if (capture == nullptr) return 0;
  return capture(out, std::min<int>(max_frames, static_cast<int>(kMaxDepth)));
}

bool StackTable::IsLibrary(const std::string& filename) const {
  // Code without a file: importlib's frozen bootstrap, and the wrappers
  // libraries generate with exec() and name "<...>" (SQLAlchemy's
  // "<sqlalchemy generated warned() wrapper for ...create_engine>", attrs,
  // ...) are not the application's; "<string>" (exec of the application's
  // own text), "<stdin>" and "<console>" are.
  if (filename.size() >= 2 && filename.front() == '<' && filename.back() == '>') {
    return filename != "<string>" && filename != "<stdin>" && filename != "<console>";
  }
  for (const std::string& prefix : prefixes_) {
    if (filename.compare(0, prefix.size(), prefix) == 0) return true;
  }
  return false;
}

void StackTable::ComputeSite(Stack* stack) const {
  stack->site = 0;
  for (std::size_t i = 0; i < stack->frames.size(); ++i) {
    if (!frames_[stack->frames[i]].library) {
      stack->site = static_cast<std::uint32_t>(i);
      return;
    }
  }
  for (std::size_t i = 0; i < stack->frames.size(); ++i) {  // all library
    if (!frames_[stack->frames[i]].own) {
      stack->site = static_cast<std::uint32_t>(i);
      return;
    }
  }
}

namespace {

// The raw frames of one capture as one abseil hash input: one hash state
// runs through all frames, three words each (code, filename, offset with
// first line). Hashing frame by frame and chaining cost a seed and a
// finalisation per frame, and hashing the bytes an out-of-line call.
struct RawFrames {
  const LeakprobeRawFrame* frames;
  int n;

  template <typename H>
  friend H AbslHashValue(H h, const RawFrames& raw) {
    for (int i = 0; i < raw.n; ++i) {
      const LeakprobeRawFrame& f = raw.frames[i];
      const std::uint64_t position =
          (std::uint64_t{static_cast<std::uint32_t>(f.offset)} << 32) |
          static_cast<std::uint32_t>(f.first_line);
      // As integers: abseil mixes a pointer in twice.
      h = H::combine(std::move(h), reinterpret_cast<std::uintptr_t>(f.code),
                     reinterpret_cast<std::uintptr_t>(f.filename), position);
    }
    return H::combine(std::move(h), raw.n);
  }
};

}  // namespace

std::uint64_t StackTable::HashRaw(const LeakprobeRawFrame* frames, int n) noexcept {
  const std::uint64_t h = absl::HashOf(RawFrames{frames, n});
  return h != 0 ? h : 1;  // 0 marks an empty or changing slot
}

bool StackTable::CacheLookup(std::uint64_t hash, StackId* id) const noexcept {
  const CacheSlot& slot = cache_[hash & (kCacheSlots - 1)];
  if (slot.hash.load(std::memory_order_acquire) != hash) return false;
  const StackId found = slot.id.load(std::memory_order_acquire);
  // An id written after our first read was published after the hash was
  // cleared (release/acquire on id), so this re-read then sees 0 or the
  // new hash, never ours.
  if (slot.hash.load(std::memory_order_relaxed) != hash) return false;
  *id = found;
  return true;
}

void StackTable::CacheStore(std::uint64_t hash, StackId id) {
  CacheSlot& slot = cache_[hash & (kCacheSlots - 1)];
  slot.hash.store(0, std::memory_order_relaxed);
  slot.id.store(id, std::memory_order_release);
  slot.hash.store(hash, std::memory_order_release);
}

StackId StackTable::CaptureAndIntern(int max_frames, bool gil_held) noexcept {
  if (source_.capture == nullptr) return kEmptyStack;
  LeakprobeRawFrame frames[kMaxDepth];
  const int n = Capture(frames, max_frames, gil_held);
  StackId own = kEmptyStack;
  if (n > 0 && !CacheLookup(HashRaw(frames, n), &own)) {
    own = InternOwn(frames, n);  // hashes again: only on a miss
  }
  return detail::tls_task_parent == kEmptyStack ? own : Stitched(own);
}

StackId StackTable::Intern(const LeakprobeRawFrame* frames, int n) noexcept {
  return Stitched(InternOwn(frames, n));
}

StackId StackTable::Stitched(StackId own) noexcept {
  const StackId parent = detail::tls_task_parent;
  if (parent == kEmptyStack || own == kOverflowStack) return own;
  if (own == kEmptyStack) return parent;  // no Python frame of the task's own
  try {
    return StitchOrThrow(own, parent);
  } catch (...) {  // out of memory: the tables are as they were before
    TrackerLock lock(&mu_);
    ++counts_.out_of_memory;
    return own;
  }
}

StackId StackTable::StitchOrThrow(StackId own, StackId parent) {
  const std::uint64_t key = (std::uint64_t{own} << 32) | parent;
  TrackerLock lock(&mu_);
  const auto found = stitches_.find(key);
  if (found != stitches_.end()) return found->second;
  if (own >= stacks_.size() || parent >= stacks_.size()) return own;
  if (stitches_.size() >= kMaxStitches) {
    ++counts_.stacks_full;
    return own;
  }
  std::uint32_t ids[kMaxDepth];
  std::size_t n = 0;
  for (const StackId part : {own, parent}) {
    for (const std::uint32_t frame : stacks_[part].frames) {
      if (n < kMaxDepth) ids[n++] = frame;
    }
  }
  const StackId id = InternIdsLocked(ids, static_cast<int>(n), 0);
  if (id != kOverflowStack) {
    const GrowthReserve insert(stitches_);
    if (!insert.ok()) throw std::bad_alloc();
    stitches_.emplace(key, id);
  }
  return id;
}

StackId StackTable::InternOwn(const LeakprobeRawFrame* frames, int n) noexcept {
  try {
    return InternOrThrow(frames, n);
  } catch (...) {  // out of memory: the tables are as they were before
    TrackerLock lock(&mu_);
    ++counts_.out_of_memory;
    return kOverflowStack;
  }
}

StackId StackTable::InternOrThrow(const LeakprobeRawFrame* frames, int n) {
  if (n <= 0) return kEmptyStack;
  n = std::min<int>(n, static_cast<int>(kMaxDepth));
  const std::uint64_t hash = HashRaw(frames, n);
  StackId cached = kEmptyStack;
  if (CacheLookup(hash, &cached)) return cached;
  TrackerLock lock(&mu_);
  std::uint32_t ids[kMaxDepth];
  for (int i = 0; i < n; ++i) {
    const RawKey key{frames[i].code, frames[i].filename, frames[i].offset,
                     frames[i].first_line};
    auto it = frame_index_.find(key);
    std::uint32_t id = kNoFrame;
    if (it != frame_index_.end()) {
      id = it->second;
    } else {
      if (!ResolveFrame(frames[i], &id)) {
        ++counts_.unresolved;
        return kOverflowStack;
      }
      // Remembered even when its frame did not fit (kNoFrame): the next
      // sight then costs no resolve.
      if (frame_index_.size() < max_positions_) {
        const GrowthReserve insert(frame_index_);
        if (!insert.ok()) throw std::bad_alloc();
        frame_index_.emplace(key, id);
      } else {
        ++counts_.positions_full;  // still exact, but resolved again next time
      }
    }
    if (id == kNoFrame) {
      ++counts_.frames_full;
      return kOverflowStack;
    }
    ids[i] = id;
  }
  return InternIdsLocked(ids, n, hash);
}

StackId StackTable::InternIdsLocked(const std::uint32_t* ids, int n, std::uint64_t hash) {
  // Looked up as a view: a stack seen before (the common case, and the one
  // fd hooks hit on every creation) costs no allocation.
  const absl::string_view key(reinterpret_cast<const char*>(ids),
                              static_cast<std::size_t>(n) * sizeof(std::uint32_t));
  auto it = stack_index_.find(key);
  if (it != stack_index_.end()) {
    if (hash != 0) CacheStore(hash, it->second);
    return it->second;
  }
  // The list and the key, each n ids.
  const std::size_t stack_bytes =
      2 * MallocBytes(static_cast<std::size_t>(n) * sizeof(std::uint32_t));
  if (stacks_.size() >= max_stacks_ || heap_bytes_ + stack_bytes > max_name_bytes_) {
    ++counts_.stacks_full;
    return kOverflowStack;
  }
  const GrowthReserve insert(stack_index_);
  if (!insert.ok()) throw std::bad_alloc();
  Stack stack;
  stack.frames.assign(ids, ids + n);
  ComputeSite(&stack);
  const auto id = static_cast<StackId>(stacks_.size());
  stacks_.push_back(std::move(stack));
  try {
    heap_bytes_ +=
        StringHeapBytes(stack_index_.emplace(std::string(key), id).first->first);
  } catch (...) {
    stacks_.pop_back();  // no stack without its index key
    throw;
  }
  heap_bytes_ += MallocBytes(stacks_.back().frames.capacity() * sizeof(std::uint32_t));
  if (hash != 0) CacheStore(hash, id);
  return id;
}

bool StackTable::ResolveFrame(const LeakprobeRawFrame& raw, std::uint32_t* id) {
  LeakprobeResolvedFrame resolved;
  if (source_.resolve == nullptr || source_.resolve(&raw, &resolved) != 0) return false;
  // Names become str objects and label values: valid UTF-8 only.
  Frame frame{ToValidUtf8(resolved.filename), ToValidUtf8(resolved.function),
              resolved.line, false};
  std::string text = frame.Describe();
  auto same = frame_by_text_.find(text);
  if (same != frame_by_text_.end()) {
    *id = same->second;  // another position on a known line
  } else if (frames_.size() >= max_frames_ ||
             heap_bytes_ + 2 * MallocBytes(text.size() + 1) > max_name_bytes_) {
    *id = kNoFrame;  // its names are shorter than its text: twice the text is enough
  } else {
    const GrowthReserve insert(frame_by_text_);
    if (!insert.ok()) throw std::bad_alloc();
    ClassifyLocked(&frame);
    const auto next = static_cast<std::uint32_t>(frames_.size());
    frames_.push_back(std::move(frame));
    std::size_t text_bytes = 0;
    try {
      text_bytes =
          StringHeapBytes(frame_by_text_.emplace(std::move(text), next).first->first);
    } catch (...) {
      frames_.pop_back();  // no frame without its text key
      throw;
    }
    *id = next;
    heap_bytes_ += StringHeapBytes(frames_.back().filename) +
                   StringHeapBytes(frames_.back().function) + text_bytes;
  }
  return true;
}

std::vector<Frame> StackTable::FramesOf(StackId id) const {
  TrackerLock lock(&mu_);
  std::vector<Frame> out;
  if (id >= stacks_.size()) return out;
  for (std::uint32_t index : stacks_[id].frames) out.push_back(frames_[index]);
  return out;
}

std::size_t StackTable::SiteIndex(StackId id) const {
  TrackerLock lock(&mu_);
  return id < stacks_.size() ? stacks_[id].site : 0;
}

std::string StackTable::SiteOf(StackId id) const {
  if (id == kEmptyStack) return "<native>";
  if (id == kOverflowStack) return "[stack table full]";
  TrackerLock lock(&mu_);
  if (id >= stacks_.size()) return "<unknown>";
  const Stack& stack = stacks_[id];
  return frames_[stack.frames[stack.site]].Describe();
}

bool StackTable::ReachesApplication(StackId id) const {
  if (id == kEmptyStack || id == kOverflowStack) return false;
  TrackerLock lock(&mu_);
  if (id >= stacks_.size()) return false;
  const Stack& stack = stacks_[id];
  return !stack.frames.empty() && !frames_[stack.frames[stack.site]].library;
}

std::uint64_t StackTable::SiteKey(StackId id) const {
  if (id == kEmptyStack || id == kOverflowStack) return id;
  TrackerLock lock(&mu_);
  if (id >= stacks_.size()) return kOverflowStack;
  const Stack& stack = stacks_[id];
  return 2 + static_cast<std::uint64_t>(stack.frames[stack.site]);
}

std::uint64_t StackTable::overflows() const {
  TrackerLock lock(&mu_);
  return counts_.frames_full + counts_.stacks_full + counts_.unresolved +
         counts_.out_of_memory;
}

StackTableStats StackTable::Stats() const {
  TrackerLock lock(&mu_);
  StackTableStats stats = counts_;
  stats.frames = frames_.size();
  stats.positions = frame_index_.size();
  stats.stacks = stacks_.size();
  stats.memory_bytes = MemoryBytesLocked();
  return stats;
}

std::size_t StackTable::MemoryBytes() const {
  TrackerLock lock(&mu_);
  return MemoryBytesLocked();
}

std::size_t StackTable::MemoryBytesLocked() const {
  std::size_t prefixes = MallocBytes(prefixes_.capacity() * sizeof(std::string));
  for (const std::string& prefix : prefixes_) prefixes += StringHeapBytes(prefix);
  return sizeof(*this) + MallocBytes(kCacheSlots * sizeof(CacheSlot)) + prefixes +
         MallocBytes(frames_.capacity() * sizeof(Frame)) +
         MallocBytes(stacks_.capacity() * sizeof(Stack)) + HashMapBytes(frame_index_) +
         HashMapBytes(frame_by_text_) + HashMapBytes(stack_index_) +
         HashMapBytes(stitches_) + heap_bytes_;
}

}  // namespace leakprobe
