// leakprobe/fd/fd_summary.h — the fd section of the snapshot: open fds by kind,
// creations and closes, the creation sites holding the most open fds, TCP
// sockets by state, and the reconciler's figures.
//
//   SetFdTopSites(10);
//   RefreshTcpStates(ProcessFdTable());         // sampler, after a reconcile
//   FdSummary s = SummarizeFds(ProcessFdTable());   // scrape time
//
// SummarizeFds scans the table (lock-free) and names sites through the
// StackTable (its lock, once per distinct stack); it makes no syscall. TCP
// states need one getsockopt per TCP socket, so they are counted by
// RefreshTcpStates, which the sampler runs after each reconcile, and served
// from there: at most one sampler interval old, and a scrape storm costs no
// syscalls. docs/fd-hooks.md has the measured costs.
//
// Thread-safety: all functions may run concurrently on any thread. The TCP
// state cache has a mutex, held across fork by an atfork handler.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "leakprobe/fd/fd_kind.h"

namespace leakprobe {

class FdTable;  // leakprobe/fd/fd_table.h

// The site of records the reconciler found (creator unknown).
inline constexpr const char* kUnattributedSite = "<unattributed>";

struct FdSite {
  std::string site;  // "path:line in function", "<native>", "<unattributed>"
  std::uint64_t open_fds = 0;
};

// Open fds owned by resource objects of one type (leakprobe/fd/fd_owners.h).
struct FdOwnerCount {
  std::string owner;  // "httpx.Client", or "[owner table full]"
  std::array<std::uint64_t, kFdKindCount> open_by_kind{};
  // Bit k: the type held an fd of kind k at some summary since start (its
  // series by kind then stay, 0 included). Kept across summaries.
  std::uint32_t kinds_seen = 0;

  std::uint64_t OpenFds() const noexcept {  // all kinds
    std::uint64_t total = 0;
    for (const std::uint64_t n : open_by_kind) total += n;
    return total;
  }
};

struct FdSummary {
  std::array<std::uint64_t, kFdKindCount> open{};  // records now, by kind
  std::array<std::uint64_t, kFdKindCount> opened{};
  std::array<std::uint64_t, kFdKindCount> closed{};
  std::uint64_t unattributed = 0;  // open records the reconciler found
  std::uint64_t dropped = 0;
  std::uint64_t replaced = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t reconciles = 0;
  double reconcile_seconds = 0;  // the last reconcile's wall time
  // TCP sockets (tcp and tcp6 records) by state, as of the last refresh;
  // index 0: state unreadable.
  TcpStateCounts tcp_states{};
  std::vector<FdSite> top_sites;  // by open fds, descending; at most top-N
  // Every owner type interned so far, 0 included, by name; the overflow
  // owner only once used. Bounded by FdOwners::kMaxTypes + 1.
  std::vector<FdOwnerCount> owners;
  std::uint64_t owner_overflows = 0;  // owners interned as the overflow owner
};

// N for SummarizeFds' top sites (the `top_sites` option).
void SetFdTopSites(std::size_t n) noexcept;
std::size_t FdTopSites() noexcept;

FdSummary SummarizeFds(const FdTable& table);

// Counts the TCP records of `table` by state (one getsockopt each) and
// keeps the result for SummarizeFds. Returns its own wall time in seconds.
double RefreshTcpStates(const FdTable& table);
// Forgets the counts (tracking stopped).
void ClearTcpStates();

}  // namespace leakprobe
