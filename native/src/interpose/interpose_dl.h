// Private to the interposition layer: the dl* entry points (assembly stubs
// in interpose_dl.cpp) that interpose.cpp registers as hooks for dlopen,
// dlmopen and dlsym, and the real functions they jump to.
//
//   {"dlsym", reinterpret_cast<void*>(&LeakprobeDlsymEntry), &LeakprobeRealDlsym}
//
// Thread-safety: the Real* pointers are written once, before any GOT entry
// points at a stub, and only read afterwards.
#pragma once

#include <atomic>

extern "C" {
// The real functions, read by the stubs with `jmp *sym(%rip)`: an
// std::atomic<void*> has the layout of a void*.
__attribute__((visibility("hidden"))) extern std::atomic<void*> LeakprobeRealDlopen;
__attribute__((visibility("hidden"))) extern std::atomic<void*> LeakprobeRealDlmopen;
__attribute__((visibility("hidden"))) extern std::atomic<void*> LeakprobeRealDlsym;

// The stubs; never call them from C++ (they only jump or return).
__attribute__((visibility("hidden"))) void LeakprobeDlopenEntry();
__attribute__((visibility("hidden"))) void LeakprobeDlmopenEntry();
__attribute__((visibility("hidden"))) void LeakprobeDlsymEntry();
}

namespace leakprobe::interpose_detail {
// The replacement of `name` when a lookup of it through `handle` finds the
// real function a redirect was registered for (Interposer::RedirectDlsym);
// nullptr otherwise. Lock-free.
void* DlsymRedirect(void* handle, const char* name) noexcept;
}  // namespace leakprobe::interpose_detail
