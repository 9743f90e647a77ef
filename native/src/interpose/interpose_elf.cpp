// ELF reading and GOT writing for the interposition layer (see
// interpose_elf.h).
#include "interpose_elf.h"

#include <sys/mman.h>
#include <unistd.h>

namespace leakprobe::interpose_detail {

Addr PageSize() noexcept {
  static const Addr page = static_cast<Addr>(sysconf(_SC_PAGESIZE));
  return page;
}

bool FindDynamic(const dl_phdr_info* info, Addr* dynamic) noexcept {
  for (ElfW(Half) i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) {
      *dynamic = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
      return true;
    }
  }
  return false;
}

bool Contains(const ObjectView& o, Addr a, bool need_writable) noexcept {
  for (ElfW(Half) i = 0; i < o.phnum; ++i) {
    const ElfW(Phdr)& p = o.phdr[i];
    if (p.p_type != PT_LOAD) continue;
    if (need_writable && (p.p_flags & PF_W) == 0) continue;
    const Addr start = o.base + p.p_vaddr;
    if (a >= start && a < start + p.p_memsz) return true;
  }
  return false;
}

// The pages the loader made read-only after relocation, as glibc computes
// them (_dl_protect_relro rounds both ends down).
std::pair<Addr, Addr> RelroPages(const ObjectView& o) noexcept {
  for (ElfW(Half) i = 0; i < o.phnum; ++i) {
    const ElfW(Phdr)& p = o.phdr[i];
    if (p.p_type != PT_GNU_RELRO) continue;
    const Addr mask = ~(PageSize() - 1);
    return {(o.base + p.p_vaddr) & mask, (o.base + p.p_vaddr + p.p_memsz) & mask};
  }
  return {0, 0};
}

// Makes the RELRO pages holding `slots` writable; false (with nothing left
// changed) if any mprotect fails.
bool UnprotectPages(const std::vector<Addr>& pages) noexcept {
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (mprotect(PtrAt<void>(pages[i]), PageSize(), PROT_READ | PROT_WRITE) != 0) {
      for (std::size_t j = 0; j < i; ++j) {
        mprotect(PtrAt<void>(pages[j]), PageSize(), PROT_READ);
      }
      return false;
    }
  }
  return true;
}

void ReprotectPages(const std::vector<Addr>& pages) noexcept {
  for (Addr page : pages) {
    mprotect(PtrAt<void>(page), PageSize(), PROT_READ);
  }
}

bool CompareAndSwap(Addr slot, void* expected, void* desired) noexcept {
  auto* p = PtrAt<void*>(slot);
  return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}

void* LoadSlot(Addr slot) noexcept {
  auto* p = PtrAt<void*>(slot);
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

DynamicInfo ReadDynamic(const ObjectView& o) noexcept {
  DynamicInfo d;
  auto ptr = [&](const ElfW(Dyn) * e) -> Addr {
    const Addr v = e->d_un.d_ptr;
    return v < o.base ? v + o.base : v;
  };
  std::size_t pltrelsz = 0, relasz = 0, relaent = sizeof(ElfW(Rela));
  bool plt_is_rela = true;
  for (auto* e = PtrAt<const ElfW(Dyn)>(o.dynamic); e->d_tag != DT_NULL; ++e) {
    switch (e->d_tag) {
      case DT_SYMTAB:
        d.symtab = PtrAt<const ElfW(Sym)>(ptr(e));
        break;
      case DT_STRTAB:
        d.strtab = PtrAt<const char>(ptr(e));
        break;
      case DT_JMPREL:
        d.jmprel = PtrAt<const ElfW(Rela)>(ptr(e));
        break;
      case DT_PLTRELSZ:
        pltrelsz = e->d_un.d_val;
        break;
      case DT_PLTREL:
        plt_is_rela = e->d_un.d_val == DT_RELA;
        break;
      case DT_RELA:
        d.rela = PtrAt<const ElfW(Rela)>(ptr(e));
        break;
      case DT_RELASZ:
        relasz = e->d_un.d_val;
        break;
      case DT_RELAENT:
        relaent = e->d_un.d_val;
        break;
      case DT_VERSYM:
        d.versym = PtrAt<const ElfW(Half)>(ptr(e));
        break;
      case DT_VERNEED:
        d.verneed = PtrAt<const ElfW(Verneed)>(ptr(e));
        break;
      case DT_VERNEEDNUM:
        d.verneed_count = e->d_un.d_val;
        break;
      default:
        break;
    }
  }
  if (relaent != sizeof(ElfW(Rela))) relasz = 0;  // not a layout we understand
  if (!plt_is_rela) pltrelsz = 0;                 // x86-64 uses RELA only
  d.jmprel_count = d.jmprel != nullptr ? pltrelsz / sizeof(ElfW(Rela)) : 0;
  d.rela_count = d.rela != nullptr ? relasz / sizeof(ElfW(Rela)) : 0;
  if (d.symtab == nullptr || d.strtab == nullptr) d.jmprel_count = d.rela_count = 0;
  return d;
}

// The version an object requires for symbol `index` ("GLIBC_2.2.5"), or
// nullptr when it requires none (or defines the symbol itself).
const char* RequiredVersion(const DynamicInfo& d, std::size_t index) noexcept {
  if (d.versym == nullptr || d.verneed == nullptr) return nullptr;
  const ElfW(Half) ndx = d.versym[index] & 0x7fff;
  if (ndx < 2) return nullptr;  // local or global: unversioned
  const auto* need = d.verneed;
  for (std::size_t i = 0; i < d.verneed_count; ++i) {
    const auto* aux = reinterpret_cast<const ElfW(Vernaux)*>(
        reinterpret_cast<const char*>(need) + need->vn_aux);
    for (ElfW(Half) j = 0; j < need->vn_cnt; ++j) {
      if (aux->vna_other == ndx) return d.strtab + aux->vna_name;
      aux = reinterpret_cast<const ElfW(Vernaux)*>(reinterpret_cast<const char*>(aux) +
                                                   aux->vna_next);
    }
    if (need->vn_next == 0) break;
    need = reinterpret_cast<const ElfW(Verneed)*>(reinterpret_cast<const char*>(need) +
                                                  need->vn_next);
  }
  return nullptr;
}

}  // namespace leakprobe::interpose_detail
