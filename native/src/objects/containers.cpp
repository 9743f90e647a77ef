#include "leakprobe/objects/containers.h"

#include <algorithm>
#include <cstring>
#include <thread>

namespace leakprobe {
namespace {

// A reader gives up after this many attempts that overlapped a write (a
// write takes microseconds; a fork in the middle of one leaves the child's
// sequence odd until the child's own sampler writes again).
constexpr int kMaxReadAttempts = 1000;

// The longest prefix of `text` of at most `limit` bytes that does not end
// inside a UTF-8 sequence.
std::string_view CutAtBoundary(std::string_view text, std::size_t limit) noexcept {
  if (text.size() <= limit) return text;
  std::size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0U) == 0x80U) --end;
  return text.substr(0, end);
}

}  // namespace

ContainerStore& ContainerStore::Instance() {
  // Deliberately leaked: exporter threads may read it during exit.
  static ContainerStore* const instance = new ContainerStore();
  return *instance;
}

std::uint64_t ContainerStore::BeginWrite() noexcept {
  // Single writer. A sequence left odd by a fork during a write (the child
  // has no writer thread any more) is claimed as if it were even.
  const std::uint64_t base =
      sequence_.load(std::memory_order_relaxed) & ~std::uint64_t{1};
  // Boehm's seqlock with acquire/release payload accesses, as the fd table
  // (fd_table.h): the claim is an RMW; every payload store below is a
  // release, so a reader whose acquire load sees one happens-after the claim
  // and its re-check of sequence_ sees the claim or later.
  sequence_.exchange(base + 1, std::memory_order_acquire);
  return base + 2;
}

void ContainerStore::EndWrite(std::uint64_t sequence) noexcept {
  sequence_.store(sequence, std::memory_order_release);
}

void ContainerStore::StoreName(Name* to, std::string_view text) noexcept {
  const std::string_view cut = CutAtBoundary(text, kMaxNameBytes);
  for (std::size_t w = 0; w < kNameWords; ++w) {
    std::uint64_t word = 0;
    const std::size_t offset = w * sizeof word;
    if (offset < cut.size()) {
      std::memcpy(&word, cut.data() + offset, std::min(sizeof word, cut.size() - offset));
    }
    (*to)[w].store(word, std::memory_order_release);
  }
}

std::string ContainerStore::LoadName(const Name& from) {
  char bytes[kNameWords * sizeof(std::uint64_t)];
  for (std::size_t w = 0; w < kNameWords; ++w) {
    const std::uint64_t word = from[w].load(std::memory_order_acquire);
    std::memcpy(bytes + w * sizeof word, &word, sizeof word);
  }
  return std::string(bytes, strnlen(bytes, sizeof bytes));
}

void ContainerStore::SetContainers(const std::vector<ContainerSize>& rows,
                                   std::uint64_t watched) noexcept {
  const std::size_t n = std::min(rows.size(), kMaxContainers);
  const std::uint64_t sequence = BeginWrite();
  for (std::size_t i = 0; i < n; ++i) {
    ContainerRow& row = containers_[i];
    StoreName(&row.name, rows[i].name);
    StoreName(&row.kind, rows[i].kind);
    row.size.store(rows[i].size, std::memory_order_release);
    row.maxsize.store(rows[i].maxsize, std::memory_order_release);
  }
  container_count_.store(n, std::memory_order_release);
  watched_.store(watched, std::memory_order_release);
  EndWrite(sequence);
}

void ContainerStore::SetCensus(const std::vector<CensusType>& rows,
                               const CensusFigures& figures) noexcept {
  const std::size_t n = std::min(rows.size(), kMaxCensusTypes);
  const std::uint64_t sequence = BeginWrite();
  for (std::size_t i = 0; i < n; ++i) {
    CensusRow& row = census_[i];
    StoreName(&row.type, rows[i].type);
    row.objects.store(rows[i].objects, std::memory_order_release);
    row.growth.store(rows[i].growth, std::memory_order_release);
  }
  census_count_.store(n, std::memory_order_release);
  census_runs_.store(figures.runs, std::memory_order_release);
  census_objects_.store(figures.objects, std::memory_order_release);
  census_pause_.store(figures.pause_seconds, std::memory_order_release);
  census_duration_.store(figures.duration_seconds, std::memory_order_release);
  EndWrite(sequence);
}

void ContainerStore::SetPools(const std::vector<PoolConnections>& rows) noexcept {
  const std::size_t n = std::min(rows.size(), kMaxPoolRows);
  const std::uint64_t sequence = BeginWrite();
  for (std::size_t i = 0; i < n; ++i) {
    PoolRow& row = pools_[i];
    StoreName(&row.library, rows[i].library);
    StoreName(&row.pool, rows[i].pool);
    StoreName(&row.state, rows[i].state);
    row.connections.store(rows[i].connections, std::memory_order_release);
    row.limit.store(rows[i].limit, std::memory_order_release);
  }
  pool_count_.store(n, std::memory_order_release);
  EndWrite(sequence);
}

void ContainerStore::SetWork(const std::vector<WorkUnit>& rows) noexcept {
  const std::size_t n = std::min(rows.size(), kMaxWorkRows);
  const std::uint64_t sequence = BeginWrite();
  for (std::size_t i = 0; i < n; ++i) {
    WriteWorkRow(&work_[i], rows[i]);
  }
  work_count_.store(n, std::memory_order_release);
  EndWrite(sequence);
}

void ContainerStore::WriteWorkRow(WorkRow* row, const WorkUnit& unit) noexcept {
  StoreName(&row->kind, unit.kind);
  StoreName(&row->name, unit.name);
  row->runs.store(unit.runs, std::memory_order_release);
  row->fds.store(unit.retained_fds, std::memory_order_release);
  row->objects.store(unit.retained_objects, std::memory_order_release);
  row->bytes.store(unit.retained_bytes, std::memory_order_release);
}

void ContainerStore::SetWorkRow(std::size_t index, const WorkUnit& unit) noexcept {
  const std::size_t count = work_count_.load(std::memory_order_relaxed);
  if (index >= kMaxWorkRows || index > count) return;
  const std::uint64_t sequence = BeginWrite();
  WriteWorkRow(&work_[index], unit);
  if (index == count) work_count_.store(count + 1, std::memory_order_release);
  EndWrite(sequence);
}

void ContainerStore::SetWorkCounts(std::size_t index, std::uint64_t runs,
                                   std::int64_t retained_fds,
                                   std::int64_t retained_objects,
                                   double retained_bytes) noexcept {
  if (index >= std::min(work_count_.load(std::memory_order_relaxed), kMaxWorkRows)) {
    return;
  }
  const std::uint64_t sequence = BeginWrite();
  WorkRow& row = work_[index];
  row.runs.store(runs, std::memory_order_release);
  row.fds.store(retained_fds, std::memory_order_release);
  row.objects.store(retained_objects, std::memory_order_release);
  row.bytes.store(retained_bytes, std::memory_order_release);
  EndWrite(sequence);
}

ContainerSummary ContainerStore::Summary() const {
  ContainerSummary s;
  for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
    const std::uint64_t before = sequence_.load(std::memory_order_acquire);
    if ((before & 1U) != 0) {
      std::this_thread::yield();
      continue;
    }
    s = ContainerSummary();
    // Acquire loads: none of them may move after the re-check below.
    const std::size_t containers =
        std::min(container_count_.load(std::memory_order_acquire), kMaxContainers);
    for (std::size_t i = 0; i < containers; ++i) {
      const ContainerRow& row = containers_[i];
      s.containers.push_back({LoadName(row.name), LoadName(row.kind),
                              row.size.load(std::memory_order_acquire),
                              row.maxsize.load(std::memory_order_acquire)});
    }
    s.watched = watched_.load(std::memory_order_acquire);
    const std::size_t types =
        std::min(census_count_.load(std::memory_order_acquire), kMaxCensusTypes);
    for (std::size_t i = 0; i < types; ++i) {
      const CensusRow& row = census_[i];
      s.census.push_back({LoadName(row.type), row.objects.load(std::memory_order_acquire),
                          row.growth.load(std::memory_order_acquire)});
    }
    s.census_figures.runs = census_runs_.load(std::memory_order_acquire);
    s.census_figures.objects = census_objects_.load(std::memory_order_acquire);
    s.census_figures.pause_seconds = census_pause_.load(std::memory_order_acquire);
    s.census_figures.duration_seconds = census_duration_.load(std::memory_order_acquire);
    const std::size_t pools =
        std::min(pool_count_.load(std::memory_order_acquire), kMaxPoolRows);
    for (std::size_t i = 0; i < pools; ++i) {
      const PoolRow& row = pools_[i];
      s.pools.push_back({LoadName(row.library), LoadName(row.pool), LoadName(row.state),
                         row.connections.load(std::memory_order_acquire),
                         row.limit.load(std::memory_order_acquire)});
    }
    const std::size_t work =
        std::min(work_count_.load(std::memory_order_acquire), kMaxWorkRows);
    for (std::size_t i = 0; i < work; ++i) {
      const WorkRow& row = work_[i];
      s.work.push_back({LoadName(row.kind), LoadName(row.name),
                        row.runs.load(std::memory_order_acquire),
                        row.fds.load(std::memory_order_acquire),
                        row.objects.load(std::memory_order_acquire),
                        row.bytes.load(std::memory_order_acquire)});
    }
    if (sequence_.load(std::memory_order_relaxed) == before) {
      s.torn_reads = torn_reads_.load(std::memory_order_relaxed);
      return s;
    }
  }
  torn_reads_.fetch_add(1, std::memory_order_relaxed);
  ContainerSummary empty;
  empty.torn_reads = torn_reads_.load(std::memory_order_relaxed);
  return empty;
}

}  // namespace leakprobe
