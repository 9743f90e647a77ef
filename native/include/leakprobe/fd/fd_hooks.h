// leakprobe/fd/fd_hooks.h — the hot path of fd tracking: hooks on the libc
// entry points that make and retire file descriptors, recording into
// ProcessFdTable() (leakprobe/fd/fd_table.h).
//
//   leakprobe::InstallFdHooks();    // every loaded object, and later ones
//   leakprobe::RemoveFdHooks();     // every entry put back
//
// The hooks (open*, creat, socket, socketpair, accept*, dup*, fcntl F_DUPFD*,
// pipe*, epoll_create*, eventfd, timerfd_create, signalfd, inotify_init*,
// memfd_create, fopen*, fclose, opendir, closedir, close, close_range) go
// through leakprobe/interpose/interpose.h; docs/fd-hooks.md lists what
// CPython's binaries import and what is and is not seen.
//
// Thread-safety: the hooks run on any thread, noexcept, lock-free, under the
// runtime's hook guard. Install/Remove are cold path and thread-safe.
#pragma once

#include <cstdint>

namespace leakprobe {

// The hook point for the stack-capture service: called on the hot path for
// every recorded creation, inside the hook's re-entry guard; must be
// noexcept, must not block, and returns an interned stack id (kNoStackId if
// it has none). nullptr (the default) records kNoStackId.
using StackIdProvider = std::uint32_t (*)() noexcept;
void SetFdStackIdProvider(StackIdProvider provider) noexcept;

// Interposes the fd calls in every loaded object (and later ones). CPython's
// _posixsubprocess is left alone: its fd calls all run in a child made with
// vfork, which shares our memory, so recording them would corrupt the
// parent's table. Idempotent; throws leakprobe::Error only on a conflicting
// hook registration.
void InstallFdHooks();
// Restores every interposed entry (all hooks of the layer, see
// Interposer::Restore) and stops recording.
void RemoveFdHooks();
bool FdHooksActive() noexcept;

}  // namespace leakprobe
