// leakprobe/objects/containers.h — the sizes of watched and discovered
// containers (dicts, lists, caches...) and the figures of the last object
// census, as the Python sampler last measured them, for the exporter.
//
//   // sampler thread, holding the GIL:
//   ContainerStore::Instance().SetContainers({{"app:CACHE", "dict", 42, -1}});
//   // scrape thread, no GIL:
//   ContainerSummary s = ContainerStore::Instance().Summary();
//
// Only Python code can call len() on a Python object, and the scrape thread
// must never take the GIL: the sampler measures under the GIL and writes
// here; the exporter reads the last values (as the value types of
// containers_summary.h, which is what the snapshot includes).
// Thread-safety: there are no locks, so a forked child can never inherit
// one held. Every field is an atomic inside one seqlock, ordered as the fd
// table's (fd_table.h: release payload stores, acquire payload loads).
// Readers may run concurrently on any thread; while a write is in progress
// they retry, a bounded number of times (then they return an empty
// summary, counted in torn_reads). Writers (Set*) must be serialized by the
// caller: the bindings call them with the GIL held.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "leakprobe/objects/containers_summary.h"

namespace leakprobe {

class ContainerStore {
 public:
  static constexpr std::size_t kMaxContainers = 64;
  static constexpr std::size_t kMaxCensusTypes = 100;
  static constexpr std::size_t kMaxPoolRows = 128;
  static constexpr std::size_t kMaxWorkRows = 128;
  // Names and kinds longer than this are cut (at a UTF-8 boundary).
  static constexpr std::size_t kMaxNameBytes = 127;

  // The process-wide instance; never destroyed (the exporter may read it
  // during exit).
  static ContainerStore& Instance();

  // Replaces every container row; rows beyond kMaxContainers are ignored
  // (the caller sends the largest first). `watched` is the total count.
  void SetContainers(const std::vector<ContainerSize>& rows,
                     std::uint64_t watched) noexcept;
  // Replaces the census rows (beyond kMaxCensusTypes ignored) and figures.
  void SetCensus(const std::vector<CensusType>& rows,
                 const CensusFigures& figures) noexcept;

  // Replaces the pool-connection rows (beyond kMaxPoolRows ignored).
  void SetPools(const std::vector<PoolConnections>& rows) noexcept;

  // Replaces the per-unit-of-work rows (beyond kMaxWorkRows ignored).
  void SetWork(const std::vector<WorkUnit>& rows) noexcept;
  // Writes row `index` (at most the current row count: rows are added in
  // order), leaving the others: what one run's end changes. An index at or
  // beyond kMaxWorkRows, or past the end, is ignored.
  void SetWorkRow(std::size_t index, const WorkUnit& unit) noexcept;
  // Writes the figures of row `index`, which SetWorkRow or SetWork wrote
  // (its kind and name stay): what the run of a known unit changes. An
  // index not written yet is ignored.
  void SetWorkCounts(std::size_t index, std::uint64_t runs, std::int64_t retained_fds,
                     std::int64_t retained_objects, double retained_bytes) noexcept;

  ContainerSummary Summary() const;

 private:
  static constexpr std::size_t kNameWords = (kMaxNameBytes + 1) / 8;
  using Name = std::array<std::atomic<std::uint64_t>, kNameWords>;

  struct ContainerRow {
    Name name{};
    Name kind{};
    std::atomic<std::uint64_t> size{0};
    std::atomic<std::int64_t> maxsize{-1};
  };
  struct PoolRow {
    Name library{};
    Name pool{};
    Name state{};
    std::atomic<std::uint64_t> connections{0};
    std::atomic<std::int64_t> limit{-1};
  };
  struct WorkRow {
    Name kind{};
    Name name{};
    std::atomic<std::uint64_t> runs{0};
    std::atomic<std::int64_t> fds{0};
    std::atomic<std::int64_t> objects{0};
    std::atomic<double> bytes{0};
  };
  struct CensusRow {
    Name type{};
    std::atomic<std::uint64_t> objects{0};
    std::atomic<std::int64_t> growth{0};
  };

  ContainerStore() = default;
  // Claims the seqlock (single writer); returns the sequence to publish.
  std::uint64_t BeginWrite() noexcept;
  void EndWrite(std::uint64_t sequence) noexcept;
  static void StoreName(Name* to, std::string_view text) noexcept;
  // A work row's payload (inside a write: BeginWrite/EndWrite).
  static void WriteWorkRow(WorkRow* row, const WorkUnit& unit) noexcept;
  static std::string LoadName(const Name& from);

  // Even: stable; odd: a write is in progress. Protects every field below.
  std::atomic<std::uint64_t> sequence_{0};
  std::array<ContainerRow, kMaxContainers> containers_;
  std::atomic<std::size_t> container_count_{0};
  std::atomic<std::uint64_t> watched_{0};
  std::array<CensusRow, kMaxCensusTypes> census_;
  std::atomic<std::size_t> census_count_{0};
  std::atomic<std::uint64_t> census_runs_{0};
  std::atomic<std::uint64_t> census_objects_{0};
  std::atomic<double> census_pause_{0};
  std::atomic<double> census_duration_{0};
  std::array<PoolRow, kMaxPoolRows> pools_;
  std::atomic<std::size_t> pool_count_{0};
  std::array<WorkRow, kMaxWorkRows> work_;
  std::atomic<std::size_t> work_count_{0};
  mutable std::atomic<std::uint64_t> torn_reads_{0};  // reader-side counter only
};

}  // namespace leakprobe
