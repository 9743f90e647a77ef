#include "leakprobe/runtime/proc_fds.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace leakprobe {
namespace {

// Appends the fds named in `dir`'s entries (excluding `dir` itself).
bool ReadEntries(int dir, std::vector<int>* fds) {
  std::vector<char> buf(std::size_t{64} * 1024);
  for (;;) {
    const long n = syscall(SYS_getdents64, dir, buf.data(), buf.size());
    if (n < 0) return false;
    if (n == 0) return true;
    for (long off = 0; off < n;) {
      // struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name.
      unsigned short reclen = 0;
      std::memcpy(&reclen, buf.data() + off + 16, sizeof reclen);
      const char* name = buf.data() + off + 19;
      if (name[0] >= '0' && name[0] <= '9') {
        int fd = 0;
        for (const char* c = name; *c >= '0' && *c <= '9'; ++c) fd = fd * 10 + (*c - '0');
        if (fd != dir) fds->push_back(fd);
      }
      off += reclen;
    }
  }
}

}  // namespace

bool ListOwnFds(std::vector<int>* fds) {
  fds->clear();
  const int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return false;
  const bool listed = ReadEntries(dir, fds);
  close(dir);
  if (!listed) {
    fds->clear();
    return false;
  }
  // procfs lists fds in order; the callers' merges rely on it, so make sure.
  if (!std::is_sorted(fds->begin(), fds->end())) std::sort(fds->begin(), fds->end());
  return true;
}

}  // namespace leakprobe
