// leakprobe/fd/fd_table.h — the state of fd tracking: a bounded lock-free
// table of open fds indexed by fd number, filled by the hooks of
// leakprobe/fd/fd_hooks.h (hot path) and by the reconciler (cold path).
//
//   FdTable& table = leakprobe::ProcessFdTable();
//   for (const auto& r : table.OpenFds()) use(r.fd, r.kind);
//
// Records made by a hook are *attributed* (they carry the creating stack);
// records the reconciler (leakprobe/fd/fd_reconcile.h) adds for fds it finds
// open in /proc/self/fd without one are *unattributed*.
//
// Thread-safety: FdTable's Record*/Retire* methods are the hot path: lock-free,
// noexcept, no allocation; any thread may call them concurrently. OpenFds(),
// Find() and Counters() may run concurrently with them and see each record
// either whole or not at all. The reconciler's methods (RecordFound,
// ReplaceFound, SetIdentity) are lock-free too, but expect one caller at a
// time (the reconciler serialises itself).
// Fork: the child keeps the parent's table (it inherited the same fds); a
// record being written at the moment of fork is dropped in the child.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "leakprobe/fd/fd_kind.h"

namespace leakprobe {

// What an open fd refers to (fstat's st_dev and st_ino): tells a reused fd
// number from the file it held before. ino 0 means unknown.
struct FdIdentity {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  bool known() const noexcept { return ino != 0; }
  bool operator==(const FdIdentity& o) const noexcept {
    return dev == o.dev && ino == o.ino;
  }
  bool operator!=(const FdIdentity& o) const noexcept { return !(*this == o); }
};

// Stack id of "no stack captured".
inline constexpr std::uint32_t kNoStackId = 0;

struct FdRecord {
  int fd = -1;
  FdKind kind = FdKind::kOther;
  std::uint64_t sequence = 0;           // creation order, process-wide, from 1
  std::int64_t created_ns = 0;          // CLOCK_MONOTONIC_COARSE (tick resolution)
  std::uint32_t stack_id = kNoStackId;  // from the StackIdProvider, if one is set
  bool attributed = true;               // false: found by the reconciler, creator unknown
  FdIdentity identity;                  // learnt by the reconciler; unknown until then
  std::uint32_t owner = 0;              // leakprobe/fd/fd_owners.h id; 0: none known
};

struct FdCounters {
  // Only fds that fit the table are counted here; the rest go to `dropped`.
  std::array<std::uint64_t, kFdKindCount> opened{};
  std::array<std::uint64_t, kFdKindCount> closed{};
  std::uint64_t dropped = 0;    // creations of fds >= capacity
  std::uint64_t replaced = 0;   // a record for an fd closed where we could not
                                // see it (also counted in `closed`): its number
                                // was reused by a hooked call, or the reconciler
                                // found another file behind it
  std::uint64_t conflicts = 0;  // two threads recorded the same fd at once
                                // (only when the application races close())
};

class FdTable {
 public:
  static constexpr std::size_t kDefaultCapacity = 65536;

  explicit FdTable(std::size_t capacity = kDefaultCapacity);
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;

  // "No call sequence": RecordOpen treats any record it finds as replaced.
  static constexpr std::uint64_t kNoCallSequence = ~0ULL;

  // --- hot path ---
  // A call returned the new fd `fd`. `call_sequence` is CurrentSequence()
  // taken before that call: an unattributed record newer than it was added
  // by a reconcile that saw this very fd before we could record it, and is
  // taken over (not counted as replaced, nor opened twice).
  // `owner` (an fd_owners.h id, 0 for none) is the resource object the fd
  // was created for.
  void RecordOpen(int fd, FdKind kind, std::uint32_t stack_id,
                  std::uint64_t call_sequence = kNoCallSequence,
                  std::uint32_t owner = 0) noexcept;
  // Retires `fd`'s record; call *before* the real close, so that a thread
  // that gets the same number back afterwards records after us.
  void RetireBeforeClose(int fd) noexcept;
  // Retires the records in [first, last] created at or before `sequence`
  // (taken before the call that closed them, see CurrentSequence): records
  // of fds reopened meanwhile by other threads survive. Returns how many
  // records it retired.
  std::size_t RetireRange(unsigned first, unsigned last, std::uint64_t sequence) noexcept;
  std::uint64_t CurrentSequence() const noexcept;
  // Kind of `fd`'s record, or kOther if none.
  FdKind KindOf(int fd) const noexcept;

  // --- the reconciler (one caller at a time) ---
  // Adds an unattributed record for `fd`, found open without one. False
  // when the slot is not empty (a hook recorded the fd meanwhile) or the fd
  // does not fit (counted in `dropped`).
  bool RecordFound(int fd, FdKind kind, FdIdentity identity) noexcept;
  // Record `sequence` of `fd` describes a file that is no longer behind the
  // number: it is retired (counted closed and replaced) and an unattributed
  // record for what is there now takes its place. False when the record
  // changed meanwhile (then nothing is done).
  bool ReplaceFound(int fd, std::uint64_t sequence, FdKind kind,
                    FdIdentity identity) noexcept;
  // Remembers the identity of record `sequence` of `fd` (no-op if that
  // record is gone).
  void SetIdentity(int fd, std::uint64_t sequence, FdIdentity identity) noexcept;

  // --- adapters (any thread) ---
  // Gives record `sequence` of `fd` the owner `owner` (an fd_owners.h id),
  // learnt after its creation (e.g. from a connection object). False if
  // that record is gone. Owners are kept for sequences below 2^40.
  bool SetOwner(int fd, std::uint64_t sequence, std::uint32_t owner) noexcept;

  // --- cold path ---
  // The work logs (of closes and of creations) are kept only while someone
  // needs them: +1 when a unit of work begins, -1 when it ends
  // (leakprobe/_work.py), so that a process without units of work pays
  // nothing for them on creation and close.
  void KeepLogs(int delta) noexcept;
  // Where a unit of work begins: the last creation sequence, and the
  // positions of the close and creation logs, read in the order that makes
  // every attributed creation after `sequence` appear in the creation log
  // after `opens` (see Mark()).
  struct WorkMark {
    std::uint64_t sequence = 0;
    std::uint64_t closes = 0;
    std::uint64_t opens = 0;
  };
  WorkMark Mark() const noexcept;
  // The attributed records retired after `mark`, oldest first, from a ring
  // of the last kCloseLog; `*lost` is set to how many of them the ring no
  // longer holds (more than kCloseLog since, or entries being rewritten).
  struct ClosedRecord {
    std::uint64_t sequence = 0;
    std::uint32_t stack_id = 0;
    FdKind kind = FdKind::kOther;
  };
  static constexpr std::size_t kCloseLog = 4096;
  std::vector<ClosedRecord> ClosedSince(std::uint64_t mark, std::uint64_t* lost) const;
  // The attributed records created after `mark` (fd and sequence: whether
  // each is still open is the table's to say), oldest first, from a ring of
  // the last kOpenLog; `*lost` as in ClosedSince.
  struct OpenedRecord {
    int fd = -1;
    std::uint64_t sequence = 0;
  };
  static constexpr std::size_t kOpenLog = kCloseLog;
  std::vector<OpenedRecord> OpenedSince(std::uint64_t mark, std::uint64_t* lost) const;
  std::vector<FdRecord> OpenFds() const;
  std::optional<FdRecord> Find(int fd) const;
  FdCounters Counters() const noexcept;
  std::size_t capacity() const noexcept { return capacity_; }
  // 1 + the highest fd ever recorded: OpenFds() looks below it.
  std::size_t high_water() const noexcept {
    return high_water_.load(std::memory_order_acquire);
  }
  // For the child side of fork: frees slots whose writer was another thread
  // of the parent. No other thread exists yet.
  void RecoverAfterFork() noexcept;
  // Forgets every record and zeroes the counters (tracking stopped). A
  // record being written concurrently may survive.
  void Clear() noexcept;

 private:
  // A slot is empty (sequence 0), busy (being written) or holds a record.
  // The writer owns created_ns and meta between claiming and publishing.
  // The identity fields are written by the reconciler only (one at a time)
  // and describe the record whose sequence is identity_sequence. `owner`
  // (sequence << 24 | owner id) is written by the creating writer or by
  // SetOwner, and describes the record whose sequence it carries.
  //
  // Each slot is a seqlock whose every field is an atomic, ordered so that
  // the C++ memory model (not x86's locked xchg) makes it correct; the form
  // is the one H.-J. Boehm derives in "Can seqlocks get along with
  // programming language memory models?" (MSPC 2012), with acquire/release
  // payload accesses instead of fences, which ThreadSanitizer models:
  //  - A writer claims the slot with an RMW of `sequence` to kBusy (acquire:
  //    it may read the payload of the record it replaces).
  //  - It writes the payload with *release* stores. The claim cannot order
  //    them (a release, even acq_rel, orders only what comes before it), so
  //    each payload store releases the claim: a reader whose acquire load
  //    reads any of them then happens-after the claim, and its re-check of
  //    `sequence` reads kBusy or later, never the old sequence.
  //  - It publishes with a release store of a new sequence (never reused).
  //  - A reader loads `sequence` (acquire: that record's payload is visible),
  //    loads the payload with acquire loads, then re-checks `sequence`: the
  //    same value means every field read belongs to that record.
  //  - Retiring (and ReplaceFound) read the payload *before* their CAS
  //    (acq_rel) from that sequence: if another writer had claimed meanwhile
  //    the CAS fails; if it claims later, it happens-after the CAS (every
  //    change of `sequence` is an acquire RMW or a release store), so the
  //    read cannot see its writes.
  // On x86 every one of these is a plain load or store; Boehm's fence form
  // (a release fence after the claim, an acquire fence before the re-check)
  // costs the same but is invisible to GCC's TSan. FdTableConcurrencyTest
  // runs the protocol under TSan (scripts/test.sh).
  struct Slot {
    std::atomic<std::uint64_t> sequence{0};
    std::atomic<std::int64_t> created_ns{0};
    std::atomic<std::uint64_t> meta{0};  // kind | stack_id << 8 | attributed << 40
    std::atomic<std::uint64_t> identity_sequence{0};
    std::atomic<std::uint64_t> dev{0};
    std::atomic<std::uint64_t> ino{0};
    std::atomic<std::uint64_t> owner{0};  // sequence << kOwnerBits | owner id
  };
  static constexpr unsigned kOwnerBits = 24;
  static std::uint64_t OwnerWord(std::uint64_t sequence, std::uint32_t owner) noexcept {
    return (sequence << kOwnerBits) | (owner & ((1U << kOwnerBits) - 1));
  }
  static constexpr std::uint64_t kBusy = ~0ULL;
  static constexpr std::uint64_t kAttributedBit = std::uint64_t{1} << 40;

  // Counts a retired record of `meta`, and logs it if attributed.
  void CountClosed(std::uint64_t meta, std::uint64_t sequence) noexcept;
  // A work log: a ring of the last kSize entries (a record's sequence and
  // one value: the meta of a retired record, the fd of a created one).
  // Each entry is a seqlock like a slot's, its `stamp` being 1 + its index
  // in the log (0 while written): a writer claims a position with an
  // acq_rel RMW of `count` and the entry with an RMW of its stamp, stores
  // the payload with release and publishes the stamp; a writer lapping it
  // by kSize entries is the only other writer of the entry, and a reader
  // then sees a changed stamp.
  struct WorkLog {
    static constexpr std::size_t kSize = kCloseLog;  // = kOpenLog
    struct Entry {
      std::atomic<std::uint64_t> stamp{0};
      std::atomic<std::uint64_t> sequence{0};
      std::atomic<std::uint64_t> value{0};
    };
    struct Logged {
      std::uint64_t sequence = 0;
      std::uint64_t value = 0;
    };
    std::unique_ptr<Entry[]> entries{new Entry[kSize]};  // 96 KiB
    std::atomic<std::uint64_t> count{0};

    void Append(std::uint64_t sequence, std::uint64_t value) noexcept;
    // The entries appended after position `mark`, oldest first; `*lost`:
    // how many of them the ring no longer holds or were being rewritten.
    std::vector<Logged> Since(std::uint64_t mark, std::uint64_t* lost) const;
  };
  // Retires `s`'s record if it was created at or before `sequence`; true
  // when it did.
  bool RetireSlot(Slot& s, std::uint64_t sequence) noexcept;
  // Writes a claimed slot's record and publishes it; returns its sequence.
  std::uint64_t Publish(Slot& s, int fd, std::uint64_t meta, FdIdentity identity,
                        std::uint32_t owner = 0) noexcept;

  const std::size_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<std::uint64_t> next_sequence_{1};
  std::atomic<std::size_t> high_water_{0};  // 1 + highest fd ever recorded
  std::array<std::atomic<std::uint64_t>, kFdKindCount> opened_{};
  std::array<std::atomic<std::uint64_t>, kFdKindCount> closed_{};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> replaced_{0};
  std::atomic<std::uint64_t> conflicts_{0};
  WorkLog closes_;  // attributed records retired (value: their meta)
  WorkLog opens_;   // attributed records created (value: their fd)
  std::atomic<std::int64_t> log_users_{0};
};

// The net change, by kind, of the application's open fds since `mark`
// (FdTable::Mark(), taken with the work logs kept): the records created
// after mark.sequence that are still open, less the records created at or
// before it and retired since (FdTable::ClosedSince), counting only
// attributed records whose creating stack reaches application code
// (StackTable::ReachesApplication). What a unit of work left open: fds a
// framework opened or closed around it with no application frame on the
// creating stack (a result backend connecting lazily) count neither way; a
// connection the application replaces (a keep-alive socket closed, a new
// one opened) counts 0. Records of fds closed unseen (close_range) are
// not counted: each later record counted is checked open with
// fcntl(F_GETFD). `*lost` (if given) is how many retired records the close
// log no longer held (more than FdTable::kCloseLog since the mark): they
// are not subtracted. Defined with the summaries (fd_summary.cpp). Cold path, in the
// work's size, not the table's: the creations are read from the creation log
// (FdTable::OpenedSince) and each looked up; only when that log lost some (more than
// FdTable::kOpenLog creations since the mark) is the table scanned up to
// its high-water mark. Then the StackTable's lock, one fcntl per later
// record.
std::array<std::int64_t, kFdKindCount> CountApplicationFdsSince(
    const FdTable& table, const FdTable::WorkMark& mark, std::uint64_t* lost = nullptr);

// The process-wide table the hooks record into (created on first use,
// never destroyed). Its creation registers an atfork child handler that
// calls RecoverAfterFork.
FdTable& ProcessFdTable();
// For atfork child handlers: RecoverAfterFork on the process-wide table if it
// exists (never creates it). Async-signal-safe.
void RecoverProcessFdTableAfterFork() noexcept;

}  // namespace leakprobe
