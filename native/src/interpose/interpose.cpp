// GOT patching for the interposition layer (see leakprobe/interpose/interpose.h).
//
// A pass over the loaded objects runs in three phases, so that no loader lock
// is ever taken while our mutex is held (a constructor running under the
// loader's lock may call dlsym through a patched GOT and wait for our mutex):
//   1. dl_iterate_phdr lists the objects not yet processed;
//   2. without our mutex, each is pinned with dlopen(RTLD_NOLOAD). That call
//      waits for any dlopen in flight in another thread, so a pinned object is
//      fully relocated and its RELRO protection applied: we never race the
//      loader on a half-relocated GOT, and a pinned object cannot be unmapped
//      under us. Its relocations are read and the entries to change planned;
//   3. under our mutex, the planned entries are written (compare-and-swap),
//      making RELRO pages writable for the moment of the write.
// Restore() writes the originals back from inside dl_iterate_phdr (which
// holds the loader's list lock, so no listed object can be unmapped during
// the callback), only into objects still loaded, and only where the entry
// still holds our hook.
//
// ELF reading and GOT writes are in interpose_elf.cpp; the dl* entry points
// (assembly stubs) in interpose_dl.cpp.
#include "leakprobe/interpose/interpose.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "interpose_dl.h"
#include "interpose_elf.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/guard.h"
#include "leakprobe/runtime/mutex.h"

#if !defined(__x86_64__) || !defined(__GLIBC__)
#error "leakprobe's interposition layer supports x86-64 glibc only"
#endif

namespace leakprobe {
namespace {

using interpose_detail::Addr;
using interpose_detail::AddrOf;
using interpose_detail::CompareAndSwap;
using interpose_detail::Contains;
using interpose_detail::DynamicInfo;
using interpose_detail::FindDynamic;
using interpose_detail::LoadSlot;
using interpose_detail::ObjectView;
using interpose_detail::PageSize;
using interpose_detail::PtrAt;
using interpose_detail::ReadDynamic;
using interpose_detail::RelroPages;
using interpose_detail::ReprotectPages;
using interpose_detail::RequiredVersion;
using interpose_detail::UnprotectPages;

struct Registered {
  std::string name;
  void* replacement = nullptr;
  std::atomic<void*>* real_out = nullptr;
  void* real = nullptr;  // nullptr: unresolved, never patched
};

// An entry we changed, so Restore() can put it back.
struct PatchedSlot {
  Addr slot = 0;
  Addr object_base = 0;     // identifies the object together with
  Addr object_dynamic = 0;  // the address of its dynamic section
  void* original = nullptr;
  void* replacement = nullptr;
};

struct ObjectKey {
  Addr base = 0;
  Addr dynamic = 0;
  bool operator<(const ObjectKey& o) const noexcept {
    return base != o.base ? base < o.base : dynamic < o.dynamic;
  }
  bool operator==(const ObjectKey& o) const noexcept {
    return base == o.base && dynamic == o.dynamic;
  }
};

struct Counters {
  std::atomic<std::uint64_t> passes{0}, objects_patched{0}, objects_skipped{0},
      objects_unwritable{0}, slots_patched{0}, slots_restored{0}, slots_foreign{0},
      unresolved_names{0};
};

struct State {
  Mutex mu;  // the cold path: registration, passes, Restore
  std::vector<Registered> hooks ABSL_GUARDED_BY(mu);
  std::vector<PatchedSlot> slots ABSL_GUARDED_BY(mu);
  std::vector<ObjectKey> processed ABSL_GUARDED_BY(mu);  // sorted
  // Sanitizer runtimes are tools, not the application: they call libc
  // through their own GOT at delicate moments and mix in raw syscalls (ASan
  // probes memory with pipe() and closes the pipe with a raw close).
  std::vector<std::string> excluded ABSL_GUARDED_BY(mu) = {
      "/libasan.so", "/libtsan.so", "/liblsan.so", "/libubsan.so", "/libhwasan.so"};
  std::uint64_t processed_subs ABSL_GUARDED_BY(mu) = ~0ULL;  // dlpi_subs at the last pass
  std::atomic<std::uint64_t> seen_adds{0};  // dlpi_adds/dlpi_subs when the last
  std::atomic<std::uint64_t> seen_subs{0};  // pass started; read without mu
  std::atomic<bool> seen_valid{false};
  Counters counters;
};

State& GetState() {
  // Leaked on purpose: hooks and dl* stubs may run during exit.
  static State* const state = [] {
    auto* s = new State();
    // A child forked while a pass holds the mutex would never get it again.
    RegisterForkLock(ForkStage::kInterposer, &s->mu);
    return s;
  }();
  return *state;
}

// The object containing this address is leakprobe's own.
Addr OwnAddress() noexcept { return AddrOf(&LeakprobeDlsymEntry); }

// A GOT (or data) entry we intend to change.
struct PlannedSlot {
  Addr slot = 0;
  std::size_t hook = 0;
  bool jump_slot = false;
  // A lazily bound entry not yet resolved points back into its own object's
  // PLT; we may take it over only if the loader would bind it to our `real`
  // (i.e. it needs no other symbol version).
  bool unresolved_ok = false;
};

struct PlannedObject {
  ObjectView view;
  void* pin = nullptr;  // dlopen(RTLD_NOLOAD) handle, closed after the pass
  std::vector<PlannedSlot> slots;
};

class Pass {
 public:
  explicit Pass(State& s) : s_(s) {}

  void Run() {
    Snapshot();
    ListObjects();
    for (auto& o : objects_) Plan(o);
    Apply();
    for (auto& o : objects_) {
      if (o.pin != nullptr) dlclose(o.pin);
    }
  }

 private:
  // Copies what the pass needs from the shared state; clears the processed
  // set when objects were unloaded, since a new object may now live at an
  // old address.
  void Snapshot() {
    TrackerLock lock(&s_.mu);
    hooks_ = s_.hooks;
    excluded_ = s_.excluded;
    by_name_.clear();
    for (std::size_t i = 0; i < hooks_.size(); ++i) {
      if (hooks_[i].real != nullptr) by_name_.emplace(hooks_[i].name, i);
    }
    processed_ = s_.processed;
    processed_subs_ = s_.processed_subs;
  }

  static int ListCallback(dl_phdr_info* info, std::size_t size, void* data) noexcept {
    auto* self = static_cast<Pass*>(data);
    if (self->first_) {
      self->first_ = false;
      if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
        self->adds_ = info->dlpi_adds;
        self->subs_ = info->dlpi_subs;
      }
    }
    try {
      self->Consider(info);
    } catch (...) {
      // Allocation failure: this object is retried at the next pass.
    }
    return 0;
  }

  void ListObjects() {
    dl_iterate_phdr(&Pass::ListCallback, this);
    if (subs_ != processed_subs_) processed_.clear();
  }

  void Consider(const dl_phdr_info* info) {
    ObjectView v;
    v.base = info->dlpi_addr;
    v.phdr = info->dlpi_phdr;
    v.phnum = info->dlpi_phnum;
    v.name = info->dlpi_name != nullptr ? info->dlpi_name : "";
    if (!FindDynamic(info, &v.dynamic)) return;
    if (std::binary_search(processed_.begin(), processed_.end(),
                           ObjectKey{v.base, v.dynamic}) &&
        subs_ == processed_subs_) {
      return;
    }
    if (Skipped(v)) {
      skipped_keys_.push_back({v.base, v.dynamic});
      return;
    }
    objects_.push_back(PlannedObject{std::move(v), nullptr, {}});
  }

  bool Skipped(const ObjectView& v) const {
    const Addr vdso = getauxval(AT_SYSINFO_EHDR);
    const Addr interp = getauxval(AT_BASE);
    if ((vdso != 0 && v.base == vdso) || v.name.find("linux-vdso") != std::string::npos) {
      return true;
    }
    if ((interp != 0 && v.base == interp) ||
        v.name.find("/ld-linux") != std::string::npos) {
      return true;
    }
    if (Contains(v, OwnAddress(), false)) return true;
    return std::any_of(excluded_.begin(), excluded_.end(), [&](const std::string& e) {
      return v.name.find(e) != std::string::npos;
    });
  }

  // Pins the object (waiting out a dlopen in flight), checks that it is the
  // base namespace's object at that address, and lists its entries to patch.
  void Plan(PlannedObject& o) {
    o.pin = dlopen(o.view.name.empty() ? nullptr : o.view.name.c_str(),
                   RTLD_LAZY | RTLD_NOLOAD);
    if (o.pin == nullptr) return;  // unloaded meanwhile, or failed to load
    link_map* map = nullptr;
    if (dlinfo(o.pin, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr ||
        map->l_addr != o.view.base || AddrOf(map->l_ld) != o.view.dynamic) {
      // Another namespace's copy, whose libc is not the one we call.
      skipped_keys_.push_back({o.view.base, o.view.dynamic});
      dlclose(o.pin);
      o.pin = nullptr;
      return;
    }
    const DynamicInfo d = ReadDynamic(o.view);
    auto scan = [&](const ElfW(Rela) * rel, std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) {
        const auto type = ELF64_R_TYPE(rel[i].r_info);
        const bool jump_slot = type == R_X86_64_JUMP_SLOT;
        if (!jump_slot && type != R_X86_64_GLOB_DAT &&
            !(type == R_X86_64_64 && rel[i].r_addend == 0)) {
          continue;
        }
        const std::size_t sym = ELF64_R_SYM(rel[i].r_info);
        if (sym == 0) continue;
        const auto it = by_name_.find(d.strtab + d.symtab[sym].st_name);
        if (it == by_name_.end()) continue;
        PlannedSlot p;
        p.slot = o.view.base + rel[i].r_offset;
        p.hook = it->second;
        p.jump_slot = jump_slot;
        p.unresolved_ok =
            jump_slot && VersionBindsToReal(it->second, RequiredVersion(d, sym));
        o.slots.push_back(p);
      }
    };
    scan(d.jmprel, d.jmprel_count);
    scan(d.rela, d.rela_count);
  }

  // Would the loader bind `hook`'s name at `version` to the same function
  // we call? Unversioned references bind to the default version, which is
  // what dlsym(RTLD_DEFAULT) returned.
  bool VersionBindsToReal(std::size_t hook, const char* version) {
    if (version == nullptr) return true;
    auto key = std::make_pair(hook, std::string(version));
    auto it = version_cache_.find(key);
    if (it == version_cache_.end()) {
      void* bound = dlvsym(RTLD_DEFAULT, hooks_[hook].name.c_str(), version);
      it = version_cache_.emplace(std::move(key), bound == hooks_[hook].real).first;
    }
    return it->second;
  }

  void Apply() {
    TrackerLock lock(&s_.mu);
    Counters& c = s_.counters;
    c.passes.fetch_add(1, std::memory_order_relaxed);
    if (!Interposer::Instance().installed()) return;  // Restore() won the race
    if (subs_ != s_.processed_subs) {
      s_.processed.clear();
      s_.processed_subs = subs_;
    }
    for (const ObjectKey& k : skipped_keys_) MarkProcessed(k);
    c.objects_skipped.fetch_add(skipped_keys_.size(), std::memory_order_relaxed);
    for (auto& o : objects_) {
      if (o.pin == nullptr) continue;
      ApplyObject(o);
      MarkProcessed({o.view.base, o.view.dynamic});
    }
    s_.seen_adds.store(adds_, std::memory_order_relaxed);
    s_.seen_subs.store(subs_, std::memory_order_relaxed);
    s_.seen_valid.store(true, std::memory_order_release);
  }

  void MarkProcessed(const ObjectKey& k) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_.mu) {
    auto it = std::lower_bound(s_.processed.begin(), s_.processed.end(), k);
    if (it == s_.processed.end() || !(*it == k)) s_.processed.insert(it, k);
  }

  void ApplyObject(PlannedObject& o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_.mu) {
    Counters& c = s_.counters;
    struct Change {
      Addr slot;
      void* from;
      void* to;
    };
    std::vector<Change> changes;
    std::vector<Addr> pages;
    const auto relro = RelroPages(o.view);
    for (const PlannedSlot& p : o.slots) {
      const Registered& h = hooks_[p.hook];
      if (!Contains(o.view, p.slot, true)) continue;  // not in a writable segment
      void* value = LoadSlot(p.slot);
      if (value == h.replacement) continue;  // already ours: never wrap a hook
      const bool lazy_stub = p.jump_slot && Contains(o.view, AddrOf(value), false);
      if (value != h.real && !(lazy_stub && p.unresolved_ok)) {
        c.slots_foreign.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      changes.push_back({p.slot, value, h.replacement});
      const Addr page = p.slot & ~(PageSize() - 1);
      if (page >= relro.first && page < relro.second &&
          std::find(pages.begin(), pages.end(), page) == pages.end()) {
        pages.push_back(page);
      }
    }
    if (changes.empty()) return;
    if (!UnprotectPages(pages)) {
      c.objects_unwritable.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    std::size_t done = 0;
    for (const Change& ch : changes) {
      void* from = ch.from;
      if (!CompareAndSwap(ch.slot, from, ch.to)) {
        // A lazy entry resolved by the loader in another thread meanwhile.
        from = LoadSlot(ch.slot);
        const Registered* h = nullptr;
        for (const auto& r : hooks_) {
          if (r.replacement == ch.to) h = &r;
        }
        if (h == nullptr || from != h->real || !CompareAndSwap(ch.slot, from, ch.to)) {
          continue;
        }
      }
      Remember({ch.slot, o.view.base, o.view.dynamic, from, ch.to});
      ++done;
    }
    ReprotectPages(pages);
    c.slots_patched.fetch_add(done, std::memory_order_relaxed);
    if (done > 0) c.objects_patched.fetch_add(1, std::memory_order_relaxed);
  }

  void Remember(const PatchedSlot& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s_.mu) {
    for (auto& existing : s_.slots) {
      if (existing.slot == p.slot) {  // an unloaded object's address, reused
        existing = p;
        return;
      }
    }
    s_.slots.push_back(p);
  }

  State& s_;
  std::vector<Registered> hooks_;
  std::unordered_map<std::string_view, std::size_t> by_name_;  // views into hooks_
  std::vector<std::string> excluded_;
  std::vector<ObjectKey> processed_;
  std::uint64_t processed_subs_ = ~0ULL;
  std::vector<PlannedObject> objects_;
  std::vector<ObjectKey> skipped_keys_;
  std::map<std::pair<std::size_t, std::string>, bool> version_cache_;
  bool first_ = true;
  std::uint64_t adds_ = 0, subs_ = 0;
};

// dlpi_adds/dlpi_subs now, from the first object only.
bool LoadCounters(std::uint64_t* adds, std::uint64_t* subs) noexcept {
  struct Out {
    std::uint64_t adds = 0, subs = 0;
    bool ok = false;
  } out;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t size, void* data) noexcept -> int {
        auto* o = static_cast<Out*>(data);
        if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
          o->adds = info->dlpi_adds;
          o->subs = info->dlpi_subs;
          o->ok = true;
        }
        return 1;
      },
      &out);
  *adds = out.adds;
  *subs = out.subs;
  return out.ok;
}

struct RestoreContext {
  State* state;
  std::vector<bool> done;
};

// Runs inside Restore's dl_iterate_phdr, which holds ctx->state->mu: the
// analysis cannot follow a lock into a C callback.
int RestoreCallback(dl_phdr_info* info, std::size_t /*size*/,
                    void* data) noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  auto* ctx = static_cast<RestoreContext*>(data);
  ObjectView v;
  v.base = info->dlpi_addr;
  v.phdr = info->dlpi_phdr;
  v.phnum = info->dlpi_phnum;
  if (!FindDynamic(info, &v.dynamic)) return 0;
  const auto relro = RelroPages(v);
  auto& slots = ctx->state->slots;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const PatchedSlot& p = slots[i];
    if (ctx->done[i] || p.object_base != v.base || p.object_dynamic != v.dynamic) {
      continue;
    }
    ctx->done[i] = true;
    if (!Contains(v, p.slot, true) || LoadSlot(p.slot) != p.replacement) continue;
    void* page = PtrAt<void>(p.slot & ~(PageSize() - 1));
    const bool relro_page = AddrOf(page) >= relro.first && AddrOf(page) < relro.second;
    if (relro_page && mprotect(page, PageSize(), PROT_READ | PROT_WRITE) != 0) {
      continue;  // left patched; the hook passes calls through once inactive
    }
    if (CompareAndSwap(p.slot, p.replacement, p.original)) {
      ctx->state->counters.slots_restored.fetch_add(1, std::memory_order_relaxed);
    }
    if (relro_page) mprotect(page, PageSize(), PROT_READ);
  }
  return 0;
}

}  // namespace

Interposer& Interposer::Instance() {
  static Interposer* const instance = new Interposer();
  return *instance;
}

void Interposer::Install(const InterposeHook* hooks, std::size_t count) {
  State& s = GetState();
  static const InterposeHook kDlHooks[] = {
      {"dlopen", reinterpret_cast<void*>(&LeakprobeDlopenEntry), &LeakprobeRealDlopen},
      {"dlmopen", reinterpret_cast<void*>(&LeakprobeDlmopenEntry), &LeakprobeRealDlmopen},
      {"dlsym", reinterpret_cast<void*>(&LeakprobeDlsymEntry), &LeakprobeRealDlsym},
  };
  std::vector<InterposeHook> all(std::begin(kDlHooks), std::end(kDlHooks));
  all.insert(all.end(), hooks, hooks + count);

  // Resolved outside the mutex (dlsym takes the loader's lock). Why
  // dlsym(RTLD_DEFAULT): it returns exactly what an ordinary, unversioned
  // reference from the global scope binds to, including any interposer ahead
  // of libc (a sanitizer runtime, another preloaded tracer), so we chain to
  // it instead of bypassing it. dlsym(RTLD_NEXT) depends on where leakprobe
  // itself sits in the search order (statically linked into an executable,
  // it would skip definitions there; loaded RTLD_LOCAL by Python, it finds
  // the same as RTLD_DEFAULT). dlvsym(libc, "GLIBC_2.2.5") would bypass such
  // interposers and need a version per name. Our hooks are never exported
  // under libc names and the lookup ignores GOTs, so it cannot return a hook.
  // Entries bound to anything else (another version, a local definition)
  // are left alone by the pass.
  std::vector<void*> resolved(all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    resolved[i] = dlsym(RTLD_DEFAULT, all[i].name);
  }
  {
    TrackerLock lock(&s.mu);
    for (std::size_t i = 0; i < all.size(); ++i) {
      auto it = std::find_if(s.hooks.begin(), s.hooks.end(),
                             [&](const Registered& r) { return r.name == all[i].name; });
      if (it != s.hooks.end()) {
        if (it->replacement != all[i].replacement) {
          throw Error(std::string("leakprobe: ") + all[i].name +
                      " is already interposed by another hook");
        }
        continue;
      }
      if (resolved[i] == nullptr) s.counters.unresolved_names.fetch_add(1);
      // Published before any GOT entry can lead to the hook.
      all[i].real->store(resolved[i], std::memory_order_release);
      s.hooks.push_back({all[i].name, all[i].replacement, all[i].real, resolved[i]});
    }
    s.processed.clear();  // new hooks: every object is looked at again
    s.seen_valid.store(false, std::memory_order_relaxed);
    installed_.store(true, std::memory_order_release);
  }
  Pass(s).Run();
}

void Interposer::Restore() {
  State& s = GetState();
  TrackerLock lock(&s.mu);
  installed_.store(false, std::memory_order_release);
  RestoreContext ctx{&s, std::vector<bool>(s.slots.size(), false)};
  dl_iterate_phdr(&RestoreCallback, &ctx);
  s.slots.clear();  // entries of unloaded objects are simply forgotten
  s.processed.clear();
  s.seen_valid.store(false, std::memory_order_relaxed);
}

namespace {

// The dlsym redirects: appended once each, never removed; read lock-free
// by the dlsym stub (the count is published after the entry).
struct Redirect {
  const char* name = nullptr;
  void* real = nullptr;
  void* replacement = nullptr;
};
constexpr std::size_t kMaxRedirects = 32;
Redirect g_redirects[kMaxRedirects];
std::atomic<std::size_t> g_redirect_count{0};

}  // namespace

void Interposer::RedirectDlsym(const InterposeHook* hooks, std::size_t count) noexcept {
  State& s = GetState();
  TrackerLock lock(&s.mu);
  for (std::size_t i = 0; i < count; ++i) {
    void* real = hooks[i].real->load(std::memory_order_relaxed);
    const std::size_t n = g_redirect_count.load(std::memory_order_relaxed);
    if (real == nullptr || n >= kMaxRedirects) continue;
    bool known = false;
    for (std::size_t j = 0; j < n; ++j) known = known || g_redirects[j].real == real;
    if (known) continue;
    g_redirects[n] = {hooks[i].name, real, hooks[i].replacement};
    g_redirect_count.store(n + 1, std::memory_order_release);
  }
}

namespace interpose_detail {

void* DlsymRedirect(void* handle, const char* name) noexcept {
  const std::size_t n = g_redirect_count.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < n; ++i) {
    if (std::strcmp(name, g_redirects[i].name) != 0) continue;
    if (!Interposer::Instance().installed()) return nullptr;  // restored: the real one
    using DlsymFn = void* (*)(void*, const char*);
    auto real_dlsym =
        reinterpret_cast<DlsymFn>(LeakprobeRealDlsym.load(std::memory_order_relaxed));
    void* found = real_dlsym(handle, name);
    return found == g_redirects[i].real ? g_redirects[i].replacement : nullptr;
  }
  return nullptr;
}

}  // namespace interpose_detail

void Interposer::ExcludeObject(std::string substring) {
  State& s = GetState();
  TrackerLock lock(&s.mu);
  s.excluded.push_back(std::move(substring));
}

void Interposer::PatchNewObjects() {
  if (!installed()) return;
  State& s = GetState();
  std::uint64_t adds = 0, subs = 0;
  if (LoadCounters(&adds, &subs) && s.seen_valid.load(std::memory_order_acquire) &&
      adds == s.seen_adds.load(std::memory_order_relaxed) &&
      subs == s.seen_subs.load(std::memory_order_relaxed)) {
    return;  // nothing loaded or unloaded since the last pass
  }
  Pass(s).Run();
}

InterposeStats Interposer::stats() const noexcept {
  const Counters& c = GetState().counters;
  InterposeStats out;
  out.passes = c.passes.load(std::memory_order_relaxed);
  out.objects_patched = c.objects_patched.load(std::memory_order_relaxed);
  out.objects_skipped = c.objects_skipped.load(std::memory_order_relaxed);
  out.objects_unwritable = c.objects_unwritable.load(std::memory_order_relaxed);
  out.slots_patched = c.slots_patched.load(std::memory_order_relaxed);
  out.slots_restored = c.slots_restored.load(std::memory_order_relaxed);
  out.slots_foreign = c.slots_foreign.load(std::memory_order_relaxed);
  out.unresolved_names = c.unresolved_names.load(std::memory_order_relaxed);
  return out;
}

}  // namespace leakprobe
