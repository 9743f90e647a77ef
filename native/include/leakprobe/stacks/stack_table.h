// leakprobe/stacks/stack_table.h — the one Python-stack interning service: heap
// samples, fd records and tracked objects all name their creation stack by
// a StackId from here.
//
//   LeakprobeRawFrame raw[32];
//   int n = table.Capture(raw, 32);             // hot: no allocation
//   StackId id = table.Intern(raw, n);         // slow path: interns
//   std::string where = table.SiteOf(id);      // "app.py:12 in handler"
//
// Frames are resolved (file, function, line) once, on first sight, and kept;
// stacks are kept forever. Every index has a hard cap (Limits), so memory is
// bounded however many code objects the process creates (code compiled at
// run time: eval, exec, templates):
//   frames     (file, line, function) and its text index: when full (in
//              count, or in name_bytes for names and frame lists), a stack
//              with a new frame is interned as kOverflowStack (counted);
//   positions  the raw (code object, offset) → frame index: when full, a new
//              position is resolved on every sight instead of remembered
//              (slower, still exact; counted);
//   stacks     and their index: when full, a new stack is kOverflowStack
//              (counted);
//   the recent-stack cache: fixed, 4096 slots.
// Keys are bounded too: a frame's text by LeakprobeResolvedFrame's fixed
// fields, a stack key by kMaxDepth. Stats() reports each index's size and
// overflows; MemoryBytes() estimates every index, heap blocks included.
// The attribution site of a
// stack is its innermost frame outside library code (the standard library,
// site-packages, leakprobe itself: the prefixes set by SetLibraryPrefixes,
// plus "<frozen ...>" modules); when all are library, the innermost frame
// outside leakprobe's own code (the `own` prefixes: a thread started by a
// framework is its call's, not the adapter's that counted it), else the
// innermost frame.
// Code without a file ("<string>", "<stdin>") is application code.
//
// Tasks a library spawns (asyncio): a task's own stack ends in the event
// loop, so its site would be the line that started the loop. While a step
// of such a task runs, its thread's task parent (SetTaskParent) is the
// stack that created the task; every capture on that thread is then the
// task's coroutine frames only (FrameSource::capture_task) followed by the
// parent's frames, the "stitched" stack, and the site follows the await
// chain into the application code that made the library spawn the task.
// Stitched pairs are remembered (at most kMaxStitches; past that the own
// stack is returned unstitched, counted in stacks_full).
//
// Thread-safety: all methods are thread-safe (one internal mutex). Capture
// takes no lock, and neither does Intern of a stack interned recently: a
// small lock-free cache keyed by a 64-bit hash of the raw frames answers
// before the mutex (fd hooks intern on every creation, mostly the same few
// stacks).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/runtime/table_map.h"
#include "leakprobe/stacks/python_frames.h"
#include "leakprobe/stacks/stack_stats.h"

namespace leakprobe {

using StackId = std::uint32_t;
inline constexpr StackId kEmptyStack = 0;     // no Python frames ("<native>")
inline constexpr StackId kOverflowStack = 1;  // the table was full

// The caps of a StackTable's indexes; the defaults are the process-wide
// table's.
struct StackTableLimits {
  std::size_t frames = 32768;
  // 3.5 per frame: 114688 fills an abseil table of 131072 slots to its 7/8
  // load factor, so reaching the cap never doubles the table.
  std::size_t positions = 114688;
  std::size_t stacks = 16384;
  // Heap blocks of names and frame lists (keys included): a frame or stack
  // that would pass it does not fit, as when its index is full. Typical
  // frames take ~100 bytes; names can be up to ~1.6 KiB a frame.
  std::size_t name_bytes = std::size_t{16} << 20;
};

struct Frame {
  std::string filename;
  std::string function;
  int line = -1;
  bool library = false;
  bool own = false;  // leakprobe's own code (see SetLibraryPrefixes)

  // "path:line in function"
  std::string Describe() const;
};

// Where raw frames come from: the Python frame walker in the extension; a
// fake in native tests.
struct FrameSource {
  int (*capture)(LeakprobeRawFrame* out, int max_frames) = nullptr;
  int (*resolve)(const LeakprobeRawFrame* frame, LeakprobeResolvedFrame* out) = nullptr;
  // The running coroutine chain only (see the header comment); optional.
  int (*capture_task)(LeakprobeRawFrame* out, int max_frames) = nullptr;
  // capture and capture_task for a caller that holds the GIL (cheaper);
  // optional: without them such callers use the two above.
  int (*capture_held)(LeakprobeRawFrame* out, int max_frames) = nullptr;
  int (*capture_task_held)(LeakprobeRawFrame* out, int max_frames) = nullptr;
};

namespace detail {
extern __thread std::uint32_t tls_task_parent __attribute__((tls_model("initial-exec")));
}  // namespace detail

// The stack that created the task whose step runs on this thread now
// (kEmptyStack: none); returns the previous one, to restore.
inline std::uint32_t SetTaskParent(std::uint32_t stack) noexcept {
  const std::uint32_t previous = detail::tls_task_parent;
  detail::tls_task_parent = stack;
  return previous;
}

class StackTable {
 public:
  static constexpr std::size_t kMaxDepth = 128;
  static constexpr std::size_t kMaxStitches = 65536;

  using Limits = StackTableLimits;

  explicit StackTable(const Limits& limits);
  // positions: 3.5 per frame.
  StackTable(std::size_t max_frames, std::size_t max_stacks);

  // The process-wide table (never destroyed: hooks may run during exit).
  static StackTable& Instance();

  void SetSource(FrameSource source);
  // `own`: leakprobe's own code, library code too, and never a site while
  // another frame can be.
  void SetLibraryPrefixes(std::vector<std::string> prefixes,
                          std::vector<std::string> own = {});

  // Captures up to `max_frames` raw frames of the calling thread; 0 when no
  // source is set. Inside a task step with a parent (SetTaskParent), the
  // coroutine chain only.
  // `gil_held`: the caller holds the GIL (FrameSource::capture_held).
  int Capture(LeakprobeRawFrame* out, int max_frames,
              bool gil_held = false) const noexcept;
  // Interns raw frames captured on this thread just now (they are resolved
  // from live code objects), stitched to the thread's task parent if any. Never throws:
  // out of memory, it returns kOverflowStack and counts it (out_of_memory), the tables
  // left as they were.
  StackId Intern(const LeakprobeRawFrame* frames, int n) noexcept;
  // Capture(max_frames) then Intern, for hooks that intern on every event
  // (fd creations): a stack in the recent-stack cache costs one walk of the
  // frames, one hash and one cache probe, takes no lock and resolves
  // nothing. Never throws, as Intern.
  StackId CaptureAndIntern(int max_frames, bool gil_held = false) noexcept;

  // Frames of a stack, innermost first.
  std::vector<Frame> FramesOf(StackId id) const;
  // Index into FramesOf(id) of the attribution site; 0 for an empty stack.
  std::size_t SiteIndex(StackId id) const;
  // The attribution site, "path:line in function"; "<native>" for the empty
  // stack, "[stack table full]" for the overflow stack.
  std::string SiteOf(StackId id) const;
  // Whether the stack reaches application code: its attribution site is
  // not a library frame (false for the empty and overflow stacks, and for
  // a stack of library frames only, whose site is its innermost frame).
  bool ReachesApplication(StackId id) const;
  // A key that is equal exactly for stacks with the same attribution site.
  std::uint64_t SiteKey(StackId id) const;

  // Interns that returned kOverflowStack (frames_full + stacks_full +
  // unresolved + out_of_memory of Stats()).
  std::uint64_t overflows() const;
  StackTableStats Stats() const;

  // Around fork(): the child must not inherit mu_ held by a vanished thread.
  void PrepareFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.Lock(); }
  void AfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.Unlock(); }
  // The table's own memory: the object, the cache, the vectors and hash
  // tables at their capacity, and every heap block of their strings and
  // frame lists (rounded as glibc's malloc rounds them).
  std::size_t MemoryBytes() const;

 private:
  struct RawKey {
    const void* code;
    const void* filename;
    std::int32_t offset;
    std::int32_t first_line;
    bool operator==(const RawKey& o) const {
      return code == o.code && filename == o.filename && offset == o.offset &&
             first_line == o.first_line;
    }
    template <typename H>
    friend H AbslHashValue(H h, const RawKey& k) {
      return H::combine(std::move(h), k.code, k.filename, k.offset, k.first_line);
    }
  };
  struct Stack {
    std::vector<std::uint32_t> frames;  // indexes into frames_
    std::uint32_t site = 0;             // index into frames (not frames_)
  };
  // One entry of the recent-stack cache. Written only under mu_: hash to 0,
  // id (release), hash (release); read without a lock: hash, id (acquire),
  // hash again, and used only if both hashes match the key's.
  struct CacheSlot {
    std::atomic<std::uint64_t> hash{0};
    std::atomic<StackId> id{kEmptyStack};
  };
  static constexpr std::size_t kCacheSlots = 4096;
  StackId InternOrThrow(const LeakprobeRawFrame* frames, int n);
  static std::uint64_t HashRaw(const LeakprobeRawFrame* frames, int n) noexcept;
  bool CacheLookup(std::uint64_t hash, StackId* id) const noexcept;
  void CacheStore(std::uint64_t hash, StackId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // frame_index_'s value for a position whose frame did not fit frames_:
  // remembered so that it costs no resolve on the next sight.
  static constexpr std::uint32_t kNoFrame = ~std::uint32_t{0};
  // The frame of a position not in frame_index_: resolved, then found by
  // text or added (kNoFrame when frames_ is full). False when the source
  // cannot resolve it.
  bool ResolveFrame(const LeakprobeRawFrame& raw, std::uint32_t* id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Intern without the task parent.
  StackId InternOwn(const LeakprobeRawFrame* frames, int n) noexcept;
  // `own` followed by the thread's task parent, if it has one.
  StackId Stitched(StackId own) noexcept;
  StackId StitchOrThrow(StackId own, StackId parent);
  // The stack of frame ids `ids` (n of them): found or added. `hash` is
  // the raw frames' hash to cache it under, 0 for none.
  StackId InternIdsLocked(const std::uint32_t* ids, int n, std::uint64_t hash)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::size_t MemoryBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  bool IsLibrary(const std::string& filename) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ComputeSite(Stack* stack) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets `frame`'s library and own flags from the prefixes.
  void ClassifyLocked(Frame* frame) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::size_t max_frames_;
  const std::size_t max_positions_;
  const std::size_t max_stacks_;
  const std::size_t max_name_bytes_;
  FrameSource source_;  // set once before use; read without the lock
  mutable Mutex mu_;
  std::vector<std::string> prefixes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> own_prefixes_ ABSL_GUARDED_BY(mu_);
  std::vector<Frame> frames_ ABSL_GUARDED_BY(mu_);
  // The indexes are TableMaps (leakprobe/runtime/table_map.h): Intern runs
  // in hooks, so the insert that grows one is covered by a reserve taken
  // just for it.
  TableMap<RawKey, std::uint32_t> frame_index_ ABSL_GUARDED_BY(mu_);
  // Several code positions share a line: one Frame per "path:line in function".
  TableMap<std::string, std::uint32_t> frame_by_text_ ABSL_GUARDED_BY(mu_);
  std::vector<Stack> stacks_ ABSL_GUARDED_BY(mu_);  // [0] empty, [1] overflow
  TableMap<std::string, StackId> stack_index_ ABSL_GUARDED_BY(mu_);
  // (own << 32 | parent) → stitched stack.
  TableMap<std::uint64_t, StackId> stitches_ ABSL_GUARDED_BY(mu_);
  // Heap blocks of the strings and frame lists above (keys included).
  std::size_t heap_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  StackTableStats counts_ ABSL_GUARDED_BY(mu_);  // the overflow counts only
  std::unique_ptr<CacheSlot[]> cache_;           // kCacheSlots, allocated once
};

}  // namespace leakprobe
