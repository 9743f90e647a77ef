// Bindings of native-memory tracking (leakprobe/malloc/): start installs the
// malloc hooks through the interposer and wraps pymalloc's arena allocator
// (for the python_arena_free component); snapshots merge each sample's
// native frames with its Python stack.
#include "native_bindings.h"

#include <Python.h>
#include <dlfcn.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "leakprobe/heap/arena_stats.h"
#include "leakprobe/heap/pymem_hooks.h"
#include "leakprobe/malloc/malloc_hooks.h"
#include "leakprobe/malloc/native_heap.h"
#include "leakprobe/snapshot.h"
#include "leakprobe/stacks/native_stack.h"
#include "leakprobe/stacks/stack_table.h"
#include "without_gil.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

// --- pymalloc's arenas, counted exactly ----------------------------------------
//
// The wrapper adds an arena's bytes when the real allocator returns it and
// subtracts them when it is freed, but only for arenas it saw allocated
// (a lock-free set of addresses): arenas from before the wrapper are never
// counted, so their release is not subtracted either. pymalloc calls it with
// the GIL held; it takes no lock, so the hook guard and the fork protocol
// have nothing to do here (the real allocator's mmap comes from the
// interpreter's code, which the malloc hooks leave to the Python heap).

constexpr std::size_t kArenaSlots = std::size_t{1} << 16;  // 64 GiB of 1 MiB arenas
PyObjectArenaAllocator g_real_arena{};
std::unique_ptr<std::atomic<std::uintptr_t>[]> g_arenas;

bool ArenaInsert(void* p) noexcept {
  const auto key = reinterpret_cast<std::uintptr_t>(p);
  std::size_t slot = (key >> 20) & (kArenaSlots - 1);
  for (std::size_t i = 0; i < kArenaSlots; ++i, slot = (slot + 1) & (kArenaSlots - 1)) {
    std::uintptr_t expected = 0;
    if (g_arenas[slot].compare_exchange_strong(expected, key)) return true;
  }
  return false;  // full: this arena is not counted
}

bool ArenaErase(void* p) noexcept {
  const auto key = reinterpret_cast<std::uintptr_t>(p);
  std::size_t slot = (key >> 20) & (kArenaSlots - 1);
  for (std::size_t i = 0; i < kArenaSlots; ++i, slot = (slot + 1) & (kArenaSlots - 1)) {
    std::uintptr_t expected = key;
    if (g_arenas[slot].compare_exchange_strong(expected, 1)) {
      return true;  // 1: a tombstone
    }
    if (expected == 0) return false;
  }
  return false;
}

void* ArenaAlloc(void* /*ctx*/, std::size_t size) noexcept {
  void* p = g_real_arena.alloc(g_real_arena.ctx, size);
  if (p != nullptr && ArenaInsert(p)) AddArenaBytes(static_cast<std::int64_t>(size));
  return p;
}

void ArenaFree(void* /*ctx*/, void* p, std::size_t size) noexcept {
  if (p != nullptr && ArenaErase(p)) AddArenaBytes(-static_cast<std::int64_t>(size));
  g_real_arena.free(g_real_arena.ctx, p, size);
}

void WrapArenaAllocator() {  // GIL held; once
  if (ArenaBytesKnown()) return;
  g_arenas = std::make_unique<std::atomic<std::uintptr_t>[]>(kArenaSlots);
  PyObject_GetArenaAllocator(&g_real_arena);
  PyObjectArenaAllocator ours{nullptr, &ArenaAlloc, &ArenaFree};
  PyObject_SetArenaAllocator(&ours);
  SetArenaBytesKnown();
}

void NativeStart(std::uint64_t sample_bytes, int max_frames, std::size_t top_sites) {
  NativeHeapConfig config;
  config.sample_bytes = sample_bytes;
  config.max_frames = max_frames;
  config.top_sites = top_sites;
  NativeHeap::Instance().Start(config);
  MarkRawAllocatorCalls(true);  // PyMem_RawMalloc's blocks stay the Python heap's
  WrapArenaAllocator();
  // The interpreter's own code: where PyMem_RawMalloc and pymalloc live.
  InstallMallocHooks(reinterpret_cast<const void*>(&PyMem_RawMalloc));
}

py::dict NativeSummaryDict() {
  NativeSummary s;
  {
    const WithoutGil no_gil;
    s = NativeHeap::Instance().Summary();
  }
  py::dict d;
  d["enabled"] = s.enabled;
  d["sample_bytes"] = s.sample_bytes;
  d["live_bytes"] = s.live_bytes;
  d["allocated_bytes"] = s.allocated_bytes;
  d["freed_bytes"] = s.freed_bytes;
  d["samples"] = s.samples;
  d["sampled_blocks"] = s.live_blocks;
  d["dropped_samples"] = s.dropped_samples;
  d["interpreter_samples"] = s.interpreter_samples;
  d["own_thread_samples"] = s.own_thread_samples;
  d["stacks_full"] = s.stacks_full;
  d["mmap_bytes"] = s.mmap_bytes;
  d["mmap_regions"] = s.mmap_regions;
  d["mmap_dropped"] = s.mmap_dropped;
  d["memory_bytes"] = s.memory_bytes;
  d["hooks_installed"] = MallocHooksInstalled();
  py::list sites;
  for (const NativeSite& site : s.top_sites) {
    sites.append(py::make_tuple(site.site, site.live_bytes, site.live_count));
  }
  d["top_sites"] = sites;
  return d;
}

// A native frame as the heap snapshot's frames are: (source file, line,
// "symbol+0x1f") where the object has debug info, else (object, 0,
// "symbol+0x1f").
py::tuple NativeFrame(const NativeLocation& where) {
  if (where.line > 0) return py::make_tuple(where.file, where.line, where.function);
  return py::make_tuple(where.object.empty() ? "?" : where.object, 0, where.function);
}

// One tuple per (Python stack, native stack) with samples, as heap_stacks():
// (id, site text, site index, frames, live bytes, live count, allocated
// bytes, allocated count). Frames: the native frames innermost first, then
// the Python frames from where the interpreter called into native code.
py::list NativeStacks() {
  std::vector<NativeStackStat> stats;
  std::vector<NativeLocation> located;  // every stack's frames, in one pass
  {
    const WithoutGil no_gil;  // symbolising reads files
    stats = NativeHeap::Instance().Stacks();
    std::vector<const void*> pcs;
    for (const NativeStackStat& s : stats) {
      pcs.insert(pcs.end(), s.pcs.begin(), s.pcs.end());
    }
    located = LocateAddresses(pcs);
  }
  StackTable& table = StackTable::Instance();
  py::list out;
  std::size_t id = 0;
  std::size_t next = 0;  // the next stack's first frame in `located`
  for (const NativeStackStat& s : stats) {
    const std::size_t base = next;  // this stack's first frame in `located`
    next += s.pcs.size();
    const std::vector<Frame> python = table.FramesOf(s.python);
    py::tuple frames(s.pcs.size() + python.size());
    for (std::size_t i = 0; i < s.pcs.size(); ++i) {
      frames[i] = NativeFrame(located[base + i]);
    }
    for (std::size_t i = 0; i < python.size(); ++i) {
      frames[s.pcs.size() + i] =
          py::make_tuple(python[i].filename, python[i].line, python[i].function);
    }
    std::size_t site_index = 0;
    std::string site = "<native>";
    if (s.python != kEmptyStack) {
      site_index = s.pcs.size() + table.SiteIndex(s.python);
      site = table.SiteOf(s.python);
    } else if (!s.pcs.empty()) {
      site_index = NativeHeap::NativeSiteIndex(s.pcs);
      site = Describe(located[base + site_index]);
    }
    out.append(py::make_tuple(id++, site, site_index, frames, s.live_bytes, s.live_count,
                              s.allocated_bytes, s.allocated_count));
  }
  return out;
}

py::dict MemoryComponentsDict() {
  Snapshot snap;
  {
    const WithoutGil no_gil;
    snap = TakeSnapshot();
  }
  py::dict d;
  if (!snap.memory) return d;
  const MemoryComponents& m = *snap.memory;
  d["rss"] = m.rss;
  d["python_heap"] = m.python_heap;
  d["python_arena_free"] = m.python_arena_free;
  d["native_heap"] = m.native_heap;
  d["mmap"] = m.mmap;
  d["other"] = m.other;
  return d;
}

}  // namespace

void RegisterNativeBindings(py::module_& m) {
  m.def(
      "native_start", &NativeStart, py::arg("sample_bytes"), py::arg("max_frames"),
      py::arg("top_sites"),
      "Start sampled native-memory tracking (installs the malloc hooks once; GIL held).");
  m.def(
      "native_stop",
      [] {
        MarkRawAllocatorCalls(false);
        NativeHeap::Instance().Stop();
      },
      "Stop native sampling and forget every sample (the hooks stay, pass-through).");
  m.def(
      "native_freeze", [] { NativeHeap::Instance().Freeze(); },
      "At exit: no more samples or stack captures.");
  m.def("native_summary", &NativeSummaryDict, "Totals and top native sites.");
  m.def("native_stacks", &NativeStacks,
        "Per-stack estimates, native frames merged with Python frames, for snapshots.");
  m.def("memory_components", &MemoryComponentsDict,
        "RSS split into python_heap, python_arena_free, native_heap, mmap, other "
        "(empty when native tracking is off).");
}

}  // namespace leakprobe
