// The fd section of the snapshot (see leakprobe/fd/fd_summary.h).
#include "leakprobe/fd/fd_summary.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "leakprobe/fd/fd_owners.h"
#include "leakprobe/fd/fd_reconcile.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/fd/socket_info.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/stacks/stack_table.h"

namespace leakprobe {
namespace {

std::atomic<std::size_t> g_top_sites{10};

// What summaries keep between them: the TCP states of the last refresh, and
// the fd kinds each owner type has been seen holding.
struct SummaryCache {
  Mutex mu;
  TcpStateCounts counts ABSL_GUARDED_BY(mu){};
  // Owner type name -> FdOwnerCount::kinds_seen; bounded by the owner
  // table (FdOwners::kMaxTypes + 1 names).
  absl::flat_hash_map<std::string, std::uint32_t> owner_kinds ABSL_GUARDED_BY(mu);
};

SummaryCache& Cache() {
  // Leaked: scrapes may run during exit.
  static SummaryCache* const cache = [] {
    auto* c = new SummaryCache();
    RegisterForkLock(ForkStage::kFdSummary, &c->mu);
    return c;
  }();
  return *cache;
}

}  // namespace

void SetFdTopSites(std::size_t n) noexcept {
  g_top_sites.store(n, std::memory_order_relaxed);
}
std::size_t FdTopSites() noexcept { return g_top_sites.load(std::memory_order_relaxed); }

namespace {

// by_owner: open fds by owner id, by kind.
using OwnerKindCounts = std::array<std::uint64_t, kFdKindCount>;

void SummarizeOwners(const absl::flat_hash_map<std::uint32_t, OwnerKindCounts>& by_owner,
                     FdSummary* s) {
  const FdOwners& owners = ProcessFdOwners();
  s->owner_overflows = owners.overflows();
  const std::vector<std::string> types = owners.Types();  // by id
  std::map<std::string, FdOwnerCount> by_type;            // by name
  for (std::size_t id = 2; id < types.size(); ++id) by_type.try_emplace(types[id]);
  if (s->owner_overflows > 0) by_type.try_emplace(kOverflowOwnerType);
  for (const auto& [id, counts] : by_owner) {
    if (id >= types.size()) continue;
    FdOwnerCount& owner = by_type[types[id]];
    for (std::size_t k = 0; k < kFdKindCount; ++k) owner.open_by_kind[k] += counts[k];
  }
  SummaryCache& cache = Cache();
  MutexLock lock(&cache.mu);
  s->owners.reserve(by_type.size());
  for (auto& [type, owner] : by_type) {
    std::uint32_t& seen = cache.owner_kinds[type];
    for (std::size_t k = 0; k < kFdKindCount; ++k) {
      if (owner.open_by_kind[k] > 0) seen |= 1u << k;
    }
    owner.kinds_seen = seen;
    owner.owner = type;
    s->owners.push_back(std::move(owner));
  }
}

}  // namespace

std::array<std::int64_t, kFdKindCount> CountApplicationFdsSince(
    const FdTable& table, const FdTable::WorkMark& mark, std::uint64_t* lost) {
  std::array<std::int64_t, kFdKindCount> counts{};
  const StackTable& stacks = StackTable::Instance();
  const auto count_open = [&](const FdRecord& record) {
    // fcntl: a record of an fd closed unseen (close_range) is not counted,
    // without a reconciliation's read of /proc/self/fd on every run.
    if (record.sequence > mark.sequence && record.attributed &&
        stacks.ReachesApplication(record.stack_id) && fcntl(record.fd, F_GETFD) != -1) {
      ++counts[static_cast<std::size_t>(record.kind)];
    }
  };
  std::uint64_t unlogged = 0;
  const std::vector<FdTable::OpenedRecord> opened =
      table.OpenedSince(mark.opens, &unlogged);
  if (unlogged == 0) {
    for (const FdTable::OpenedRecord& created : opened) {
      // Still that record: not closed, nor its number reused since.
      const std::optional<FdRecord> record = table.Find(created.fd);
      if (record && record->sequence == created.sequence) count_open(*record);
    }
  } else {
    for (const FdRecord& record : table.OpenFds()) count_open(record);
  }
  std::uint64_t missing = 0;
  for (const FdTable::ClosedRecord& closed : table.ClosedSince(mark.closes, &missing)) {
    if (closed.sequence <= mark.sequence && stacks.ReachesApplication(closed.stack_id)) {
      --counts[static_cast<std::size_t>(closed.kind)];
    }
  }
  if (lost != nullptr) *lost = missing;
  return counts;
}

FdSummary SummarizeFds(const FdTable& table) {
  FdSummary s;
  const FdCounters c = table.Counters();
  s.opened = c.opened;
  s.closed = c.closed;
  s.dropped = c.dropped;
  s.replaced = c.replaced;
  s.conflicts = c.conflicts;
  const ReconcileStats r = GetReconcileStats();
  s.reconciles = r.reconciles;
  s.reconcile_seconds = r.last_seconds;
  {
    SummaryCache& cache = Cache();
    MutexLock lock(&cache.mu);
    s.tcp_states = cache.counts;
  }

  absl::flat_hash_map<std::uint32_t, std::uint64_t> by_stack;
  absl::flat_hash_map<std::uint32_t, OwnerKindCounts> by_owner;
  for (const FdRecord& record : table.OpenFds()) {
    const auto kind = static_cast<std::size_t>(record.kind);
    ++s.open[kind];
    if (record.owner != kNoOwner) ++by_owner[record.owner][kind];
    if (record.attributed) {
      ++by_stack[record.stack_id];
    } else {
      ++s.unattributed;
    }
  }
  SummarizeOwners(by_owner, &s);
  const std::size_t top = FdTopSites();
  if (top == 0) return s;
  // Stacks with the same attribution site count together.
  const StackTable& stacks = StackTable::Instance();
  absl::flat_hash_map<std::uint64_t, FdSite> by_site;
  for (const auto& [stack, count] : by_stack) {
    FdSite& site = by_site[stacks.SiteKey(stack)];
    if (site.site.empty()) site.site = stacks.SiteOf(stack);
    site.open_fds += count;
  }
  s.top_sites.reserve(by_site.size() + 1);
  for (auto& [key, site] : by_site) s.top_sites.push_back(std::move(site));
  if (s.unattributed > 0) s.top_sites.push_back({kUnattributedSite, s.unattributed});
  std::sort(s.top_sites.begin(), s.top_sites.end(), [](const FdSite& a, const FdSite& b) {
    return a.open_fds != b.open_fds ? a.open_fds > b.open_fds : a.site < b.site;
  });
  if (s.top_sites.size() > top) s.top_sites.resize(top);
  return s;
}

double RefreshTcpStates(const FdTable& table) {
  const std::int64_t start = MonotonicNs();
  TcpStateCounts counts{};
  for (const FdRecord& record : table.OpenFds()) {
    if (record.kind == FdKind::kTcp || record.kind == FdKind::kTcp6) {
      ++counts[static_cast<std::size_t>(TcpStateOf(record.fd))];
    }
  }
  SummaryCache& cache = Cache();
  MutexLock lock(&cache.mu);
  cache.counts = counts;
  return SecondsSince(start);
}

void ClearTcpStates() {
  SummaryCache& cache = Cache();
  MutexLock lock(&cache.mu);
  cache.counts = TcpStateCounts{};
}

}  // namespace leakprobe
