// leakprobe/runtime/proc_fds.h — the one lister of this process's open fds
// (/proc/self/fd), for the reconciler, the process figures and the
// exporter's search for its own listening sockets.
//
//   std::vector<int> fds;
//   if (ListOwnFds(&fds)) for (int fd : fds) use(fd);
//
// It reads the directory with getdents64 into one buffer (no DIR*, no
// readdir state shared between threads) and leaves out the fd it listed
// through. Cold path: never called from a hook.
// Thread-safety: stateless; any thread.
#pragma once

#include <vector>

namespace leakprobe {

// Replaces *fds with the open fds, ascending. False (and *fds empty) when
// /proc/self/fd cannot be read.
bool ListOwnFds(std::vector<int>* fds);

}  // namespace leakprobe
