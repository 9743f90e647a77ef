// leakprobe/objects/object_registry.h — the registry of tracked resource
// owners: named types (httpx.Client, an application's AIClient, ...), and
// one record per live tracked instance with its creation stack and time.
// It counts, per type, creations, closes and collections while still open
// (an instance garbage-collected without being closed), and answers the
// live count, the oldest live instance's age and the top creation sites.
//
//   ObjectRegistry& r = ObjectRegistry::Instance();
//   ObjectTypeId t = r.RegisterType("httpx.Client");
//   r.Add(t, weakref, stack, MonotonicNs());  // created (hot path)
//   if (r.Close(weakref)) release(weakref);    // closed
//   if (r.Collected(weakref)) release(weakref);  // the weakref's callback
//
// The registry knows nothing of Python: an instance is known by its
// `handle`, an opaque address unique to it while its record exists (the
// bindings use a weak reference whose callback calls Collected, and find
// it again from the instance through the instance's own list of weak
// references). The index is keyed by handle only. Nothing here keeps an
// instance alive.
//
// Bounds: at most kMaxTypes types (a registration beyond them gets
// kOverflowType, "[type table full]", counted); at most max_records live
// records (Start): a creation beyond it is counted (created and dropped)
// but not tracked, so its close and its collection are not seen. Records of
// a type form a list in creation order, so the oldest is its head. Per
// type, collections while open are also counted by creation stack, for at
// most kMaxCollectedSites stacks (the first seen; later ones count in one
// overflow entry): a dropped-unclosed instance is freed at once, so its
// site survives only there. Stack ids are never retired by the stack
// table, so a count kept after its record is freed never names a wrong
// site.
//
// Thread-safety: all methods are thread-safe (one mutex, taken as a
// TrackerLock so that hooks on the thread holding it pass through; it is
// the `objects` stage of the fork protocol and is taken with no other
// tracker lock held). Summary takes the stack table's lock after releasing
// its own. The registry calls nothing while holding its lock but its own
// tables (malloc included), never Python.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "leakprobe/objects/object_summary.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {

using ObjectTypeId = std::uint32_t;
// Every registration beyond the type cap (named kOverflowTypeName).
inline constexpr ObjectTypeId kOverflowType = 0;

// One live record, for the Python API's snapshots.
struct ObjectRecord {
  ObjectTypeId type = kOverflowType;
  StackId stack = kEmptyStack;
  std::int64_t created_ns = 0;  // CLOCK_MONOTONIC
  std::uint64_t sequence = 0;   // creation order, process-wide
};

class ObjectRegistry {
 public:
  static constexpr std::size_t kMaxTypes = 128;      // kOverflowType included
  static constexpr std::size_t kMaxNameBytes = 200;  // longer names are cut
  static constexpr std::size_t kDefaultMaxRecords = 100000;
  static constexpr std::size_t kMaxCollectedSites = 16;  // stacks per type

  enum class AddResult { kAdded, kDuplicate, kDropped, kDisabled, kError };

  // `stacks` names the sites in Summary (nullptr: StackTable::Instance()).
  explicit ObjectRegistry(std::size_t max_types = kMaxTypes,
                          const StackTable* stacks = nullptr);

  // The process-wide registry (never destroyed: weak reference callbacks
  // run during interpreter exit). Registers its fork stage.
  static ObjectRegistry& Instance();

  // Idempotent per name; kOverflowType when the type table is full. Works
  // whether or not tracking is on.
  ObjectTypeId RegisterType(std::string_view name);
  std::string TypeName(ObjectTypeId type) const;

  // Tracking on, with at most `max_records` live records (changeable by a
  // later Start; records above a lowered cap stay). Records kept from
  // before (a forked child's, whose instances are the child's) stay.
  void Start(std::size_t max_records, std::size_t top_sites) noexcept;
  // Tracking off: forgets every record and every count (the type names
  // stay). Returns the records' handles, for the caller to release.
  std::vector<void*> Stop();
  bool enabled() const noexcept { return enabled_.load(std::memory_order_acquire); }
  // Whether a creation now would be dropped (a hint for the caller, to
  // skip making a handle; Add decides).
  bool AtCapacity() const noexcept {
    return live_records_.load(std::memory_order_relaxed) >=
           max_records_.load(std::memory_order_relaxed);
  }

  // Hot path. kAdded: the registry owns `handle` until Close, Collected or
  // Stop gives it back; otherwise the caller keeps it. kDuplicate: `handle`
  // has a record already (nothing counted). kDropped: counted as created
  // and dropped. Never throws.
  AddResult Add(ObjectTypeId type, void* handle, StackId stack,
                std::int64_t now_ns) noexcept;
  // A creation that was not offered to Add: counted as created and
  // dropped (the record cap), or as an error (no handle could be made).
  void CountDropped(ObjectTypeId type) noexcept;
  void CountError(ObjectTypeId type) noexcept;
  // The instance of `handle` was closed: counted, its record removed.
  // Returns whether it was tracked; if so the registry no longer owns the
  // handle: the caller releases it.
  bool Close(const void* handle) noexcept;
  // The instance of `handle` was collected: counted as collected while
  // open when it was tracked, its record removed. Returns whether it was
  // tracked; if so the registry no longer owns the handle: the caller
  // releases it.
  bool Collected(const void* handle) noexcept;
  bool Tracked(const void* handle) const;
  // The live record of `handle`, if it has one.
  std::optional<ObjectRecord> Find(const void* handle) const;
  // The handles of up to `limit` live records of `type`, oldest first. The
  // caller must keep the records from being removed while it uses them
  // (with CPython: hold the GIL, which every Close and Collected runs under).
  std::vector<void*> LiveHandles(ObjectTypeId type, std::size_t limit) const;

  // Per type, in registration order (types with no event at all included).
  ObjectSummary Summary(std::int64_t now_ns) const;
  // Live instances by type id (registration order): what a unit of work
  // reads as it begins, without names, ages or sites.
  std::vector<std::uint64_t> LiveCounts() const;
  // (type name, live now - `before`'s count) of the types whose live count
  // differs from `before` (LiveCounts() earlier; a type registered since
  // counts from 0): what a unit of work left behind.
  std::vector<std::pair<std::string, std::int64_t>> LiveChangesSince(
      const std::vector<std::uint64_t>& before) const;
  std::vector<ObjectRecord> Records() const;
  std::size_t MemoryBytes() const;

  void PrepareFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.Lock(); }
  void AfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu_.Unlock(); }
  Mutex* mutex() { return &mu_; }

 private:
  static constexpr std::uint32_t kNil = ~std::uint32_t{0};
  struct Record {
    void* handle;
    std::int64_t created_ns;
    std::uint64_t sequence;
    StackId stack;
    ObjectTypeId type;
    std::uint32_t prev;  // in its type's list; next free record when free
    std::uint32_t next;
  };
  struct Type {
    std::string name;
    std::uint64_t live = 0;
    std::uint64_t created = 0;
    std::uint64_t closed = 0;
    std::uint64_t collected_open = 0;
    std::uint64_t dropped = 0;
    std::uint64_t errors = 0;
    std::uint32_t head = kNil;  // oldest live record
    std::uint32_t tail = kNil;  // newest
    // Collections while open by creation stack (at most
    // kMaxCollectedSites; linear search), and those of other stacks.
    std::vector<std::pair<StackId, std::uint64_t>> collected_sites{};
    std::uint64_t collected_sites_overflow = 0;
  };
  static std::uint64_t SiteKey(ObjectTypeId type, StackId stack) {
    return (std::uint64_t{type} << 32) | stack;
  }
  // Counts a collection while open of an instance made at `stack`.
  static void CountCollectedSite(Type* type, StackId stack) noexcept;
  using Index = absl::flat_hash_map<const void*, std::uint32_t>;
  // Removes record `index` (its index entry `found`, its list, its site
  // count).
  void RemoveLocked(std::uint32_t index, Index::iterator found)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::size_t MemoryBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::size_t max_types_;
  const StackTable* const stacks_;
  std::atomic<bool> enabled_{false};
  std::atomic<std::size_t> max_records_{kDefaultMaxRecords};
  std::atomic<std::size_t> top_sites_{5};
  std::atomic<std::size_t> live_records_{0};  // mirrors index_, for AtCapacity
  mutable Mutex mu_;
  std::vector<Type> types_ ABSL_GUARDED_BY(mu_);  // [0]: kOverflowType
  std::uint64_t type_overflows_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Record> records_ ABSL_GUARDED_BY(mu_);
  std::uint32_t free_ ABSL_GUARDED_BY(mu_) = kNil;  // free records, by `prev`
  std::uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  // A live record's handle -> the record.
  Index index_ ABSL_GUARDED_BY(mu_);
  // SiteKey(type, stack) -> live records. An entry that drops to 0 stays
  // (the next instance made there, the common case of a churning owner,
  // then costs no insert and no erase) until a new key finds the map at
  // next_site_sweep_ entries: those at 0 are erased then, and the next
  // sweep waits for twice the entries that are left (amortised O(1)).
  absl::flat_hash_map<std::uint64_t, std::uint64_t> site_live_ ABSL_GUARDED_BY(mu_);
  std::size_t next_site_sweep_ ABSL_GUARDED_BY(mu_) = kMinSiteSweep;
  // The entry of the last site added to: a churning owner is made at one
  // site over and over, and then costs no lookup. Any insert or erase in
  // site_live_ may move entries, so each one resets it (AddSiteLocked and
  // Stop are the only ones).
  std::uint64_t last_site_key_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t* last_site_ ABSL_GUARDED_BY(mu_) = nullptr;
  static constexpr std::size_t kMinSiteSweep = 1024;
  // One more live record made at `key` (a new entry may sweep, see above).
  void AddSiteLocked(std::uint64_t key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

}  // namespace leakprobe
