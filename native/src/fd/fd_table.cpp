// The fd table (see leakprobe/fd/fd_table.h).
#include "leakprobe/fd/fd_table.h"

#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/fork.h"

namespace leakprobe {

// --- FdTable -----------------------------------------------------------------

namespace {

std::size_t KindIndex(std::uint64_t meta) noexcept {
  const std::size_t k = meta & 0xff;
  return k < kFdKindCount ? k : static_cast<std::size_t>(FdKind::kOther);
}

}  // namespace

FdTable::FdTable(std::size_t capacity)
    : capacity_(capacity), slots_(new Slot[capacity]) {}

void FdTable::RecordOpen(int fd, FdKind kind, std::uint32_t stack_id,
                         std::uint64_t call_sequence, std::uint32_t owner) noexcept {
  if (fd < 0) return;
  if (static_cast<std::size_t>(fd) >= capacity_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Slot& s = slots_[fd];
  const std::uint64_t old = s.sequence.exchange(kBusy, std::memory_order_acquire);
  if (old == kBusy) {  // another thread is recording this very fd
    conflicts_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  bool count_opened = true;
  if (old != 0) {
    const std::uint64_t old_meta = s.meta.load(std::memory_order_relaxed);
    if ((old_meta & kAttributedBit) == 0 && old > call_sequence) {
      // A reconcile found our fd between the call and now: the same fd,
      // counted once.
      if (KindIndex(old_meta) == static_cast<std::size_t>(kind)) {
        count_opened = false;
      } else {
        CountClosed(old_meta, old);
      }
    } else {  // its close happened where no hook could see it
      CountClosed(old_meta, old);
      replaced_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  const std::uint64_t sequence = Publish(
      s, fd,
      static_cast<std::uint64_t>(kind) | (std::uint64_t{stack_id} << 8) | kAttributedBit,
      FdIdentity{}, owner);
  // Sequentially consistent with Mark()'s increment and reads (on x86 a
  // plain load, as the sequence's fetch_add is a locked add either way):
  // a creation whose sequence is after a mark sees the logs kept.
  // Release (WorkLog::Append's RMW of its count): a Mark() that reads
  // this position or a later one (acquire) also reads next_sequence_ at or
  // past `sequence`, so an entry before the mark's position is never a
  // creation after its sequence.
  if (log_users_.load(std::memory_order_seq_cst) > 0) {
    opens_.Append(sequence, static_cast<std::uint64_t>(fd));
  }
  if (count_opened) {
    opened_[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
  }
}

std::uint64_t FdTable::Publish(Slot& s, int fd, std::uint64_t meta, FdIdentity identity,
                               std::uint32_t owner) noexcept {
  // Release: each payload store orders the claim before it (see Slot).
  // The coarse clock: an fd's age is reported in seconds, and this runs on
  // every creation.
  s.created_ns.store(CoarseMonotonicNs(), std::memory_order_release);
  s.meta.store(meta, std::memory_order_release);
  const std::uint64_t sequence = next_sequence_.fetch_add(1, std::memory_order_seq_cst);
  if (identity.known()) {  // only the reconciler knows it, and writes it
    s.dev.store(identity.dev, std::memory_order_release);
    s.ino.store(identity.ino, std::memory_order_release);
    s.identity_sequence.store(sequence, std::memory_order_release);
  }
  // Without an owner the old word stays: it carries an older sequence.
  if (owner != 0) s.owner.store(OwnerWord(sequence, owner), std::memory_order_release);
  std::size_t high = high_water_.load(std::memory_order_relaxed);
  const auto mine = static_cast<std::size_t>(fd) + 1;
  while (high < mine &&
         !high_water_.compare_exchange_weak(high, mine, std::memory_order_relaxed)) {
  }
  s.sequence.store(sequence, std::memory_order_release);
  return sequence;
}

bool FdTable::RecordFound(int fd, FdKind kind, FdIdentity identity) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= capacity_) return false;
  Slot& s = slots_[fd];
  std::uint64_t expected = 0;
  if (!s.sequence.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
    return false;
  }
  Publish(s, fd, static_cast<std::uint64_t>(kind), identity);
  opened_[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool FdTable::ReplaceFound(int fd, std::uint64_t sequence, FdKind kind,
                           FdIdentity identity) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= capacity_) return false;
  Slot& s = slots_[fd];
  // Read before the swap, as in RetireRange.
  const std::uint64_t old_meta = s.meta.load(std::memory_order_relaxed);
  std::uint64_t expected = sequence;
  if (sequence == 0 || sequence == kBusy ||
      !s.sequence.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) {
    return false;
  }
  CountClosed(old_meta, sequence);
  replaced_.fetch_add(1, std::memory_order_relaxed);
  Publish(s, fd, static_cast<std::uint64_t>(kind), identity);
  opened_[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
  return true;
}

void FdTable::SetIdentity(int fd, std::uint64_t sequence, FdIdentity identity) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= capacity_) return;
  Slot& s = slots_[fd];
  if (s.sequence.load(std::memory_order_acquire) != sequence) return;
  // A hook may claim the slot from here on: these stores then carry an old
  // identity_sequence, and release orders our load of `sequence` before
  // them, so a reader that sees them re-reads a newer sequence (see Slot).
  s.dev.store(identity.dev, std::memory_order_release);
  s.ino.store(identity.ino, std::memory_order_release);
  s.identity_sequence.store(sequence, std::memory_order_release);
}

bool FdTable::SetOwner(int fd, std::uint64_t sequence, std::uint32_t owner) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= capacity_ || sequence == 0 ||
      sequence == kBusy) {
    return false;
  }
  Slot& s = slots_[fd];
  if (s.sequence.load(std::memory_order_acquire) != sequence) return false;
  // As SetIdentity: if a writer claims the slot from here on, this word
  // carries the old sequence and readers of the new record ignore it.
  s.owner.store(OwnerWord(sequence, owner), std::memory_order_release);
  return true;
}

void FdTable::RetireBeforeClose(int fd) noexcept {
  // Every close() comes here: one slot, without RetireRange's loop set-up.
  // high_water_ <= capacity_, so this also bounds the index.
  if (fd < 0 ||
      static_cast<std::size_t>(fd) >= high_water_.load(std::memory_order_acquire)) {
    return;
  }
  RetireSlot(slots_[fd], kBusy - 1);
}

std::size_t FdTable::RetireRange(unsigned first, unsigned last,
                                 std::uint64_t sequence) noexcept {
  const std::size_t high = high_water_.load(std::memory_order_acquire);
  if (high == 0 || first >= high) return 0;
  std::size_t retired = 0;
  const std::size_t end = std::min<std::size_t>(last, high - 1);
  for (std::size_t fd = first; fd <= end; ++fd) {
    if (RetireSlot(slots_[fd], sequence)) ++retired;
  }
  return retired;
}

bool FdTable::RetireSlot(Slot& s, std::uint64_t sequence) noexcept {
  std::uint64_t old = s.sequence.load(std::memory_order_acquire);
  while (old != 0 && old != kBusy && old <= sequence) {
    // Read before the swap: a new record can only be written after a
    // writer claims the slot, which would make the swap fail.
    const std::uint64_t meta = s.meta.load(std::memory_order_relaxed);
    if (s.sequence.compare_exchange_weak(old, 0, std::memory_order_acq_rel)) {
      CountClosed(meta, old);
      return true;
    }
  }
  return false;
}

std::uint64_t FdTable::CurrentSequence() const noexcept {
  return next_sequence_.load(std::memory_order_acquire) - 1;
}

FdKind FdTable::KindOf(int fd) const noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= capacity_) return FdKind::kOther;
  const Slot& s = slots_[fd];
  const std::uint64_t seq = s.sequence.load(std::memory_order_acquire);
  if (seq == 0 || seq == kBusy) return FdKind::kOther;
  // Not re-checked: a hint for dup() and accept(), which may race close().
  return static_cast<FdKind>(KindIndex(s.meta.load(std::memory_order_acquire)));
}

void FdTable::CountClosed(std::uint64_t meta, std::uint64_t sequence) noexcept {
  closed_[KindIndex(meta)].fetch_add(1, std::memory_order_relaxed);
  if ((meta & kAttributedBit) == 0 || log_users_.load(std::memory_order_relaxed) <= 0) {
    return;
  }
  closes_.Append(sequence, meta);
}

void FdTable::WorkLog::Append(std::uint64_t sequence, std::uint64_t value) noexcept {
  const std::uint64_t index = count.fetch_add(1, std::memory_order_acq_rel);
  Entry& e = entries[index % kSize];
  e.stamp.exchange(0, std::memory_order_acq_rel);
  e.sequence.store(sequence, std::memory_order_release);
  e.value.store(value, std::memory_order_release);
  e.stamp.store(index + 1, std::memory_order_release);
}

std::vector<FdTable::WorkLog::Logged> FdTable::WorkLog::Since(std::uint64_t mark,
                                                              std::uint64_t* lost) const {
  const std::uint64_t end = count.load(std::memory_order_acquire);
  std::uint64_t first = mark;
  *lost = 0;
  if (end > mark && end - mark > kSize) {
    first = end - kSize;
    *lost = first - mark;
  }
  std::vector<Logged> out;
  for (std::uint64_t index = first; index < end; ++index) {
    const Entry& e = entries[index % kSize];
    const std::uint64_t stamp = e.stamp.load(std::memory_order_acquire);
    const std::uint64_t sequence = e.sequence.load(std::memory_order_acquire);
    const std::uint64_t value = e.value.load(std::memory_order_acquire);
    if (stamp != index + 1 || e.stamp.load(std::memory_order_relaxed) != stamp) {
      ++*lost;  // still being written, or already lapped
      continue;
    }
    out.push_back({sequence, value});
  }
  return out;
}

void FdTable::KeepLogs(int delta) noexcept {
  log_users_.fetch_add(delta, std::memory_order_seq_cst);
}

FdTable::WorkMark FdTable::Mark() const noexcept {
  WorkMark mark;
  // The logs' positions first, then the sequence: a close or creation
  // logged before these positions came before this sequence was read.
  mark.closes = closes_.count.load(std::memory_order_acquire);
  mark.opens = opens_.count.load(std::memory_order_seq_cst);
  mark.sequence = next_sequence_.load(std::memory_order_seq_cst) - 1;
  return mark;
}

std::vector<FdTable::OpenedRecord> FdTable::OpenedSince(std::uint64_t mark,
                                                        std::uint64_t* lost) const {
  std::vector<OpenedRecord> out;
  for (const WorkLog::Logged& e : opens_.Since(mark, lost)) {
    out.push_back({static_cast<int>(e.value), e.sequence});
  }
  return out;
}

std::vector<FdTable::ClosedRecord> FdTable::ClosedSince(std::uint64_t mark,
                                                        std::uint64_t* lost) const {
  std::vector<ClosedRecord> out;
  for (const WorkLog::Logged& e : closes_.Since(mark, lost)) {
    out.push_back({e.sequence, static_cast<std::uint32_t>((e.value >> 8) & 0xffffffffU),
                   static_cast<FdKind>(KindIndex(e.value))});
  }
  return out;
}

std::optional<FdRecord> FdTable::Find(int fd) const {
  if (fd < 0 || static_cast<std::size_t>(fd) >= capacity_) return std::nullopt;
  const Slot& s = slots_[fd];
  // The seqlock read (see Slot): sequence numbers are never reused, so an
  // unchanged sequence means the fields belong to it. The payload loads are
  // acquire, so that one reading a later writer's store orders that
  // writer's claim before the re-check.
  const std::uint64_t before = s.sequence.load(std::memory_order_acquire);
  if (before == 0 || before == kBusy) return std::nullopt;
  FdRecord r;
  r.fd = fd;
  r.created_ns = s.created_ns.load(std::memory_order_acquire);
  const std::uint64_t meta = s.meta.load(std::memory_order_acquire);
  const std::uint64_t identity_sequence =
      s.identity_sequence.load(std::memory_order_acquire);
  const FdIdentity identity{s.dev.load(std::memory_order_acquire),
                            s.ino.load(std::memory_order_acquire)};
  const std::uint64_t owner = s.owner.load(std::memory_order_acquire);
  if (s.sequence.load(std::memory_order_relaxed) != before) return std::nullopt;
  r.sequence = before;
  r.kind = static_cast<FdKind>(KindIndex(meta));
  r.stack_id = static_cast<std::uint32_t>((meta >> 8) & 0xffffffffU);
  r.attributed = (meta & kAttributedBit) != 0;
  if (identity_sequence == before) r.identity = identity;
  if ((owner >> kOwnerBits) == (before & ((std::uint64_t{1} << (64 - kOwnerBits)) - 1))) {
    r.owner = static_cast<std::uint32_t>(owner & ((1U << kOwnerBits) - 1));
  }
  return r;
}

std::vector<FdRecord> FdTable::OpenFds() const {
  std::vector<FdRecord> out;
  const std::size_t high = high_water_.load(std::memory_order_acquire);
  for (std::size_t fd = 0; fd < high; ++fd) {
    if (auto r = Find(static_cast<int>(fd))) out.push_back(*r);
  }
  return out;
}

FdCounters FdTable::Counters() const noexcept {
  FdCounters c;
  for (std::size_t k = 0; k < kFdKindCount; ++k) {
    c.opened[k] = opened_[k].load(std::memory_order_relaxed);
    c.closed[k] = closed_[k].load(std::memory_order_relaxed);
  }
  c.dropped = dropped_.load(std::memory_order_relaxed);
  c.replaced = replaced_.load(std::memory_order_relaxed);
  c.conflicts = conflicts_.load(std::memory_order_relaxed);
  return c;
}

void FdTable::RecoverAfterFork() noexcept {
  const std::size_t high = high_water_.load(std::memory_order_relaxed);
  for (std::size_t fd = 0; fd < high; ++fd) {
    std::uint64_t busy = kBusy;
    slots_[fd].sequence.compare_exchange_strong(busy, 0, std::memory_order_relaxed);
  }
}

void FdTable::Clear() noexcept {
  const std::size_t high = high_water_.load(std::memory_order_acquire);
  for (std::size_t fd = 0; fd < high; ++fd) {
    std::uint64_t old = slots_[fd].sequence.load(std::memory_order_acquire);
    while (
        old != 0 && old != kBusy &&
        !slots_[fd].sequence.compare_exchange_weak(old, 0, std::memory_order_acq_rel)) {
    }
  }
  for (std::size_t k = 0; k < kFdKindCount; ++k) {
    opened_[k].store(0, std::memory_order_relaxed);
    closed_[k].store(0, std::memory_order_relaxed);
  }
  dropped_.store(0, std::memory_order_relaxed);
  replaced_.store(0, std::memory_order_relaxed);
  conflicts_.store(0, std::memory_order_relaxed);
}

namespace {
std::atomic<FdTable*> g_process_table{nullptr};
}  // namespace

FdTable& ProcessFdTable() {
  // Leaked: hooks run until the very end of the process.
  static FdTable* const table = [] {
    auto* t = new FdTable();
    RegisterForkHandlers(ForkStage::kFdTable,
                         {nullptr, nullptr, &RecoverProcessFdTableAfterFork});
    g_process_table.store(t, std::memory_order_release);
    return t;
  }();
  return *table;
}

void RecoverProcessFdTableAfterFork() noexcept {
  if (FdTable* t = g_process_table.load(std::memory_order_acquire)) t->RecoverAfterFork();
}

}  // namespace leakprobe
