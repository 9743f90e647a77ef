// leakprobe/stacks/native_stack.h — native (C/C++) call stacks through libunwind,
// for attributing native allocations and fds made by C libraries.
//
//   std::array<void*, 32> pcs;
//   std::size_t n = leakprobe::CaptureNativeStack(pcs.data(), pcs.size());
//   std::string where = leakprobe::DescribeAddress(pcs[0]);
//   std::vector<NativeLocation> at = leakprobe::LocateAddresses(pcs_vector);
//
// CaptureNativeStack does not allocate and is async-signal-safe as far as
// libunwind's local unwinder is (UNW_LOCAL_ONLY). Locating and describing
// are cold path only: they resolve symbols (dladdr, then the object's full
// symbol table and its DWARF line table through libdw, dlopen'ed on first
// use), open the objects' files for the time of one call, and allocate.
// Debug info is read from the object itself or from a build-id file under
// /usr/lib/debug; never from debuginfod (no network from a host process).
// Thread-safety: all are thread-safe; locating serialises on one lock
// (a fork stage, leakprobe/runtime/fork.h) and caches up to 8192 addresses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace leakprobe {

// Fills `pcs` with up to `max_depth` return addresses, innermost first,
// skipping this function itself. Returns how many were written.
std::size_t CaptureNativeStack(void** pcs, std::size_t max_depth) noexcept;

// Where a return address is. `function` is "symbol+0x12" (the symbol from
// the dynamic symbol table, else the object's full one), or "0x1234" (the
// offset in the object) without one; `file` and `line` are the call's
// source line (looked up at pc - 1), empty and 0 without debug info.
struct NativeLocation {
  std::string object;  // the loaded object's path; "" if no object holds pc
  std::string function;
  std::string file;
  int line = 0;
};

std::vector<NativeLocation> LocateAddresses(const std::vector<const void*>& pcs);
NativeLocation LocateAddress(const void* pc);

// "symbol+0x12 (object) at file.c:41", "symbol+0x12 (object)" without debug
// info, or "0x7f..." outside every object. Each call that meets an address
// not yet cached reads the process's objects afresh (tens to hundreds of
// milliseconds with debug info): describe many addresses in one call.
std::string Describe(const NativeLocation& where);
std::string DescribeAddress(const void* pc);
std::vector<std::string> DescribeAddresses(const std::vector<const void*>& pcs);

// Lookups that found a source line, and those that did not, in this
// process: for tests and docs.
struct SymbolizerStats {
  std::uint64_t lookups = 0;
  std::uint64_t with_line = 0;
  std::uint64_t cached = 0;
  std::uint64_t sessions =
      0;               // libdw sessions opened: one per call that missed the cache
  bool libdw = false;  // libdw.so.1 could be loaded
};
SymbolizerStats GetSymbolizerStats();

}  // namespace leakprobe
