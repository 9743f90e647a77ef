// leakprobe/malloc/malloc_hooks.h — the malloc-family hooks: malloc, calloc,
// realloc, reallocarray, free, posix_memalign, aligned_alloc, memalign,
// valloc, pvalloc, and mmap/mmap64/munmap of anonymous memory, patched into
// every loaded object (and objects dlopen'ed later) through the one
// interposition layer (leakprobe/interpose/interpose.h); no LD_PRELOAD.
//
//   InstallMallocHooks(interpreter_symbol);   // cold path, once; idempotent
//   MallocHooksInstalled();
//
// `interpreter_symbol` is any function of the interpreter (PyMem_RawMalloc):
// the object holding it is the interpreter, whose own calls to malloc and
// mmap are the Python heap's (see leakprobe/malloc/native_heap.h).
//
// Hot path: malloc is a thread-local countdown and a tail call; free is one
// probe of the sampled-address filter and a tail call. What glibc calls
// internally (not through a GOT) is not seen: a block it allocates and the
// application frees is not in the filter and is ignored; a block allocated
// before the hooks and freed after is ignored the same way.
//
// Thread-safety: install from any thread (serialised by the interposer);
// the hooks run on every thread. The hooks stay installed until the process
// ends (NativeHeap::Stop makes them pass-through).
#pragma once

namespace leakprobe {

// Throws leakprobe::Error when the interposer cannot install them.
void InstallMallocHooks(const void* interpreter_symbol);
bool MallocHooksInstalled() noexcept;

}  // namespace leakprobe
