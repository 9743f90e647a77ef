// The dl* entry points of the interposition layer (see interpose_dl.h and
// leakprobe/interpose/interpose.h).
#include "interpose_dl.h"

#include <dlfcn.h>

#include <cerrno>
#include <cstring>

#include "leakprobe/interpose/interpose.h"

#if !defined(__x86_64__) || !defined(__GLIBC__)
#error "leakprobe's interposition layer supports x86-64 glibc only"
#endif

// --- The dl* entry points -------------------------------------------------
//
// glibc's dlopen looks at its return address to find the calling object, and
// uses that object's DT_RPATH/DT_RUNPATH to search for a bare file name, its
// origin to expand "$ORIGIN", and its namespace. dlsym does the same for
// RTLD_DEFAULT and RTLD_NEXT. A hook written in C++ that calls the real
// function makes leakprobe the caller and silently changes what gets loaded
// (the classic LD_PRELOAD-dlopen bug; libpython and _ctypes both carry a
// RUNPATH here). So these three entry points are small assembly stubs that
// save the arguments, run our bookkeeping, restore the arguments and
// *jump* (not call) to the real function, which then sees the original
// return address. Only a dlopen of a path that contains '/' and no '$' is
// independent of the caller (in the base namespace, which is the only one we
// patch); that one is routed to LeakprobeDlopenAndPatch, which patches the
// new objects as soon as the real dlopen returns. Every other load is patched
// at the next dlopen/dlmopen/dlsym from any patched object: CPython looks up
// PyInit_<name> and ctypes looks up every function with dlsym before calling
// anything in a new library, so nothing is missed there.

extern "C" {
// The real functions (see interpose_dl.h).
__attribute__((visibility("hidden"), used)) std::atomic<void*> LeakprobeRealDlopen{
    nullptr};
__attribute__((visibility("hidden"), used)) std::atomic<void*> LeakprobeRealDlmopen{
    nullptr};
__attribute__((visibility("hidden"), used)) std::atomic<void*> LeakprobeRealDlsym{
    nullptr};

__attribute__((visibility("hidden"), used)) void LeakprobeOnDlActivity() noexcept;
__attribute__((visibility("hidden"), used)) void* LeakprobeDlsymRedirect(
    void* handle, const char* name) noexcept;
__attribute__((visibility("hidden"), used)) int LeakprobeDlopenIsCallerIndependent(
    const char* file) noexcept;
__attribute__((visibility("hidden"), used)) void* LeakprobeDlopenAndPatch(
    const char* file, int mode) noexcept;
}

// Each stub: endbr64 (for IBT), save the argument registers, keep the stack
// 16-byte aligned for the call (it is 8 mod 16 on entry), tail-jump.
asm(R"(
  .text
  .p2align 4
  .globl LeakprobeDlopenEntry
  .hidden LeakprobeDlopenEntry
  .type LeakprobeDlopenEntry, @function
LeakprobeDlopenEntry:
  .cfi_startproc
  endbr64
  pushq %rdi
  .cfi_adjust_cfa_offset 8
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  call LeakprobeDlopenIsCallerIndependent
  addq $8, %rsp
  .cfi_adjust_cfa_offset -8
  popq %rsi
  .cfi_adjust_cfa_offset -8
  popq %rdi
  .cfi_adjust_cfa_offset -8
  testl %eax, %eax
  jnz 1f
  jmpq *LeakprobeRealDlopen(%rip)
1:
  jmp LeakprobeDlopenAndPatch
  .cfi_endproc
  .size LeakprobeDlopenEntry, .-LeakprobeDlopenEntry

  .p2align 4
  .globl LeakprobeDlmopenEntry
  .hidden LeakprobeDlmopenEntry
  .type LeakprobeDlmopenEntry, @function
LeakprobeDlmopenEntry:
  .cfi_startproc
  endbr64
  pushq %rdi
  .cfi_adjust_cfa_offset 8
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  pushq %rdx
  .cfi_adjust_cfa_offset 8
  call LeakprobeOnDlActivity
  popq %rdx
  .cfi_adjust_cfa_offset -8
  popq %rsi
  .cfi_adjust_cfa_offset -8
  popq %rdi
  .cfi_adjust_cfa_offset -8
  jmpq *LeakprobeRealDlmopen(%rip)
  .cfi_endproc
  .size LeakprobeDlmopenEntry, .-LeakprobeDlmopenEntry

  .p2align 4
  .globl LeakprobeDlsymEntry
  .hidden LeakprobeDlsymEntry
  .type LeakprobeDlsymEntry, @function
LeakprobeDlsymEntry:
  .cfi_startproc
  endbr64
  pushq %rdi
  .cfi_adjust_cfa_offset 8
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  call LeakprobeDlsymRedirect
  addq $8, %rsp
  .cfi_adjust_cfa_offset -8
  popq %rsi
  .cfi_adjust_cfa_offset -8
  popq %rdi
  .cfi_adjust_cfa_offset -8
  testq %rax, %rax
  jz 1f
  ret
1:
  jmpq *LeakprobeRealDlsym(%rip)
  .cfi_endproc
  .size LeakprobeDlsymEntry, .-LeakprobeDlsymEntry
)");

namespace leakprobe {
namespace {

// dl* activity: patch what was loaded since the last pass. Keeps errno and
// swallows failures: this runs inside the application's dl* call.
void PatchNewObjectsQuietly() noexcept {
  const int saved_errno = errno;
  try {
    Interposer::Instance().PatchNewObjects();
  } catch (...) {
    // Out of memory: the next dl* call retries.
  }
  errno = saved_errno;
}

}  // namespace
}  // namespace leakprobe

// --- C++ halves of the dl* stubs --------------------------------------------

extern "C" void LeakprobeOnDlActivity() noexcept { leakprobe::PatchNewObjectsQuietly(); }

// dlsym's bookkeeping, and the redirect of hooked names looked up through a
// handle (Interposer::RedirectDlsym): nullptr lets the stub jump to the real
// dlsym with the caller's own return address; anything else is returned as
// dlsym's answer. A lookup through a handle searches that handle's scope
// whoever calls, so making it from here finds what the caller would.
extern "C" void* LeakprobeDlsymRedirect(void* handle, const char* name) noexcept {
  leakprobe::PatchNewObjectsQuietly();
  if (handle == RTLD_DEFAULT || handle == RTLD_NEXT || name == nullptr) return nullptr;
  return leakprobe::interpose_detail::DlsymRedirect(handle, name);
}

extern "C" int LeakprobeDlopenIsCallerIndependent(const char* file) noexcept {
  const bool independent = file != nullptr && std::strchr(file, '/') != nullptr &&
                           std::strchr(file, '$') == nullptr;
  // A load the stub hands straight to the loader is patched at the next dl*
  // call; objects loaded by earlier such calls are patched now.
  if (!independent) leakprobe::PatchNewObjectsQuietly();
  return independent ? 1 : 0;
}

extern "C" void* LeakprobeDlopenAndPatch(const char* file, int mode) noexcept {
  using DlopenFn = void* (*)(const char*, int);
  auto real =
      reinterpret_cast<DlopenFn>(LeakprobeRealDlopen.load(std::memory_order_relaxed));
  void* handle = real(file, mode);
  if (handle != nullptr) {
    leakprobe::PatchNewObjectsQuietly();
    // The dlopen succeeded, so dlerror() must report nothing; our own
    // RTLD_NOLOAD probes may have left a message. (glibc keeps dlerror's
    // state per thread.)
    dlerror();  // NOLINT(concurrency-mt-unsafe)
  }
  return handle;
}
