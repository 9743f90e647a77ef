// leakprobe._native's fd tracking: thin bindings over the fd table, the
// hooks, the reconciler and socket details. Everything that makes syscalls
// or may wait for a lock runs with the GIL released; Python objects are
// built afterwards.
#include "fd_bindings.h"

#include <pybind11/stl.h>
#include <time.h>

#include <exception>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "leakprobe/fd/fd_hooks.h"
#include "leakprobe/fd/fd_owners.h"
#include "leakprobe/fd/fd_reconcile.h"
#include "leakprobe/fd/fd_stacks.h"
#include "leakprobe/fd/fd_summary.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/fd/socket_info.h"
#include "leakprobe/interpose/interpose.h"
#include "leakprobe/runtime/clock.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/stacks/stack_table.h"
#include "without_gil.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

py::dict ReconcileDict(const ReconcileResult& r) {
  py::dict d;
  d["scanned"] = r.scanned;
  d["added"] = r.added;
  d["retired"] = r.retired;
  d["replaced"] = r.replaced;
  d["seconds"] = r.seconds;
  return d;
}

// A reconcile, then the TCP state counts the exporter serves until the
// next one. Without the GIL.
ReconcileResult ReconcileNow() {
  FdTable& table = ProcessFdTable();
  const ReconcileResult r = ReconcileFds(table);
  RefreshTcpStates(table);
  return r;
}

void FdStart(int max_frames, int top_sites) {
  if (max_frames < 0 || max_frames > static_cast<int>(StackTable::kMaxDepth)) {
    throw Error("fd tracking: max_frames must be between 0 and " +
                std::to_string(StackTable::kMaxDepth) + ", not " +
                std::to_string(max_frames));
  }
  if (top_sites < 0) {
    throw Error("fd tracking: top_sites must be 0 or more, not " +
                std::to_string(top_sites));
  }
  // At interpreter exit, stacks are no longer captured: frames and thread
  // states are being torn down while hooks still run.
  static bool freeze_registered = false;
  if (!freeze_registered) {
    py::module_::import("atexit").attr("register")(
        py::cpp_function([] { FreezeFdStacks(); }));
    freeze_registered = true;
  }
  const WithoutGil no_gil;  // patching takes the loader's locks
  SetFdTopSites(static_cast<std::size_t>(top_sites));
  EnableFdStacks(max_frames);
  try {
    InstallFdHooks();
  } catch (const std::exception& e) {
    DisableFdStacks();
    throw Error(std::string("fd tracking could not start: ") + e.what());
  }
  if (!FdHooksActive()) {
    DisableFdStacks();
    throw Error("fd tracking could not start: the libc fd calls could not be interposed");
  }
  // fds that existed before start become known (unattributed, classified).
  ReconcileNow();
}

void FdStop() {
  const WithoutGil no_gil;
  RemoveFdHooks();
  DisableFdStacks();
  ProcessFdTable().Clear();
  ResetReconcileStats();
  ClearTcpStates();
}

// One open_fds() entry, gathered without the GIL.
struct FdEntry {
  FdRecord record;
  std::string target;
  SocketDetails socket;
};

py::object Optional(const std::optional<std::string>& s) {
  return s ? py::object(py::str(*s)) : py::object(py::none());
}

// An owner of fds, named for Python.
struct OwnerEntry {
  std::string type;
  std::string site;
  std::vector<Frame> stack;
};

py::list FramesList(const std::vector<Frame>& stack) {
  py::list frames;
  for (const Frame& f : stack) {
    frames.append(py::make_tuple(f.filename, f.line, f.function, f.library));
  }
  return frames;
}

py::list OpenFds() {
  std::vector<FdEntry> entries;
  std::unordered_map<std::uint32_t, std::pair<std::string, std::vector<Frame>>> stacks;
  std::unordered_map<std::uint32_t, OwnerEntry> owners;
  std::int64_t now = 0;
  {
    const WithoutGil no_gil;
    const StackTable& table = StackTable::Instance();
    for (FdRecord& record : ProcessFdTable().OpenFds()) {
      FdEntry e{record, FdTarget(record.fd), ResolveSocket(record.fd, record.kind)};
      if (record.attributed && stacks.find(record.stack_id) == stacks.end()) {
        stacks.emplace(record.stack_id, std::make_pair(table.SiteOf(record.stack_id),
                                                       table.FramesOf(record.stack_id)));
      }
      if (record.owner != kNoOwner && owners.find(record.owner) == owners.end()) {
        if (const std::optional<FdOwner> owner = ProcessFdOwners().Get(record.owner)) {
          owners.emplace(record.owner,
                         OwnerEntry{owner->type, table.SiteOf(owner->stack_id),
                                    table.FramesOf(owner->stack_id)});
        }
      }
      entries.push_back(std::move(e));
    }
    now = MonotonicNs();
  }
  py::list out;
  for (const FdEntry& e : entries) {
    const FdRecord& r = e.record;
    py::dict d;
    d["fd"] = r.fd;
    d["kind"] = FdKindName(r.kind);
    d["sequence"] = r.sequence;
    d["created_ns"] = r.created_ns;
    d["age_seconds"] = static_cast<double>(now - r.created_ns) / 1e9;
    d["attributed"] = r.attributed;
    if (r.attributed) {
      const auto& [site, stack] = stacks.at(r.stack_id);
      d["site"] = site;
      d["stack"] = FramesList(stack);
    } else {
      d["site"] = kUnattributedSite;
      d["stack"] = py::list();
    }
    d["target"] = e.target;
    d["local"] = Optional(e.socket.local);
    d["peer"] = Optional(e.socket.peer);
    d["tcp_state"] = Optional(e.socket.tcp_state);
    const auto owner = owners.find(r.owner);
    if (owner == owners.end()) {
      d["owner"] = py::none();
    } else {
      py::dict o;
      o["type"] = owner->second.type;
      o["site"] = owner->second.site;
      o["stack"] = FramesList(owner->second.stack);
      d["owner"] = std::move(o);
    }
    out.append(std::move(d));
  }
  return out;
}

py::dict ByKind(const std::array<std::uint64_t, kFdKindCount>& counts) {
  py::dict d;
  for (std::size_t k = 0; k < kFdKindCount; ++k) {
    d[FdKindName(static_cast<FdKind>(k))] = counts[k];
  }
  return d;
}

py::dict FdCountersDict() {
  FdCounters c;
  ReconcileStats r;
  InterposeStats interpose;
  std::array<std::uint64_t, kFdKindCount> open{};
  std::array<std::uint64_t, kFdKindCount> open_attributed{};  // creation seen by a hook
  std::uint64_t unattributed = 0;
  {
    const WithoutGil no_gil;
    const FdTable& table = ProcessFdTable();
    for (const FdRecord& record : table.OpenFds()) {
      ++open[static_cast<std::size_t>(record.kind)];
      if (!record.attributed) {
        ++unattributed;
      } else {
        ++open_attributed[static_cast<std::size_t>(record.kind)];
      }
    }
    c = table.Counters();
    r = GetReconcileStats();
    interpose = Interposer::Instance().stats();
  }
  py::dict d;
  d["opened"] = ByKind(c.opened);
  d["closed"] = ByKind(c.closed);
  d["open"] = ByKind(open);
  d["open_attributed"] = ByKind(open_attributed);
  d["unattributed"] = unattributed;
  d["dropped"] = c.dropped;
  d["replaced"] = c.replaced;
  d["conflicts"] = c.conflicts;
  d["reconciles"] = r.reconciles;
  d["last_reconcile_seconds"] = r.last_seconds;
  d["objects_patched"] = interpose.objects_patched;
  d["slots_patched"] = interpose.slots_patched;
  return d;
}

}  // namespace

void RegisterFdBindings(py::module_& m) {
  m.def("fd_start", &FdStart, py::arg("max_frames"), py::arg("top_sites"),
        "Start fd tracking: interpose libc's fd calls (idempotent), record the "
        "creating Python stack (up to max_frames frames), name top_sites sites "
        "in the metrics, and reconcile once so fds open before start are known. "
        "Raises Error when the calls cannot be interposed.");
  m.def("fd_stop", &FdStop,
        "Restore every interposed entry and forget every record; safe when not "
        "started.");
  m.def("fd_active", &FdHooksActive, "Whether fd tracking is on.");
  m.def(
      "fd_reconcile",
      [] {
        ReconcileResult r;
        {
          const WithoutGil no_gil;
          r = ReconcileNow();
        }
        return ReconcileDict(r);
      },
      "Reconcile the table with /proc/self/fd (GIL released): "
      "{scanned, added, retired, replaced, seconds}.");
  m.def("open_fds", &OpenFds,
        "One dict per open fd record: fd, kind, sequence, created_ns, age_seconds, "
        "attributed, site, stack, target, local, peer, tcp_state, owner.");
  m.def(
      "fd_owner_intern",
      [](const std::string& type, std::uint32_t stack_id) {
        return ProcessFdOwners().Intern(type, stack_id);
      },
      py::arg("type"), py::arg("stack_id"),
      "The owner id of (type, creation stack id): one per distinct pair, "
      "the overflow owner once the owner table is full.");
  m.def("fd_owner_set_thread", &SetThreadFdOwner, py::arg("owner"),
        "Make fds created on this thread from now on carry `owner` (0: none); "
        "returns the previous owner, to restore.");
  m.def(
      "fd_set_owner",
      [](int fd, std::uint32_t owner) {
        const WithoutGil no_gil;
        FdTable& table = ProcessFdTable();
        const std::optional<FdRecord> record = table.Find(fd);
        return record.has_value() && table.SetOwner(fd, record->sequence, owner);
      },
      py::arg("fd"), py::arg("owner"),
      "Give the open record of `fd` the owner `owner`; False when leakprobe has "
      "no record of that fd.");
  m.def(
      "fd_sequence",
      [] {
        const FdTable::WorkMark mark = ProcessFdTable().Mark();
        return py::make_tuple(mark.sequence, mark.closes, mark.opens);
      },
      "The fd table's mark, as a unit of work takes it (work_figures): (creation "
      "sequence of the last fd recorded so far, attributed records retired so far, "
      "attributed creations logged so far).");
  m.def("fd_counters", &FdCountersDict,
        "reconciles, last_reconcile_seconds, objects_patched, slots_patched.");
}

}  // namespace leakprobe
