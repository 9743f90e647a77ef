// leakprobe/interpose/interpose.h — the one interposition layer: points the GOT entries
// of libc functions in every loaded object at leakprobe's hooks, without
// LD_PRELOAD, in an already-running process; re-patches objects loaded later;
// puts every entry back on Restore().
//
//   static std::atomic<void*> real_close{nullptr};
//   const InterposeHook hooks[] = {{"close", reinterpret_cast<void*>(&MyClose),
//   &real_close}}; Interposer::Instance().Install(hooks, 1);  // ... later: Restore()
//
// What is patched: R_X86_64_JUMP_SLOT, R_X86_64_GLOB_DAT and R_X86_64_64
// (addend 0, e.g. SQLite's table of syscall pointers) relocations against a
// hooked name, in every object of the base link-map namespace except
// leakprobe's own object, the vdso, the dynamic loader, sanitizer runtimes
// (libasan, libtsan, ...) and objects excluded with ExcludeObject(). An
// object loaded later by a dlopen of a path is patched as soon as the real
// dlopen returns; any other load is patched at the next dlopen/dlmopen/dlsym
// from a patched object (see interpose.cpp for why: the loader's view of
// its caller must be preserved). x86-64 glibc only.
//
// Thread-safety: every method may be called from any thread; patching is
// serialised by a mutex (cold path). Hooks themselves never take it. A hook
// reads its `real` pointer with a relaxed load: it is written before any GOT
// entry can lead to the hook, and never changes afterwards.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace leakprobe {

// One libc entry point to interpose.
struct InterposeHook {
  const char* name;   // symbol name as objects import it, e.g. "open64"
  void* replacement;  // the hook; must not itself be exported under `name`
  // Set to the function the name resolves to in the global scope before any
  // GOT entry points at `replacement`; stays nullptr if the name is unknown
  // (then nothing is patched for it).
  std::atomic<void*>* real;
};

// Cumulative figures since the process started; read at any time.
struct InterposeStats {
  std::uint64_t passes = 0;           // scans of the loaded objects
  std::uint64_t objects_patched = 0;  // objects with at least one entry changed
  std::uint64_t objects_skipped =
      0;  // own object, vdso, ld.so, excluded, other namespace
  std::uint64_t objects_unwritable = 0;  // a GOT page could not be made writable
  std::uint64_t slots_patched = 0;
  std::uint64_t slots_restored = 0;
  // Entries bound to something other than the global definition (a local
  // scope's own copy, another symbol version): left alone.
  std::uint64_t slots_foreign = 0;
  std::uint64_t unresolved_names = 0;  // hook names with no definition here
};

class Interposer {
 public:
  // The process-wide instance; never destroyed.
  static Interposer& Instance();

  Interposer(const Interposer&) = delete;
  Interposer& operator=(const Interposer&) = delete;

  // Registers `hooks` (resolving each real function first), then patches every
  // loaded object for all registered hooks. Registering the same name with
  // the same replacement again is a no-op, so Install is idempotent; the same
  // name with another replacement throws leakprobe::Error. Cold path.
  void Install(const InterposeHook* hooks, std::size_t count);

  // Puts back every entry this layer changed in objects still loaded, and
  // stops re-patching. Hooks stay registered: Install() with no new hooks
  // (count 0) patches again. Safe to call when nothing is installed.
  void Restore();

  // From now on, dlsym(handle, name) through a handle (not RTLD_DEFAULT or
  // RTLD_NEXT) of an installed hook's name returns the hook instead of the
  // real function it found: code that looks the function up and calls it
  // through a pointer (ctypes' `libc.malloc`) reaches the hook too. For the
  // names given here only (at most 32 in all); call after Install. Cold path.
  void RedirectDlsym(const InterposeHook* hooks, std::size_t count) noexcept;

  // Objects whose path contains `substring` are never patched from now on.
  void ExcludeObject(std::string substring);

  // Scans for objects loaded since the last scan and patches them. The dl*
  // hooks call this; tests may too.
  void PatchNewObjects();

  bool installed() const noexcept { return installed_.load(std::memory_order_acquire); }
  InterposeStats stats() const noexcept;

 private:
  Interposer() = default;
  std::atomic<bool> installed_{false};
};

}  // namespace leakprobe
