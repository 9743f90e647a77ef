// Code addresses to objects, symbols and source lines (cold path).
//
// dladdr names the object and the exported symbol; libdw (elfutils),
// dlopen'ed on first use so that a process without native tracking never
// loads it, adds the object's full symbol table (static functions) and
// the DWARF line table. A Dwfl session is opened per call, for the
// addresses not cached, and ended at its end: the object files it opens
// are closed again (they would otherwise stay open in the host, one fd per
// object ever symbolised).
#include <dlfcn.h>
#include <elfutils/libdwfl.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/stacks/native_stack.h"

namespace leakprobe {
namespace {

constexpr std::size_t kMaxCached = 8192;

// The libdw entry points used, resolved from libdw.so.1.
struct LibDw {
  decltype(&dwfl_begin) begin = nullptr;
  decltype(&dwfl_end) end = nullptr;
  decltype(&dwfl_report_begin) report_begin = nullptr;
  decltype(&dwfl_report_end) report_end = nullptr;
  decltype(&dwfl_linux_proc_report) proc_report = nullptr;
  decltype(&dwfl_linux_proc_find_elf) find_elf = nullptr;
  decltype(&dwfl_build_id_find_debuginfo) find_debuginfo = nullptr;
  decltype(&dwfl_addrmodule) addrmodule = nullptr;
  decltype(&dwfl_module_addrinfo) addrinfo = nullptr;
  decltype(&dwfl_module_getsrc) getsrc = nullptr;
  decltype(&dwfl_lineinfo) lineinfo = nullptr;
  Dwfl_Callbacks callbacks{};
};

template <typename F>
bool Resolve(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

// Loads libdw once; nullptr when it is not installed.
const LibDw* LoadLibDw() {
  static const LibDw* const dw = []() -> const LibDw* {
    void* lib = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return nullptr;
    auto* d = new LibDw();
    const bool ok = Resolve(lib, "dwfl_begin", &d->begin) &&
                    Resolve(lib, "dwfl_end", &d->end) &&
                    Resolve(lib, "dwfl_report_begin", &d->report_begin) &&
                    Resolve(lib, "dwfl_report_end", &d->report_end) &&
                    Resolve(lib, "dwfl_linux_proc_report", &d->proc_report) &&
                    Resolve(lib, "dwfl_linux_proc_find_elf", &d->find_elf) &&
                    Resolve(lib, "dwfl_build_id_find_debuginfo", &d->find_debuginfo) &&
                    Resolve(lib, "dwfl_addrmodule", &d->addrmodule) &&
                    Resolve(lib, "dwfl_module_addrinfo", &d->addrinfo) &&
                    Resolve(lib, "dwfl_module_getsrc", &d->getsrc) &&
                    Resolve(lib, "dwfl_lineinfo", &d->lineinfo);
    if (!ok) {
      delete d;
      return nullptr;
    }
    // Debug info from the object or a build-id file under the default
    // path only: dwfl_standard_find_debuginfo would ask debuginfod when
    // DEBUGINFOD_URLS is set (a network call from the host process).
    d->callbacks.find_elf = d->find_elf;
    d->callbacks.find_debuginfo = d->find_debuginfo;
    return d;
  }();
  return dw;
}

class Symbolizer {
 public:
  static Symbolizer& Instance() {
    // Never destroyed: a scrape may symbolise during exit.
    static Symbolizer* const s = [] {
      auto* sym = new Symbolizer();
      RegisterForkLock(ForkStage::kSymbols, &sym->mu_);
      return sym;
    }();
    return *s;
  }

  std::vector<NativeLocation> Locate(const std::vector<const void*>& pcs) {
    std::vector<NativeLocation> out(pcs.size());
    MutexLock lock(&mu_);
    Dwfl* dwfl = nullptr;
    const LibDw* dw = nullptr;
    for (std::size_t i = 0; i < pcs.size(); ++i) {
      const auto pc = reinterpret_cast<std::uintptr_t>(pcs[i]);
      if (auto it = cache_.find(pc); it != cache_.end()) {
        out[i] = it->second;
        ++stats_.cached;
        continue;
      }
      if (dwfl == nullptr && dw == nullptr) {
        dw = LoadLibDw();
        stats_.libdw = dw != nullptr;
        if (dw != nullptr) dwfl = Open(*dw);
        if (dwfl != nullptr) ++stats_.sessions;
      }
      out[i] = LocateOne(pcs[i], dw, dwfl);
      ++stats_.lookups;
      if (out[i].line > 0) ++stats_.with_line;
      if (cache_.size() >= kMaxCached) cache_.clear();
      cache_.emplace(pc, out[i]);
    }
    if (dwfl != nullptr) dw->end(dwfl);  // closes the object files
    return out;
  }

  SymbolizerStats Stats() {
    MutexLock lock(&mu_);
    return stats_;
  }

 private:
  static Dwfl* Open(const LibDw& dw) {
    Dwfl* dwfl = dw.begin(&dw.callbacks);
    if (dwfl == nullptr) return nullptr;
    dw.report_begin(dwfl);
    if (dw.proc_report(dwfl, getpid()) != 0 ||
        dw.report_end(dwfl, nullptr, nullptr) != 0) {
      dw.end(dwfl);
      return nullptr;
    }
    return dwfl;
  }

  static NativeLocation LocateOne(const void* pc, const LibDw* dw, Dwfl* dwfl) {
    NativeLocation where;
    const auto address = reinterpret_cast<std::uintptr_t>(pc);
    char text[64];
    Dl_info info{};
    if (dladdr(pc, &info) != 0) {
      where.object = info.dli_fname != nullptr ? info.dli_fname : "";
      if (info.dli_sname != nullptr) {
        std::snprintf(text, sizeof text, "+0x%" PRIxPTR,
                      address - reinterpret_cast<std::uintptr_t>(info.dli_saddr));
        where.function = std::string(info.dli_sname) + text;
      } else {
        std::snprintf(text, sizeof text, "0x%" PRIxPTR,
                      address - reinterpret_cast<std::uintptr_t>(info.dli_fbase));
        where.function = text;
      }
    } else {
      std::snprintf(text, sizeof text, "%p", pc);
      where.function = text;
    }
    if (dwfl == nullptr || address == 0) return where;
    Dwfl_Module* module = dw->addrmodule(dwfl, address - 1);
    if (module == nullptr) return where;
    {  // the full symbol table: dladdr knows exported symbols only, and
       // names a static function after the exported one before it
      GElf_Off offset = 0;
      GElf_Sym symbol{};
      const char* name =
          dw->addrinfo(module, address, &offset, &symbol, nullptr, nullptr, nullptr);
      if (name != nullptr) {
        std::snprintf(text, sizeof text, "+0x%" PRIx64,
                      static_cast<std::uint64_t>(offset));
        where.function = std::string(name) + text;
      }
    }
    // The call instruction's line: a return address is the one after it.
    if (Dwfl_Line* line = dw->getsrc(module, address - 1); line != nullptr) {
      int lineno = 0;
      const char* file = dw->lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr);
      if (file != nullptr && lineno > 0) {
        where.file = file;
        where.line = lineno;
      }
    }
    return where;
  }

  Mutex mu_;
  absl::flat_hash_map<std::uintptr_t, NativeLocation> cache_ ABSL_GUARDED_BY(mu_);
  SymbolizerStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::vector<NativeLocation> LocateAddresses(const std::vector<const void*>& pcs) {
  return Symbolizer::Instance().Locate(pcs);
}

NativeLocation LocateAddress(const void* pc) {
  return std::move(LocateAddresses({pc}).front());
}

std::string Describe(const NativeLocation& where) {
  if (where.object.empty()) return where.function;
  std::string out = where.function + " (" + where.object + ")";
  if (where.line > 0) out += " at " + where.file + ":" + std::to_string(where.line);
  return out;
}

std::string DescribeAddress(const void* pc) { return Describe(LocateAddress(pc)); }

std::vector<std::string> DescribeAddresses(const std::vector<const void*>& pcs) {
  std::vector<std::string> out;
  out.reserve(pcs.size());
  for (const NativeLocation& where : LocateAddresses(pcs)) out.push_back(Describe(where));
  return out;
}

SymbolizerStats GetSymbolizerStats() { return Symbolizer::Instance().Stats(); }

}  // namespace leakprobe
