// A test-only shared library that makes libc calls itself, through its own
// GOT, so the interposition tests have another object to patch (the test
// executable itself holds leakprobe and is never patched). Built twice by
// CMake: leakprobe_fd_test_lib_a (-fno-plt, bound at load: GLOB_DAT entries
// in RELRO; RUNPATH $ORIGIN) and leakprobe_fd_test_lib_b (lazy PLT:
// JUMP_SLOT entries in .got.plt).
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdio>

// The fortified entry points <fcntl.h> only declares under _FORTIFY_SOURCE.
extern "C" int __open_2(const char* path, int flags);
extern "C" int __open64_2(const char* path, int flags);

#define FDTEST_API extern "C" __attribute__((visibility("default")))

FDTEST_API int fdtest_open(const char* path, int flags, int mode) {
  return open(path, flags, mode);
}
FDTEST_API int fdtest_open64(const char* path, int flags, int mode) {
  return open64(path, flags, mode);
}
FDTEST_API int fdtest_open_2(const char* path, int flags) {
  return __open_2(path, flags);
}
FDTEST_API int fdtest_open64_2(const char* path, int flags) {
  return __open64_2(path, flags);
}
FDTEST_API int fdtest_openat(int dirfd, const char* path, int flags, int mode) {
  return openat(dirfd, path, flags, mode);
}
FDTEST_API int fdtest_creat(const char* path, int mode) {
  return creat(path, static_cast<mode_t>(mode));
}
FDTEST_API int fdtest_socket(int domain, int type, int protocol) {
  return socket(domain, type, protocol);
}
FDTEST_API int fdtest_socketpair(int domain, int type, int protocol, int* sv) {
  return socketpair(domain, type, protocol, sv);
}
FDTEST_API int fdtest_accept(int fd) { return accept(fd, nullptr, nullptr); }
FDTEST_API int fdtest_accept4(int fd, int flags) {
  return accept4(fd, nullptr, nullptr, flags);
}
FDTEST_API int fdtest_dup(int fd) { return dup(fd); }
FDTEST_API int fdtest_dup2(int oldfd, int newfd) { return dup2(oldfd, newfd); }
FDTEST_API int fdtest_dup3(int oldfd, int newfd, int flags) {
  return dup3(oldfd, newfd, flags);
}
FDTEST_API int fdtest_fcntl(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }
FDTEST_API int fdtest_pipe(int* fds) { return pipe(fds); }
FDTEST_API int fdtest_pipe2(int* fds, int flags) { return pipe2(fds, flags); }
FDTEST_API int fdtest_epoll_create(int size) { return epoll_create(size); }
FDTEST_API int fdtest_epoll_create1(int flags) { return epoll_create1(flags); }
FDTEST_API int fdtest_eventfd(unsigned int initval, int flags) {
  return eventfd(initval, flags);
}
FDTEST_API int fdtest_timerfd_create(int clock, int flags) {
  return timerfd_create(clock, flags);
}
FDTEST_API int fdtest_signalfd(int fd, const sigset_t* mask, int flags) {
  return signalfd(fd, mask, flags);
}
FDTEST_API int fdtest_inotify_init() { return inotify_init(); }
FDTEST_API int fdtest_inotify_init1(int flags) { return inotify_init1(flags); }
FDTEST_API int fdtest_memfd_create(const char* name, unsigned int flags) {
  return memfd_create(name, flags);
}
FDTEST_API FILE* fdtest_fopen(const char* path, const char* mode) {
  return fopen(path, mode);
}
FDTEST_API int fdtest_fclose(FILE* f) { return fclose(f); }
FDTEST_API DIR* fdtest_opendir(const char* path) { return opendir(path); }
FDTEST_API int fdtest_closedir(DIR* d) { return closedir(d); }
FDTEST_API int fdtest_close(int fd) { return close(fd); }
FDTEST_API int fdtest_close_range(unsigned int first, unsigned int last, int flags) {
  return close_range(first, last, flags);
}
FDTEST_API void* fdtest_dlopen(const char* path, int mode) { return dlopen(path, mode); }
FDTEST_API void* fdtest_dlsym(void* handle, const char* name) {
  return dlsym(handle, name);
}
FDTEST_API int fdtest_dlclose(void* handle) { return dlclose(handle); }
FDTEST_API int fdtest_getppid() { return getppid(); }
// &getppid as this library sees it: read from its GOT.
FDTEST_API void* fdtest_getppid_address() { return reinterpret_cast<void*>(&getppid); }
