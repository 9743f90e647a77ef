// The fd table's seqlock under concurrent writers, readers and a reconciler
// (see the protocol at FdTable::Slot). Also run under TSan (scripts/test.sh).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "leakprobe/fd/fd_table.h"
#include "leakprobe/runtime/clock.h"

namespace leakprobe {
namespace {

constexpr int kWriters = 8;
constexpr int kReaders = 2;
constexpr int kFds = 32;  // shared by every writer: slots change hands all the time
constexpr std::uint64_t kRing = 256;
constexpr std::uint64_t kTagBits = 24;

// The clock the table stamps records with (tick resolution): a stamp read
// before a write is then never later than the write's created_ns.
std::int64_t NowNs() { return CoarseMonotonicNs(); }

// What writer `t` records at its iteration `i`: each field follows from the
// stack id, so a record mixing two writes shows.
int FdOf(int t, std::uint64_t i) { return static_cast<int>((i * 7 + t * 5) % kFds); }
FdKind KindOf(int t, std::uint64_t i) {
  // kOther is the reconciler's.
  return static_cast<FdKind>((t + i) % (kFdKindCount - 1));
}
std::uint32_t StackOf(int t, std::uint64_t i) {
  return static_cast<std::uint32_t>((i << 4) | static_cast<std::uint64_t>(t));
}

class Checker {
 public:
  // Writer t's iteration i starts at `ns`, when the table's last sequence
  // is `sequence`: one atomic word per ring entry and figure (i's low bits
  // << 40 | the figure), so that it cannot tear.
  void Started(int t, std::uint64_t i, std::int64_t ns, std::uint64_t sequence) {
    const auto us = static_cast<std::uint64_t>((ns - start_ns_) / 1000);
    const std::uint64_t tag = (i & ((1u << kTagBits) - 1)) << 40;
    stamps_[t][i % kRing].store(tag | us, std::memory_order_relaxed);
    sequences_[t][i % kRing].store(tag | sequence, std::memory_order_relaxed);
  }

  void Check(const FdRecord& r, std::int64_t read_ns) {
    checked_.fetch_add(1, std::memory_order_relaxed);
    if (r.created_ns <= start_ns_ - 1'000'000'000 || r.created_ns > read_ns) {
      return Fail(r, "created_ns outside the test");
    }
    if (r.identity.known() && (r.identity.dev != static_cast<std::uint64_t>(r.fd) + 1 ||
                               r.identity.ino > r.sequence)) {
      return Fail(r, "identity of another record");
    }
    if (!r.attributed) {
      if (r.kind != FdKind::kOther || r.stack_id != kNoStackId) {
        return Fail(r, "reconciler's record with a writer's fields");
      }
      return;
    }
    const int t = static_cast<int>(r.stack_id & 15);
    const std::uint64_t i = r.stack_id >> 4;
    if (t >= kWriters || FdOf(t, i) != r.fd || KindOf(t, i) != r.kind) {
      return Fail(r, "kind, fd and stack of different writes");
    }
    // The writer stamped the iteration before recording it: the record's
    // creation time cannot be earlier (unless the entry was reused since).
    const std::uint64_t stamp = stamps_[t][i % kRing].load(std::memory_order_relaxed);
    if ((stamp >> 40) == (i & ((1u << kTagBits) - 1))) {
      stamped_.fetch_add(1, std::memory_order_relaxed);
      const std::int64_t started =
          start_ns_ +
          static_cast<std::int64_t>(stamp & ((std::uint64_t{1} << 40) - 1)) * 1000;
      if (r.created_ns < started) return Fail(r, "created_ns of an earlier write");
    }
    // Its sequence is newer than the table's before the write: an older one
    // is the sequence of the record this write replaced.
    const std::uint64_t seq = sequences_[t][i % kRing].load(std::memory_order_relaxed);
    if ((seq >> 40) == (i & ((1u << kTagBits) - 1)) &&
        r.sequence <= (seq & ((std::uint64_t{1} << 40) - 1))) {
      return Fail(r, "sequence of an earlier record");
    }
  }

  std::uint64_t checked() const { return checked_.load(); }
  std::uint64_t stamped() const { return stamped_.load(); }
  int failures() const { return failures_.load(); }
  std::string first_failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_failure_;
  }

 private:
  void Fail(const FdRecord& r, const char* what) {
    if (failures_.fetch_add(1) == 0) {
      std::lock_guard<std::mutex> lock(mu_);
      first_failure_ = std::string(what) + ": fd " + std::to_string(r.fd) + " kind " +
                       FdKindName(r.kind) + " stack " + std::to_string(r.stack_id) +
                       " sequence " + std::to_string(r.sequence) + " created " +
                       std::to_string(r.created_ns);
    }
  }

  const std::int64_t start_ns_ = NowNs();
  std::atomic<std::uint64_t> stamps_[kWriters][kRing] = {};
  std::atomic<std::uint64_t> sequences_[kWriters][kRing] = {};
  std::atomic<std::uint64_t> checked_{0};
  std::atomic<std::uint64_t> stamped_{0};
  std::atomic<int> failures_{0};
  std::mutex mu_;
  std::string first_failure_;
};

// 8 writers record and retire fds on 32 shared slots, a reconciler adds,
// replaces and identifies records, and 2 readers check that every record
// they read is whole: its kind, fd, stack, creation time and identity all
// belong to one write. At rest, opened - closed equals the records left.
TEST(FdTableConcurrencyTest, ReadersSeeOnlyWholeRecords) {
  FdTable table(64);
  Checker checker;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&, t] {
      for (std::uint64_t i = 1; !stop.load(std::memory_order_relaxed); ++i) {
        const int fd = FdOf(t, i);
        checker.Started(t, i, NowNs(), table.CurrentSequence());
        table.RecordOpen(fd, KindOf(t, i), StackOf(t, i));
        if (i % 3 == 0) table.RetireBeforeClose(fd);
        if (i % 16 == 0) {
          table.RetireRange(static_cast<unsigned>(fd), static_cast<unsigned>(fd) + 3,
                            table.CurrentSequence());
        }
      }
    });
  }
  threads.emplace_back([&] {  // the reconciler
    for (std::uint64_t round = 0; !stop.load(std::memory_order_relaxed); ++round) {
      for (int fd = 0; fd < kFds; ++fd) {
        const std::optional<FdRecord> r = table.Find(fd);
        const FdIdentity next{static_cast<std::uint64_t>(fd) + 1,
                              table.CurrentSequence() + 1};
        if (!r) {
          table.RecordFound(fd, FdKind::kOther, next);
        } else if (!r->identity.known()) {
          table.SetIdentity(fd, r->sequence,
                            {static_cast<std::uint64_t>(fd) + 1, r->sequence});
        } else if ((round + fd) % 4 == 0) {
          table.ReplaceFound(fd, r->sequence, FdKind::kOther, next);
        }
      }
    }
  });
  for (int k = 0; k < kReaders; ++k) {
    threads.emplace_back([&, k] {
      for (int fd = k; !stop.load(std::memory_order_relaxed); fd = (fd + 1) % kFds) {
        const std::vector<FdRecord> all = table.OpenFds();
        const std::int64_t now = NowNs();
        for (const FdRecord& r : all) checker.Check(r, now);
        if (const std::optional<FdRecord> r = table.Find(fd)) checker.Check(*r, NowNs());
      }
    });
  }
  // Every slot changes hands hundreds of thousands of times, also under TSan.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop.store(true);
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(checker.failures(), 0) << checker.first_failure();
  EXPECT_GT(checker.checked(), 1000u);
  EXPECT_GT(checker.stamped(), 100u);
  const FdCounters c = table.Counters();
  std::uint64_t opened = 0;
  std::uint64_t closed = 0;
  for (std::size_t k = 0; k < kFdKindCount; ++k) {
    opened += c.opened[k];
    closed += c.closed[k];
  }
  EXPECT_GT(c.replaced, 0u);
  EXPECT_EQ(opened - closed, table.OpenFds().size());
}

}  // namespace
}  // namespace leakprobe
