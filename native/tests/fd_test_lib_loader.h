// Loads one of the test-only libraries built from fd_test_lib.cpp and
// resolves its functions. The test executable's own calls are never patched
// (it holds leakprobe), so tests make their libc calls through these.
#pragma once

#include <dirent.h>
#include <dlfcn.h>
#include <signal.h>

#include <cstdio>

namespace leakprobe::testing {

struct FdTestLib {
  explicit FdTestLib(const char* path) : handle(::dlopen(path, RTLD_NOW | RTLD_LOCAL)) {
    if (handle == nullptr) return;
    Get(open, "fdtest_open");
    Get(open64, "fdtest_open64");
    Get(open_2, "fdtest_open_2");
    Get(open64_2, "fdtest_open64_2");
    Get(openat, "fdtest_openat");
    Get(creat, "fdtest_creat");
    Get(socket, "fdtest_socket");
    Get(socketpair, "fdtest_socketpair");
    Get(accept, "fdtest_accept");
    Get(accept4, "fdtest_accept4");
    Get(dup, "fdtest_dup");
    Get(dup2, "fdtest_dup2");
    Get(dup3, "fdtest_dup3");
    Get(fcntl, "fdtest_fcntl");
    Get(pipe, "fdtest_pipe");
    Get(pipe2, "fdtest_pipe2");
    Get(epoll_create, "fdtest_epoll_create");
    Get(epoll_create1, "fdtest_epoll_create1");
    Get(eventfd, "fdtest_eventfd");
    Get(timerfd_create, "fdtest_timerfd_create");
    Get(signalfd, "fdtest_signalfd");
    Get(inotify_init, "fdtest_inotify_init");
    Get(inotify_init1, "fdtest_inotify_init1");
    Get(memfd_create, "fdtest_memfd_create");
    Get(fopen, "fdtest_fopen");
    Get(fclose, "fdtest_fclose");
    Get(opendir, "fdtest_opendir");
    Get(closedir, "fdtest_closedir");
    Get(close, "fdtest_close");
    Get(close_range, "fdtest_close_range");
    Get(dlopen, "fdtest_dlopen");
    Get(dlsym, "fdtest_dlsym");
    Get(dlclose, "fdtest_dlclose");
    Get(getppid, "fdtest_getppid");
    Get(getppid_address, "fdtest_getppid_address");
  }
  ~FdTestLib() {
    if (handle != nullptr) ::dlclose(handle);
  }
  FdTestLib(const FdTestLib&) = delete;
  FdTestLib& operator=(const FdTestLib&) = delete;

  bool ok() const { return handle != nullptr && getppid_address != nullptr; }

  void* handle;
  int (*open)(const char*, int, int) = nullptr;
  int (*open64)(const char*, int, int) = nullptr;
  int (*open_2)(const char*, int) = nullptr;
  int (*open64_2)(const char*, int) = nullptr;
  int (*openat)(int, const char*, int, int) = nullptr;
  int (*creat)(const char*, int) = nullptr;
  int (*socket)(int, int, int) = nullptr;
  int (*socketpair)(int, int, int, int*) = nullptr;
  int (*accept)(int) = nullptr;
  int (*accept4)(int, int) = nullptr;
  int (*dup)(int) = nullptr;
  int (*dup2)(int, int) = nullptr;
  int (*dup3)(int, int, int) = nullptr;
  int (*fcntl)(int, int, int) = nullptr;
  int (*pipe)(int*) = nullptr;
  int (*pipe2)(int*, int) = nullptr;
  int (*epoll_create)(int) = nullptr;
  int (*epoll_create1)(int) = nullptr;
  int (*eventfd)(unsigned int, int) = nullptr;
  int (*timerfd_create)(int, int) = nullptr;
  int (*signalfd)(int, const sigset_t*, int) = nullptr;
  int (*inotify_init)() = nullptr;
  int (*inotify_init1)(int) = nullptr;
  int (*memfd_create)(const char*, unsigned int) = nullptr;
  FILE* (*fopen)(const char*, const char*) = nullptr;
  int (*fclose)(FILE*) = nullptr;
  DIR* (*opendir)(const char*) = nullptr;
  int (*closedir)(DIR*) = nullptr;
  int (*close)(int) = nullptr;
  int (*close_range)(unsigned int, unsigned int, int) = nullptr;
  void* (*dlopen)(const char*, int) = nullptr;
  void* (*dlsym)(void*, const char*) = nullptr;
  int (*dlclose)(void*) = nullptr;
  int (*getppid)() = nullptr;
  void* (*getppid_address)() = nullptr;

 private:
  template <typename F>
  void Get(F& f, const char* name) {
    f = reinterpret_cast<F>(::dlsym(handle, name));
  }
};

}  // namespace leakprobe::testing
