// leakprobe._native — the Python extension module: thin bindings over the
// native core and the Prometheus exporter. The Python package
// (python/leakprobe) is the public API; this module is private.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "containers_bindings.h"
#include "fd_bindings.h"
#include "leakprobe/fd/fd_kind.h"
#include "leakprobe/fd/fd_table.h"
#include "leakprobe/heap/heap_tracker.h"
#include "leakprobe/heap/pymem_hooks.h"
#include "leakprobe/objects/object_registry.h"
#include "leakprobe/process/process_stats.h"
#include "leakprobe/process/runtime_stats.h"
#include "leakprobe/prometheus/collector.h"
#include "leakprobe/prometheus/exporter.h"
#include "leakprobe/prometheus/peers.h"
#include "leakprobe/runtime/error.h"
#include "leakprobe/runtime/fork.h"
#include "leakprobe/runtime/log.h"
#include "leakprobe/runtime/mutex.h"
#include "leakprobe/snapshot.h"
#include "leakprobe/stacks/native_stack.h"
#include "leakprobe/stacks/python_frames.h"
#include "leakprobe/stacks/stack_table.h"
#include "leakprobe/version.h"
#include "native_bindings.h"
#include "object_bindings.h"
#include "prometheus/text_serializer.h"
#include "task_bindings.h"
#include "trend_bindings.h"
#include "without_gil.h"
#include "work_bindings.h"

namespace py = pybind11;

namespace leakprobe {
namespace {

using prometheus_exporter::Exporter;
using prometheus_exporter::PeerServer;
using prometheus_exporter::SnapshotCollector;

// The one exporter of this process. Never destroyed (threads of a released
// server may still run during exit).
struct ExporterSlot {
  Mutex mu;
  Exporter* exporter ABSL_GUARDED_BY(mu) = nullptr;
  // The private socket of this process in its port's group (peers.h), and
  // the collector it renders; both leaked like the exporter at exit.
  PeerServer* peer ABSL_GUARDED_BY(mu) = nullptr;
  std::shared_ptr<SnapshotCollector> peer_collector ABSL_GUARDED_BY(mu);
};

// How long the holder of a port waits for its peers at a scrape.
constexpr std::chrono::milliseconds kPeerDeadline{2000};

ExporterSlot& Slot();

// fork() (ForkStage::kExporter, the outermost lock): the slot's lock is taken
// before the fork so the child never inherits it held by a thread that does
// not exist there. In the child the inherited server has no threads:
// abandon it (see Exporter::AbandonAfterFork) without freeing anything.
void LockSlotForFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { Slot().mu.Lock(); }
void UnlockSlotInParent() ABSL_NO_THREAD_SAFETY_ANALYSIS { Slot().mu.Unlock(); }
void AbandonSlotInChild() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  ExporterSlot& slot = Slot();
  if (slot.exporter != nullptr) {
    slot.exporter->AbandonAfterFork();
    slot.exporter = nullptr;  // leaked: freeing is not safe to do here
  }
  if (slot.peer != nullptr) {
    slot.peer->AbandonAfterFork();
    slot.peer = nullptr;  // leaked, as the exporter
    // The shared_ptr is not touched here: it is reset when a peer starts.
  }
  slot.mu.Unlock();
}

ExporterSlot& Slot() {
  static ExporterSlot* const slot = [] {
    auto* s = new ExporterSlot();
    RegisterForkHandlers(ForkStage::kExporter,
                         {&LockSlotForFork, &UnlockSlotInParent, &AbandonSlotInChild});
    return s;
  }();
  return *slot;
}

int StartExporter(const std::string& host, int port, bool group, double cpu_share) {
  if (!(cpu_share > 0 && cpu_share <= 1)) {
    throw Error("cpu_share must be a share of one CPU in (0, 1], not " +
                std::to_string(cpu_share));
  }
  const WithoutGil no_gil;  // binding and starting threads takes a while
  ExporterSlot& slot = Slot();
  MutexLock lock(&slot.mu);
  if (slot.exporter != nullptr) {
    throw Error("the exporter is already running on " +
                prometheus_exporter::ListeningAddress(slot.exporter->host(),
                                                      slot.exporter->port()));
  }
  auto collector = std::make_shared<SnapshotCollector>(&TakeSnapshot);
  if (group && port > 0) collector->JoinGroup(port, kPeerDeadline);
  slot.exporter = new Exporter(host, port, std::move(collector), cpu_share);
  return slot.exporter->port();
}

// Listens on this process's private socket of `port`'s group; idempotent.
void StartPeer(int port) {
  const WithoutGil no_gil;
  ExporterSlot& slot = Slot();
  MutexLock lock(&slot.mu);
  if (slot.peer != nullptr) {
    if (slot.peer->group_port() == port) return;
    delete slot.peer;
    slot.peer = nullptr;
  }
  auto collector = std::make_shared<SnapshotCollector>(&TakeSnapshot);
  slot.peer = new PeerServer(port, [collector] {
    return prometheus_exporter::EncodeFamilies(collector->CollectOwn());
  });
  slot.peer_collector = std::move(collector);
}

bool StopPeer() {
  const WithoutGil no_gil;
  ExporterSlot& slot = Slot();
  MutexLock lock(&slot.mu);
  if (slot.peer == nullptr) return false;
  delete slot.peer;
  slot.peer = nullptr;
  slot.peer_collector.reset();
  return true;
}

bool StopExporter() {
  const WithoutGil no_gil;
  ExporterSlot& slot = Slot();
  MutexLock lock(&slot.mu);
  if (slot.exporter == nullptr) return false;
  delete slot.exporter;
  slot.exporter = nullptr;
  return true;
}

// Interpreter exit: stop serving data, leak the server (threads die with the
// process), so exit is not delayed by civetweb's shutdown.
void ReleaseAtExit() {
  ExporterSlot& slot = Slot();
  MutexLock lock(&slot.mu);
  if (slot.peer_collector) slot.peer_collector->Close();  // its server may still answer
  if (slot.exporter == nullptr) return;
  slot.exporter->Release();
  slot.exporter = nullptr;  // leaked on purpose
}

std::optional<std::tuple<std::string, int, std::vector<int>>> ExporterInfo() {
  ExporterSlot& slot = Slot();
  MutexLock lock(&slot.mu);
  if (slot.exporter == nullptr) return std::nullopt;
  return std::make_tuple(slot.exporter->host(), slot.exporter->port(),
                         slot.exporter->listening_fds());
}

std::string CollectText() {
  std::ostringstream out;
  std::vector<prometheus::MetricFamily> families =
      prometheus_exporter::BuildFamilies(TakeSnapshot());
  prometheus_exporter::AddProcessLabels(&families, getpid(),
                                        prometheus_exporter::ProcessRole());
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

void SetGcStats(
    const std::vector<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>>&
        generations) {
  std::vector<GcGeneration> converted;
  converted.reserve(generations.size());
  for (const auto& [collections, collected, uncollectable] : generations) {
    converted.push_back({collections, collected, uncollectable});
  }
  RuntimeStats::Instance().SetGc(converted);
}

py::dict ProcessStatsDict() {
  const ProcessStats s = ReadProcessStats();
  py::dict d;
  d["ok"] = s.ok;
  d["resident_memory_bytes"] = s.resident_memory_bytes;
  d["virtual_memory_bytes"] = s.virtual_memory_bytes;
  d["cpu_seconds"] = s.cpu_seconds;
  d["start_time_seconds"] = s.start_time_seconds;
  d["threads"] = s.threads;
  d["open_fds"] = s.open_fds;
  d["max_fds"] = s.max_fds;
  return d;
}

std::vector<std::string> NativeStack(std::size_t max_depth) {
  std::vector<void*> pcs(max_depth);
  const std::size_t n = CaptureNativeStack(pcs.data(), pcs.size());
  return DescribeAddresses(std::vector<const void*>(pcs.begin(), pcs.begin() + n));
}

void HeapStart(std::uint64_t sample_bytes, int max_frames, std::size_t top_sites) {
  HeapConfig config;
  config.sample_bytes = sample_bytes;
  config.max_frames = max_frames;
  config.top_sites = top_sites;
  HeapTracker::Instance().Start(config);
  RestackHeapHooks();  // after Start: the first sample already has a config
}

py::dict HeapSummaryDict() {
  const HeapSummary s = HeapTracker::Instance().Summary();
  py::dict d;
  d["enabled"] = s.enabled;
  d["sample_bytes"] = s.sample_bytes;
  d["live_bytes"] = s.live_bytes;
  d["allocated_bytes"] = s.allocated_bytes;
  d["freed_bytes"] = s.freed_bytes;
  d["samples"] = s.samples;
  d["sampled_blocks"] = s.live_blocks;
  d["dropped_samples"] = s.dropped_samples;
  d["own_thread_samples"] = s.own_thread_samples;
  d["stack_overflows"] = s.stack_overflows;
  d["memory_bytes"] = s.memory_bytes;
  py::dict stacks;
  stacks["frames"] = s.stack_table.frames;
  stacks["positions"] = s.stack_table.positions;
  stacks["stacks"] = s.stack_table.stacks;
  stacks["frames_full"] = s.stack_table.frames_full;
  stacks["positions_full"] = s.stack_table.positions_full;
  stacks["stacks_full"] = s.stack_table.stacks_full;
  stacks["unresolved"] = s.stack_table.unresolved;
  stacks["out_of_memory"] = s.stack_table.out_of_memory;
  stacks["memory_bytes"] = s.stack_table.memory_bytes;
  d["stack_table"] = stacks;
  py::list sites;
  for (const HeapSite& site : s.top_sites) {
    sites.append(py::make_tuple(site.site, site.live_bytes, site.live_count));
  }
  d["top_sites"] = sites;
  return d;
}

py::tuple FramesTuple(StackId id) {
  const std::vector<Frame> frames = StackTable::Instance().FramesOf(id);
  py::tuple out(frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i) {
    out[i] = py::make_tuple(frames[i].filename, frames[i].line, frames[i].function);
  }
  return out;
}

// One tuple per stack with live or past samples: (stack id, site text,
// site index, frames, live bytes, live count, allocated bytes, count).
py::list HeapStacks() {
  const std::vector<HeapStackStat> stats = HeapTracker::Instance().Stacks();
  StackTable& table = StackTable::Instance();
  py::list out;
  for (const HeapStackStat& s : stats) {
    out.append(py::make_tuple(s.stack, table.SiteOf(s.stack), table.SiteIndex(s.stack),
                              FramesTuple(s.stack), s.live_bytes, s.live_count,
                              s.allocated_bytes, s.allocated_count));
  }
  return out;
}

// The calling thread's Python stack as the hooks see it, interned.
py::tuple CaptureStack(int max_frames) {
  LeakprobeRawFrame frames[StackTable::kMaxDepth];
  StackTable& table = StackTable::Instance();
  const StackId id = table.Intern(frames, table.Capture(frames, max_frames));
  return py::make_tuple(table.SiteOf(id), FramesTuple(id));
}

void LogMessage(const std::string& level, const std::string& message) {
  const auto parsed = ParseLogLevel(level);
  if (!parsed) throw Error("unknown log level '" + level + "'");
  Log(*parsed, message);
}

// A pending call (Py_AddPendingCall): the interpreter runs it on its main
// thread, with the GIL, the next time its eval loop checks for pending work.
// Never raises into the code it interrupts: a failure is reported as
// unraisable.
int RunPendingCall(void* arg) {
  const std::unique_ptr<py::object> fn(static_cast<py::object*>(arg));
  PyObject* result = PyObject_CallNoArgs(fn->ptr());
  if (result == nullptr) {
    PyErr_WriteUnraisable(fn->ptr());
  } else {
    Py_DECREF(result);
  }
  return 0;
}

bool CallFromEvalLoop(py::object fn) {
  auto* held = new py::object(std::move(fn));
  if (Py_AddPendingCall(&RunPendingCall, held) != 0) {
    delete held;  // the queue is full
    return false;
  }
  // In a child forked on a thread other than the main one, CPython 3.13
  // does not flag the call on this thread: it ran only once the thread next
  // took the GIL (seen with 3.13.0). Taking the GIL again here is that.
  { const WithoutGil retake; }
  return true;
}

}  // namespace
}  // namespace leakprobe

PYBIND11_MODULE(_native, m) {
  using namespace leakprobe;
  m.doc() = "leakprobe's native core (private; use the leakprobe package)";
  m.attr("__version__") = kVersion;

  static py::exception<Error> error(m, "Error");
  static py::exception<BindError> bind_error(m, "BindError", error.ptr());
  // By value: pybind11's ExceptionTranslator is void (*)(std::exception_ptr).
  // NOLINTNEXTLINE(performance-unnecessary-value-param)
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const BindError& e) {
      py::set_error(bind_error, e.what());
    } catch (const Error& e) {
      py::set_error(error, e.what());
    }
  });

  StackTable::Instance().SetSource(
      {&LeakprobeCapturePythonFrames, &LeakprobeResolvePythonFrame,
       &LeakprobeCaptureTaskFrames, &LeakprobeCapturePythonFramesHeld,
       &LeakprobeCaptureTaskFramesHeld});

  Slot();  // registers the exporter's fork handlers

  m.def("start_exporter", &StartExporter, py::arg("host"), py::arg("port"),
        py::arg("group") = false,
        py::arg("cpu_share") = prometheus_exporter::kDefaultCpuShare,
        "Serve /metrics on host:port (0: any free port); returns the port. With "
        "group, each scrape also carries the series of the port's peers. The "
        "server threads spend at most cpu_share of one CPU (beyond it scrapes "
        "wait). Raises BindError when it cannot listen, Error when already "
        "running or cpu_share is not in (0, 1].");
  m.def("start_peer", &StartPeer, py::arg("port"),
        "Answer the holder of `port` on this process's private socket "
        "(peers.h). Raises Error when the socket cannot be made.");
  m.def("stop_peer", &StopPeer, "Close the private socket; False when none was open.");
  m.def(
      "group_pids", [](int port) { return prometheus_exporter::GroupPids(port); },
      py::arg("port"), "The pids of this user's leakprobe processes in `port`'s group.");
  m.def("set_process_role", &prometheus_exporter::SetProcessRole, py::arg("role"),
        "The role label of this process's series.");
  m.def("stop_exporter", &StopExporter,
        "Stop the exporter; returns False when none was running.");
  m.def("release_at_exit", &ReleaseAtExit,
        "At interpreter exit: stop serving without waiting for server threads.");
  m.def("exporter_info", &ExporterInfo,
        "(host, port, listening fds) of the running exporter, or None.");
  m.def("call_from_eval_loop", &CallFromEvalLoop, py::arg("fn"),
        "Run fn() later, from the main thread's eval loop (a pending call): "
        "only once Python code runs again. False if the queue is full.");
  m.def("collect_text", &CollectText,
        "The current exposition in Prometheus text format, without HTTP.");
  m.def("set_gc_stats", &SetGcStats, py::arg("generations"),
        "Cache gc figures per generation: (collections, collected, uncollectable).");
  m.def(
      "set_python_info",
      [](const std::string& implementation, const std::string& major,
         const std::string& minor, const std::string& patchlevel,
         const std::string& version) {
        RuntimeStats::Instance().SetPythonInfo(
            {implementation, major, minor, patchlevel, version});
      },
      py::arg("implementation"), py::arg("major"), py::arg("minor"),
      py::arg("patchlevel"), py::arg("version"));
  m.def("process_stats", &ProcessStatsDict, "Process figures read from /proc now.");
  m.def("mark_own_thread", &MarkOwnThread,
        "Marks the calling thread as leakprobe's own: the heaps do not sample it "
        "(its memory is the profiler's, not the application's).");
  m.def("native_stack", &NativeStack, py::arg("max_depth") = 32,
        "The calling thread's native stack, innermost first (libunwind).");
  m.def(
      "set_library_prefixes",
      [](std::vector<std::string> prefixes, std::vector<std::string> own) {
        StackTable::Instance().SetLibraryPrefixes(std::move(prefixes), std::move(own));
      },
      py::arg("prefixes"), py::arg("own") = std::vector<std::string>{},
      "Set what the shared stack service counts as library code for "
      "attribution sites (heap samples and fd records alike), and leakprobe's own "
      "code (`own`: library code, and a site only when every frame is its own).");
  m.def("heap_start", &HeapStart, py::arg("sample_bytes"), py::arg("max_frames"),
        py::arg("top_sites"),
        "Start sampled heap tracking (installs the PEP 445 hooks once; GIL held).");
  m.def(
      "heap_stop", [] { HeapTracker::Instance().Stop(); },
      "Stop heap sampling and forget every sample (the hooks stay, pass-through).");
  m.def(
      "heap_freeze", [] { HeapTracker::Instance().Freeze(); },
      "At exit: no more samples or stack captures.");
  m.def("heap_restack", &RestackHeapHooks,
        "Keep one recording layer of the allocator hooks, on top, after another "
        "tool (tracemalloc) installed or removed hooks; returns the domains "
        "where hooks were installed anew (GIL held).");
  m.def("heap_summary", &HeapSummaryDict,
        "Totals and top sites, as the exporter sees them.");
  m.def("heap_stacks", &HeapStacks, "Per-stack estimates, for heap snapshots.");
  m.def("capture_stack", &CaptureStack, py::arg("max_frames") = 32,
        "(site, frames) of the calling thread, captured as the hooks do.");
  RegisterTaskBindings(m);
  RegisterWorkBindings(m);
  RegisterFdBindings(m);
  RegisterObjectBindings(m);
  RegisterContainerBindings(m);
  RegisterTrendBindings(m);
  RegisterNativeBindings(m);
  m.def("log", &LogMessage, py::arg("level"), py::arg("message"),
        "Write one line to leakprobe's log at the given level.");
  m.def(
      "set_log_level", [](const std::string& level) { return SetLogLevel(level); },
      py::arg("level"), "Set the log level; False for an unknown name.");
}
