// The fd hooks (see leakprobe/fd/fd_hooks.h).
#include "leakprobe/fd/fd_hooks.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "leakprobe/fd/fd_owners.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/interpose/interpose.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"

namespace leakprobe {

// --- Hooks -------------------------------------------------------------------

namespace {

std::atomic<FdTable*> g_table{nullptr};  // set once by InstallFdHooks
std::atomic<bool> g_active{false};       // recording on/off
std::atomic<StackIdProvider> g_stack_provider{nullptr};

// The process whose fds the table describes: set at install and in the
// child of every fork.
std::atomic<pid_t> g_pid{0};

// A child made with vfork (or clone with CLONE_VM) shares our memory: what
// it opens, closes or dup2s onto is its own business, and recording it would
// overwrite the parent's records. _posixsubprocess is excluded for that
// reason, but its vfork child still calls libpython, whose GOT is patched:
// _Py_open_noraise("/proc/self/fd") and _Py_closerange (close_range).
// The check is a getpid() system call (~0.3 us here, against ~3 us for a
// whole open+close), so it is made only where CPython's child reaches
// patched code: close_range, dup2, dup3, and opens of /proc/self/fd (the
// listing it closes fds by). Every other creation and a plain close() are
// not checked (the hot paths); CPython's child makes and closes its other
// fds through _posixsubprocess's own GOT, and the reconciler repairs what
// other code does in such a child.
bool InSharedMemoryChild() noexcept {
  const pid_t pid = g_pid.load(std::memory_order_relaxed);
  return pid != 0 && getpid() != pid;
}

// The directory CPython's vfork child opens to find the fds to close.
// Compared inline, stopping at the first difference (the terminating NUL
// of a shorter path is one): most paths differ by their second byte, and a
// strncmp call cost more than the rest of the check.
bool IsOwnFdDirectory(const char* path) noexcept {
  static constexpr char kFdDir[] = "/proc/self/fd";
  if (path == nullptr) return false;
  for (std::size_t i = 0; i < sizeof(kFdDir) - 1; ++i) {
    if (path[i] != kFdDir[i]) return false;
  }
  return true;
}

// errno is saved around everything we do after the real call.
class ErrnoKeeper {
 public:
  ErrnoKeeper() noexcept : saved_(errno) {}
  ~ErrnoKeeper() { errno = saved_; }
  ErrnoKeeper(const ErrnoKeeper&) = delete;
  ErrnoKeeper& operator=(const ErrnoKeeper&) = delete;

 private:
  const int saved_;
};

// One hooked call: decides at entry whether it records (not nested,
// recording on) and notes the table's sequence before the real call.
class HookScope {
 public:
  HookScope() noexcept : guard_(GuardedHook::kFd) {
    if (guard_.entered() && g_active.load(std::memory_order_relaxed)) {
      table_ = g_table.load(std::memory_order_acquire);
      if (table_ != nullptr) call_sequence_ = table_->CurrentSequence();
    }
  }
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

  // The table to record into, or nullptr (nested call, or recording off).
  FdTable* table() const noexcept { return table_; }
  // The table's sequence before the real call.
  std::uint64_t call_sequence() const noexcept { return call_sequence_; }
  FdKind KindOf(int fd) const noexcept {
    return table_ != nullptr ? table_->KindOf(fd) : FdKind::kOther;
  }

  // The call made the new fd `fd` (ignored if negative); `path` is the
  // path it opened, for calls that take one.
  void Opened(int fd, FdKind kind, const char* path = nullptr) const noexcept {
    if (table_ == nullptr || fd < 0) return;
    const ErrnoKeeper keep;
    if (IsOwnFdDirectory(path) && InSharedMemoryChild()) return;
    const StackIdProvider provider = g_stack_provider.load(std::memory_order_relaxed);
    table_->RecordOpen(fd, kind, provider != nullptr ? provider() : kNoStackId,
                       call_sequence_, ThreadFdOwner());
  }

 private:
  const HookGuard guard_;  // re-entry, fork, tracker lock held: pass through
  FdTable* table_ = nullptr;
  std::uint64_t call_sequence_ = FdTable::kNoCallSequence;
};

void RetireBeforeClose(FdTable* t, int fd) noexcept {
  if (t == nullptr) return;
  const ErrnoKeeper keep;
  t->RetireBeforeClose(fd);
}

// An fd that replaced `newfd` (dup2/dup3): the old one is implicitly closed.
void Duplicated(const HookScope& scope, int oldfd, int newfd) noexcept {
  FdTable* t = scope.table();
  if (t == nullptr || newfd < 0 || oldfd == newfd || InSharedMemoryChild()) return;
  const ErrnoKeeper keep;
  const FdKind kind = t->KindOf(oldfd);
  t->RetireRange(static_cast<unsigned>(newfd), static_cast<unsigned>(newfd),
                 scope.call_sequence());
  scope.Opened(newfd, kind);
}

}  // namespace

namespace {

bool NeedsMode(int flags) noexcept {
  return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

// The real functions, filled in by the interposition layer.
std::atomic<void*> real_open, real_open64, real_open_2, real_open64_2, real_openat,
    real_openat64, real_openat_2, real_openat64_2, real_creat, real_creat64, real_socket,
    real_socketpair, real_accept, real_accept4, real_dup, real_dup2, real_dup3,
    real_fcntl, real_fcntl64, real_pipe, real_pipe2, real_epoll_create,
    real_epoll_create1, real_eventfd, real_timerfd_create, real_signalfd,
    real_inotify_init, real_inotify_init1, real_memfd_create, real_fopen, real_fopen64,
    real_fclose, real_opendir, real_closedir, real_close, real_close_range;

template <typename Fn>
Fn Real(const std::atomic<void*>& p) noexcept {
  return reinterpret_cast<Fn>(p.load(std::memory_order_relaxed));
}

using OpenFn = int (*)(const char*, int, ...);
using OpenatFn = int (*)(int, const char*, int, ...);
using Open2Fn = int (*)(const char*, int);
using Openat2Fn = int (*)(int, const char*, int);
using CreatFn = int (*)(const char*, mode_t);

template <std::atomic<void*>* kReal>
int HookOpenT(const char* path, int flags, ...) noexcept {
  mode_t mode = 0;
  if (NeedsMode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  const HookScope scope;
  const int fd = Real<OpenFn>(*kReal)(path, flags, mode);
  scope.Opened(fd, FdKind::kFile, path);
  return fd;
}

template <std::atomic<void*>* kReal>
int HookOpenatT(int dirfd, const char* path, int flags, ...) noexcept {
  mode_t mode = 0;
  if (NeedsMode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  const HookScope scope;
  const int fd = Real<OpenatFn>(*kReal)(dirfd, path, flags, mode);
  scope.Opened(fd, FdKind::kFile, path);
  return fd;
}

template <std::atomic<void*>* kReal>
int HookOpen2T(const char* path, int flags) noexcept {
  const HookScope scope;
  const int fd = Real<Open2Fn>(*kReal)(path, flags);
  scope.Opened(fd, FdKind::kFile, path);
  return fd;
}

template <std::atomic<void*>* kReal>
int HookOpenat2T(int dirfd, const char* path, int flags) noexcept {
  const HookScope scope;
  const int fd = Real<Openat2Fn>(*kReal)(dirfd, path, flags);
  scope.Opened(fd, FdKind::kFile, path);
  return fd;
}

template <std::atomic<void*>* kReal>
int HookCreatT(const char* path, mode_t mode) noexcept {
  const HookScope scope;
  const int fd = Real<CreatFn>(*kReal)(path, mode);
  scope.Opened(fd, FdKind::kFile);
  return fd;
}

int HookSocket(int domain, int type, int protocol) noexcept {
  const HookScope scope;
  const int fd = Real<int (*)(int, int, int)>(real_socket)(domain, type, protocol);
  scope.Opened(fd, SocketKind(domain, type, protocol));
  return fd;
}

int HookSocketpair(int domain, int type, int protocol, int sv[2]) noexcept {
  const HookScope scope;
  const int r =
      Real<int (*)(int, int, int, int*)>(real_socketpair)(domain, type, protocol, sv);
  if (r == 0) {
    scope.Opened(sv[0], SocketKind(domain, type, protocol));
    scope.Opened(sv[1], SocketKind(domain, type, protocol));
  }
  return r;
}

int HookAccept(int fd, sockaddr* addr, socklen_t* len) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int, sockaddr*, socklen_t*)>(real_accept)(fd, addr, len);
  scope.Opened(r, scope.KindOf(fd));
  return r;
}

int HookAccept4(int fd, sockaddr* addr, socklen_t* len, int flags) noexcept {
  const HookScope scope;
  const int r =
      Real<int (*)(int, sockaddr*, socklen_t*, int)>(real_accept4)(fd, addr, len, flags);
  scope.Opened(r, scope.KindOf(fd));
  return r;
}

int HookDup(int fd) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int)>(real_dup)(fd);
  scope.Opened(r, scope.KindOf(fd));
  return r;
}

int HookDup2(int oldfd, int newfd) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int, int)>(real_dup2)(oldfd, newfd);
  Duplicated(scope, oldfd, r);
  return r;
}

int HookDup3(int oldfd, int newfd, int flags) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int, int, int)>(real_dup3)(oldfd, newfd, flags);
  Duplicated(scope, oldfd, r);
  return r;
}

// fcntl's third argument is an int or a pointer depending on `cmd`; like
// glibc's own fcntl we pass it on as a pointer-sized value.
template <std::atomic<void*>* kReal>
int HookFcntlT(int fd, int cmd, ...) noexcept {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  const HookScope scope;
  const int r = Real<int (*)(int, int, ...)>(*kReal)(fd, cmd, arg);
  if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
    scope.Opened(r, scope.KindOf(fd));
  }
  return r;
}

int HookPipe(int fds[2]) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int*)>(real_pipe)(fds);
  if (r == 0) {
    scope.Opened(fds[0], FdKind::kPipe);
    scope.Opened(fds[1], FdKind::kPipe);
  }
  return r;
}

int HookPipe2(int fds[2], int flags) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int*, int)>(real_pipe2)(fds, flags);
  if (r == 0) {
    scope.Opened(fds[0], FdKind::kPipe);
    scope.Opened(fds[1], FdKind::kPipe);
  }
  return r;
}

template <std::atomic<void*>* kReal, FdKind kKind>
int HookIntArgT(int arg) noexcept {
  const HookScope scope;
  const int fd = Real<int (*)(int)>(*kReal)(arg);
  scope.Opened(fd, kKind);
  return fd;
}

int HookInotifyInit() noexcept {
  const HookScope scope;
  const int fd = Real<int (*)()>(real_inotify_init)();
  scope.Opened(fd, FdKind::kInotify);
  return fd;
}

int HookEventfd(unsigned int initval, int flags) noexcept {
  const HookScope scope;
  const int fd = Real<int (*)(unsigned int, int)>(real_eventfd)(initval, flags);
  scope.Opened(fd, FdKind::kEventfd);
  return fd;
}

int HookTimerfdCreate(clockid_t clock, int flags) noexcept {
  const HookScope scope;
  const int fd = Real<int (*)(clockid_t, int)>(real_timerfd_create)(clock, flags);
  scope.Opened(fd, FdKind::kTimerfd);
  return fd;
}

int HookSignalfd(int fd, const sigset_t* mask, int flags) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(int, const sigset_t*, int)>(real_signalfd)(fd, mask, flags);
  if (fd == -1) scope.Opened(r, FdKind::kSignalfd);  // else: same fd, new mask
  return r;
}

int HookMemfdCreate(const char* name, unsigned int flags) noexcept {
  const HookScope scope;
  const int fd = Real<int (*)(const char*, unsigned int)>(real_memfd_create)(name, flags);
  scope.Opened(fd, FdKind::kMemfd);
  return fd;
}

template <std::atomic<void*>* kReal>
FILE* HookFopenT(const char* path, const char* mode) noexcept {
  const HookScope scope;
  FILE* f = Real<FILE* (*)(const char*, const char*)>(*kReal)(path, mode);
  if (f != nullptr) scope.Opened(fileno_unlocked(f), FdKind::kFile);
  return f;
}

int HookFclose(FILE* f) noexcept {
  const HookScope scope;
  if (f != nullptr) RetireBeforeClose(scope.table(), fileno_unlocked(f));
  return Real<int (*)(FILE*)>(real_fclose)(f);
}

DIR* HookOpendir(const char* path) noexcept {
  const HookScope scope;
  DIR* d = Real<DIR* (*)(const char*)>(real_opendir)(path);
  if (d != nullptr) scope.Opened(dirfd(d), FdKind::kFile, path);
  return d;
}

int HookClosedir(DIR* d) noexcept {
  const HookScope scope;
  if (d != nullptr) RetireBeforeClose(scope.table(), dirfd(d));
  return Real<int (*)(DIR*)>(real_closedir)(d);
}

int HookClose(int fd) noexcept {
  const HookScope scope;
  RetireBeforeClose(scope.table(), fd);
  return Real<int (*)(int)>(real_close)(fd);
}

int HookCloseRange(unsigned int first, unsigned int last, int flags) noexcept {
  const HookScope scope;
  const int r = Real<int (*)(unsigned int, unsigned int, int)>(real_close_range)(
      first, last, flags);
  // CLOSE_RANGE_CLOEXEC only marks the fds; on failure nothing was closed.
  FdTable* t = scope.table();
  if (r == 0 && t != nullptr && (flags & CLOSE_RANGE_CLOEXEC) == 0 &&
      !InSharedMemoryChild()) {
    const ErrnoKeeper keep;
    t->RetireRange(first, last, scope.call_sequence());
  }
  return r;
}

template <typename F>
void* Fn(F* f) noexcept {
  return reinterpret_cast<void*>(f);
}

const InterposeHook kFdHooks[] = {
    {"open", Fn(&HookOpenT<&real_open>), &real_open},
    {"open64", Fn(&HookOpenT<&real_open64>), &real_open64},
    {"__open_2", Fn(&HookOpen2T<&real_open_2>), &real_open_2},
    {"__open64_2", Fn(&HookOpen2T<&real_open64_2>), &real_open64_2},
    {"openat", Fn(&HookOpenatT<&real_openat>), &real_openat},
    {"openat64", Fn(&HookOpenatT<&real_openat64>), &real_openat64},
    {"__openat_2", Fn(&HookOpenat2T<&real_openat_2>), &real_openat_2},
    {"__openat64_2", Fn(&HookOpenat2T<&real_openat64_2>), &real_openat64_2},
    {"creat", Fn(&HookCreatT<&real_creat>), &real_creat},
    {"creat64", Fn(&HookCreatT<&real_creat64>), &real_creat64},
    {"socket", Fn(&HookSocket), &real_socket},
    {"socketpair", Fn(&HookSocketpair), &real_socketpair},
    {"accept", Fn(&HookAccept), &real_accept},
    {"accept4", Fn(&HookAccept4), &real_accept4},
    {"dup", Fn(&HookDup), &real_dup},
    {"dup2", Fn(&HookDup2), &real_dup2},
    {"dup3", Fn(&HookDup3), &real_dup3},
    {"fcntl", Fn(&HookFcntlT<&real_fcntl>), &real_fcntl},
    {"fcntl64", Fn(&HookFcntlT<&real_fcntl64>), &real_fcntl64},
    {"pipe", Fn(&HookPipe), &real_pipe},
    {"pipe2", Fn(&HookPipe2), &real_pipe2},
    {"epoll_create", Fn(&HookIntArgT<&real_epoll_create, FdKind::kEpoll>),
     &real_epoll_create},
    {"epoll_create1", Fn(&HookIntArgT<&real_epoll_create1, FdKind::kEpoll>),
     &real_epoll_create1},
    {"eventfd", Fn(&HookEventfd), &real_eventfd},
    {"timerfd_create", Fn(&HookTimerfdCreate), &real_timerfd_create},
    {"signalfd", Fn(&HookSignalfd), &real_signalfd},
    {"inotify_init", Fn(&HookInotifyInit), &real_inotify_init},
    {"inotify_init1", Fn(&HookIntArgT<&real_inotify_init1, FdKind::kInotify>),
     &real_inotify_init1},
    {"memfd_create", Fn(&HookMemfdCreate), &real_memfd_create},
    {"fopen", Fn(&HookFopenT<&real_fopen>), &real_fopen},
    {"fopen64", Fn(&HookFopenT<&real_fopen64>), &real_fopen64},
    {"fclose", Fn(&HookFclose), &real_fclose},
    {"opendir", Fn(&HookOpendir), &real_opendir},
    {"closedir", Fn(&HookClosedir), &real_closedir},
    {"close", Fn(&HookClose), &real_close},
    {"close_range", Fn(&HookCloseRange), &real_close_range},
};

}  // namespace

void SetFdStackIdProvider(StackIdProvider provider) noexcept {
  g_stack_provider.store(provider, std::memory_order_release);
}

void InstallFdHooks() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_table.store(&ProcessFdTable(), std::memory_order_release);
    Interposer::Instance().ExcludeObject("/_posixsubprocess.");
    g_pid.store(getpid(), std::memory_order_relaxed);
    RegisterForkHandlers(
        ForkStage::kFdHooks,
        {nullptr, nullptr, [] { g_pid.store(getpid(), std::memory_order_relaxed); }});
  });
  // On before the first entry is patched, so no creation is missed.
  g_active.store(true, std::memory_order_release);
  Interposer::Instance().Install(kFdHooks, sizeof kFdHooks / sizeof kFdHooks[0]);
}

void RemoveFdHooks() {
  g_active.store(false, std::memory_order_release);
  Interposer::Instance().Restore();
}

bool FdHooksActive() noexcept {
  return g_active.load(std::memory_order_acquire) && Interposer::Instance().installed();
}

}  // namespace leakprobe
