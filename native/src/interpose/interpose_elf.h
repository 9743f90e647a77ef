// Private to the interposition layer: reading a loaded object's ELF program
// headers, dynamic section and symbol versions, and writing GOT entries
// (making RELRO pages writable for the moment of the write). x86-64 glibc.
//
//   ObjectView o{...};                      // from dl_iterate_phdr
//   const DynamicInfo d = ReadDynamic(o);   // relocation tables, symbols
//   if (CompareAndSwap(slot, old_value, hook)) ...
//
// Thread-safety: stateless functions over memory the loader owns; the
// caller keeps the object loaded (pinned, or inside dl_iterate_phdr).
#pragma once

#include <elf.h>
#include <link.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace leakprobe::interpose_detail {

using Addr = std::uintptr_t;

template <typename T>
Addr AddrOf(T* p) noexcept {
  return reinterpret_cast<Addr>(p);
}

// The one place where a loader-provided address becomes a pointer.
template <typename T>
T* PtrAt(Addr a) noexcept {
  return reinterpret_cast<T*>(a);  // NOLINT(performance-no-int-to-ptr)
}

Addr PageSize() noexcept;

// One loaded object, as dl_iterate_phdr describes it.
struct ObjectView {
  std::string name;
  Addr base = 0;
  Addr dynamic = 0;
  const ElfW(Phdr) * phdr = nullptr;
  ElfW(Half) phnum = 0;
};

// The address of the object's PT_DYNAMIC; false when it has none.
bool FindDynamic(const dl_phdr_info* info, Addr* dynamic) noexcept;

// `a` lies in one of the object's PT_LOAD segments (writable ones only, if
// `need_writable`).
bool Contains(const ObjectView& o, Addr a, bool need_writable) noexcept;

// The pages the loader made read-only after relocation, as glibc computes
// them (_dl_protect_relro rounds both ends down); {0, 0} without RELRO.
std::pair<Addr, Addr> RelroPages(const ObjectView& o) noexcept;

// Makes `pages` writable; false (with nothing left changed) if any mprotect
// fails.
bool UnprotectPages(const std::vector<Addr>& pages) noexcept;
void ReprotectPages(const std::vector<Addr>& pages) noexcept;

// Atomic accesses to a GOT or data entry.
bool CompareAndSwap(Addr slot, void* expected, void* desired) noexcept;
void* LoadSlot(Addr slot) noexcept;

// The dynamic section of an object, read once. On x86-64 glibc relocates
// the d_ptr values in place; the vdso and some loaders do not, so values
// below the load base are rebased.
struct DynamicInfo {
  const ElfW(Sym) * symtab = nullptr;
  const char* strtab = nullptr;
  const ElfW(Rela) * jmprel = nullptr;
  std::size_t jmprel_count = 0;
  const ElfW(Rela) * rela = nullptr;
  std::size_t rela_count = 0;
  const ElfW(Half) * versym = nullptr;
  const ElfW(Verneed) * verneed = nullptr;
  std::size_t verneed_count = 0;
};

DynamicInfo ReadDynamic(const ObjectView& o) noexcept;

// The version an object requires for symbol `index` ("GLIBC_2.2.5"), or
// nullptr when it requires none (or defines the symbol itself).
const char* RequiredVersion(const DynamicInfo& d, std::size_t index) noexcept;

}  // namespace leakprobe::interpose_detail
