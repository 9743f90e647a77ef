// leakprobe/fd/fd_reconcile.h — reconciles the fd table with the kernel's
// truth, /proc/self/fd: the hooks miss fds made by raw syscalls, statically
// linked code, SCM_RIGHTS and everything opened before they were installed.
//
//   ReconcileResult r = ReconcileFds(ProcessFdTable());   // sampler thread
//   // r.added fds found without a record, r.retired records of closed fds
//
// One pass lists /proc/self/fd and, for every open fd:
//  - without a record: adds an unattributed record, its kind classified from
//    the fd (sockets by SO_DOMAIN/SO_TYPE/SO_PROTOCOL) or the readlink target
//    (pipe:[..], anon_inode:[eventfd] / [eventpoll] / [timerfd] /
//    [signalfd] / inotify, /memfd:..., else a file);
//  - with a record whose identity (st_dev, st_ino) is unknown: stores it;
//  - with a record of another identity (the number was reused behind our
//    back): replaces the record by an unattributed one (counted replaced).
// Records of fds not listed are retired (counted closed), but only records
// created before the pass began (their sequence is at most the table's
// sequence then): an fd a hook records during the pass is never retired.
// Cost: one getdents64 per ~1000 fds plus one fstat per open fd; a readlink
// (and getsockopt for sockets) per fd not seen before. docs/fd-hooks.md has
// the measured figure.
//
// Thread-safety: ReconcileFds may be called from any thread; passes are
// serialised by an internal mutex (held across fork by an atfork handler, so
// a child never inherits it locked). It takes no other lock and calls no
// Python. The other functions are thread-safe and lock-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "leakprobe/fd/fd_table.h"

namespace leakprobe {

struct ReconcileResult {
  std::size_t scanned = 0;   // fds listed in /proc/self/fd
  std::size_t added = 0;     // unattributed records added
  std::size_t retired = 0;   // records of fds no longer open
  std::size_t replaced = 0;  // records whose fd number now holds another file
  double seconds = 0;        // wall time of the pass
};

struct ReconcileStats {
  std::uint64_t reconciles = 0;  // passes since start (or the last Reset)
  double last_seconds = 0;       // wall time of the last pass
};

ReconcileResult ReconcileFds(FdTable& table);
ReconcileStats GetReconcileStats() noexcept;
void ResetReconcileStats() noexcept;

// The kind of the open fd `fd`, as the reconciler classifies it; kOther if
// it cannot tell (or the fd is not open).
FdKind ClassifyFd(int fd);
// The kind a readlink target of /proc/self/fd names, for targets other than
// "socket:[...]" (sockets need the fd: see ClassifyFd).
FdKind KindOfTarget(std::string_view target) noexcept;
// readlink of /proc/self/fd/<fd>, as valid UTF-8 (bytes of the path that
// are not are written "\xNN": leakprobe/utf8.h); "" if the fd is not open.
std::string FdTarget(int fd);

}  // namespace leakprobe
