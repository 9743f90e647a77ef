#include "leakprobe/stacks/stack_table.h"

#include "absl/hash/hash.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace leakprobe {

std::string Frame::Describe() const {
  return absl::StrCat(filename, ":", line, " in ", function);
}

StackTable::StackTable(std::size_t max_frames, std::size_t max_stacks)
    : max_frames_(max_frames),
      max_stacks_(std::max<std::size_t>(max_stacks, 2)),
      cache_(new CacheSlot[kCacheSlots]) {
  TrackerLock lock(&mu_);
  stacks_.resize(2);  // kEmptyStack, kOverflowStack
}

StackTable& StackTable::Instance() {
  // 32768 frames and 16384 stacks: a few MiB at most (see docs/metrics.md).
  static StackTable* const table = [] {
    auto* t = new StackTable(32768, 16384);
    RegisterForkHandlers(ForkStage::kStacks, {[] { Instance().PrepareFork(); },
                                              [] { Instance().AfterFork(); },
                                              [] { Instance().AfterFork(); }});
    return t;
  }();
  return *table;
}

void StackTable::SetSource(FrameSource source) { source_ = source; }

void StackTable::SetLibraryPrefixes(std::vector<std::string> prefixes) {
  TrackerLock lock(&mu_);
  prefixes_ = std::move(prefixes);
  for (Frame& frame : frames_) frame.library = IsLibrary(frame.filename);
  for (Stack& stack : stacks_) ComputeSite(&stack);
}

int StackTable::Capture(LeakprobeRawFrame* out, int max_frames) const noexcept {
  if (source_.capture == nullptr) return 0;
  return source_.capture(out, std::min<int>(max_frames, static_cast<int>(kMaxDepth)));
}

bool StackTable::IsLibrary(const std::string& filename) const {
  if (filename.compare(0, 8, "<frozen ") == 0) return true;  // importlib's bootstrap
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

StackId StackTable::CaptureAndIntern(int max_frames) {
  if (source_.capture == nullptr) return kEmptyStack;
  LeakprobeRawFrame frames[kMaxDepth];
  const int n =
      source_.capture(frames, std::min<int>(max_frames, static_cast<int>(kMaxDepth)));
  if (n <= 0) return kEmptyStack;
  StackId cached = kEmptyStack;
  if (CacheLookup(HashRaw(frames, n), &cached)) return cached;
  return Intern(frames, n);  // hashes again: only on a miss
}

StackId StackTable::Intern(const LeakprobeRawFrame* frames, int n) {
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
    if (it != frame_index_.end()) {
      ids[i] = it->second;
      continue;
    }
    if (frames_.size() >= max_frames_ || source_.resolve == nullptr) {
      ++overflows_;
      return kOverflowStack;
    }
    LeakprobeResolvedFrame resolved;
    if (source_.resolve(&frames[i], &resolved) != 0) {
      ++overflows_;
      return kOverflowStack;
    }
    Frame frame{resolved.filename, resolved.function, resolved.line, false};
    std::string text = frame.Describe();
    auto same = frame_by_text_.find(text);
    if (same != frame_by_text_.end()) {
      ids[i] = same->second;
    } else {
      frame.library = IsLibrary(frame.filename);
      ids[i] = static_cast<std::uint32_t>(frames_.size());
      frames_.push_back(std::move(frame));
      frame_by_text_.emplace(std::move(text), ids[i]);
    }
    frame_index_.emplace(key, ids[i]);
  }
  // Looked up as a view: a stack seen before (the common case, and the one
  // fd hooks hit on every creation) costs no allocation.
  const absl::string_view key(reinterpret_cast<const char*>(ids),
                              static_cast<std::size_t>(n) * sizeof(std::uint32_t));
  auto it = stack_index_.find(key);
  if (it != stack_index_.end()) {
    CacheStore(hash, it->second);
    return it->second;
  }
  if (stacks_.size() >= max_stacks_) {
    ++overflows_;
    return kOverflowStack;
  }
  Stack stack;
  stack.frames.assign(ids, ids + n);
  ComputeSite(&stack);
  const auto id = static_cast<StackId>(stacks_.size());
  stacks_.push_back(std::move(stack));
  stack_index_.emplace(std::string(key), id);
  CacheStore(hash, id);
  return id;
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

std::uint64_t StackTable::SiteKey(StackId id) const {
  if (id == kEmptyStack || id == kOverflowStack) return id;
  TrackerLock lock(&mu_);
  if (id >= stacks_.size()) return kOverflowStack;
  const Stack& stack = stacks_[id];
  return 2 + static_cast<std::uint64_t>(stack.frames[stack.site]);
}

std::uint64_t StackTable::overflows() const {
  TrackerLock lock(&mu_);
  return overflows_;
}

std::size_t StackTable::MemoryBytes() const {
  TrackerLock lock(&mu_);
  std::size_t bytes =
      kCacheSlots * sizeof(CacheSlot) + frames_.capacity() * sizeof(Frame) +
      stacks_.capacity() * sizeof(Stack) +
      frame_index_.capacity() * (sizeof(RawKey) + sizeof(std::uint32_t) + 1) +
      stack_index_.capacity() * (sizeof(std::string) + sizeof(StackId) + 1) +
      frame_by_text_.capacity() * (sizeof(std::string) + sizeof(std::uint32_t) + 1);
  for (const Frame& frame : frames_) {
    // The strings, and the frame's text as a key of frame_by_text_.
    bytes += 2 * (frame.filename.capacity() + frame.function.capacity()) + 16;
  }
  for (const Stack& stack : stacks_) {
    bytes += stack.frames.capacity() * sizeof(std::uint32_t) * 2;  // + index key
  }
  return bytes;
}

}  // namespace leakprobe
