"""Start, stop and status of the profiler in this process.

The hot work is native (``leakprobe._native``); this module wires it up:
configuration, the background sampler that reads interpreter figures under
the GIL, the exporter's lifecycle, and the fork and exit hooks that keep the
host process safe.

Shared state (``_state``, ``_last_problems``, ``_options``,
``_restart_pending``) is protected by ``_lock``. ``_lock`` is held across
``os.fork()`` (see ``_install_hooks``), so a child never inherits it held by
a thread that does not exist there.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _config, _containers, _owners, _tasks
from ._config import Config, ConfigError
from ._fds import FdRecord, FdSnapshot
from ._heap import HeapSnapshot, HeapStat, NativeSnapshot
from ._objects import ObjectSnapshot, ObjectTypeStats

VERSION = "0.1.0"
_lock = threading.RLock()
_state: _State | None = None
_last_problems: list[str] = []
_options: dict[str, Any] = {}  # the overrides of the last start(), kept for fork
_restart_pending = False  # a forked child's start is queued (_restart_in_child)
_hooks_installed = False
_role: str | None = None  # this process's role label, once started
_parent_role: str | None = None  # the role of the process this one was forked from


def _native() -> Any:
    # Loaded on first start only, so LEAKPROBE_DISABLE=1 costs no native load.
    from . import _native as native

    return native


class _Sampler(threading.Thread):
    """Reads interpreter figures under the GIL and caches them natively, so
    the exporter's scrape thread never needs the GIL; and, every
    ``reconcile_interval`` seconds (None: never), reconciles the fd table
    with /proc/self/fd (native, without the GIL)."""

    def __init__(self, interval: float, heap: bool,
                 reconcile_interval: float | None = None) -> None:
        super().__init__(name="leakprobe-sampler", daemon=True)
        self.interval = interval
        self.reconcile_interval = reconcile_interval
        self.stopping = threading.Event()
        self._native = _native()
        self._failed: set[str] = set()  # tasks whose failure was logged
        self._heap = heap
        self.extra_tasks: list[tuple[str, float, Callable[[], None]]] = []  # set before start()

    def sample_once(self) -> None:
        self._native.set_gc_stats(
            [(g["collections"], g["collected"], g["uncollectable"]) for g in gc.get_stats()]
        )
        if self._heap:
            _restack_heap_hooks(self._native)

    def reconcile_once(self) -> None:
        self._native.fd_reconcile()

    def run(self) -> None:
        # Its allocations are leakprobe's own memory, not the application's.
        self._native.mark_own_thread()
        tasks: list[tuple[str, float, Callable[[], None]]] = [
            ("sampler", self.interval, self.sample_once)]
        if self.reconcile_interval is not None:
            tasks.append(("fd reconcile", self.reconcile_interval, self.reconcile_once))
        tasks += self.extra_tasks
        due = [time.monotonic() + period for _, period, _ in tasks]
        while not self.stopping.wait(max(0.0, min(due) - time.monotonic())):
            for i, (name, period, task) in enumerate(tasks):
                if time.monotonic() < due[i]:
                    continue
                self._guarded(name, task)
                due[i] = time.monotonic() + period

    def _guarded(self, name: str, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception as exc:  # never let the sampler die silently
            if name not in self._failed:
                self._native.log("error", f"{name} failed: {exc!r}; will retry")
                self._failed.add(name)


def _restack_heap_hooks(native: Any) -> None:
    """Another tool changed the allocators (tracemalloc.start() installs its
    hooks over ours, tracemalloc.stop() restores what it found): keep one
    recording layer of ours, on top (see RestackHeapHooks)."""
    if native.heap_restack():
        native.log("warning", "another tool replaced leakprobe's allocator hooks "
                   "(tracemalloc.start or stop); hooks reinstalled on top")


def _watch_tracemalloc(native: Any) -> None:
    """Restack the moment tracemalloc starts or stops, not at the next
    sampler tick: between the two, tracemalloc's own trace records would go
    through our hooks and count as the application's blocks. The wrappers
    go on the built-in _tracemalloc module (which ``tracemalloc`` re-exports
    when it is imported later) and on ``tracemalloc`` if it is imported."""
    import _tracemalloc

    def wrap(module: Any, name: str) -> None:
        original = getattr(module, name, None)
        if original is None or getattr(original, "__leakprobe_wrapped__", False):
            return

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            finally:
                try:
                    _restack_heap_hooks(native)
                except Exception:  # never fail the caller's call
                    pass

        wrapper.__leakprobe_wrapped__ = True  # type: ignore[attr-defined]
        setattr(module, name, wrapper)

    for module in (_tracemalloc, sys.modules.get("tracemalloc")):
        if module is not None:
            wrap(module, "start")
            wrap(module, "stop")


@functools.lru_cache(maxsize=4096)
def is_library_file(path: str) -> bool:
    """Whether code from `path` is not the application's (the attribution
    site rule's prefixes, and the interpreter's frozen modules)."""
    return path.startswith("<frozen ") or os.path.abspath(path).startswith(_library_prefix_tuple())


@functools.lru_cache(maxsize=1)
def _library_prefix_tuple() -> tuple[str, ...]:
    return tuple(_library_prefixes())


def _library_prefixes() -> list[str]:
    """Path prefixes of code that is not the application's: the standard
    library, site-packages, leakprobe itself (the attribution-site rule)."""
    import site
    import sysconfig

    paths = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    paths.add(os.path.dirname(os.path.abspath(__file__)))
    prefixes = set()
    for path in filter(None, paths):
        for form in (os.path.abspath(path), os.path.realpath(path)):
            prefixes.add(os.path.join(form, ""))
    return sorted(prefixes)


class _State:
    def __init__(self, config: Config, sampler: _Sampler | None, port: int | None,
                 error: str | None, fds: bool, group: Any = None) -> None:
        self.config = config
        self.sampler = sampler
        self.group = group  # leakprobe._group.Group, with a fixed port
        self.port = port  # set by the group's takeover task too
        self.error = error  # why the exporter is not serving, if it is not
        self.fds = fds  # fd tracking is on (config.fds, and the hooks went in)


def _python_info(native: Any) -> None:
    impl = {"cpython": "CPython", "pypy": "PyPy"}.get(
        sys.implementation.name, sys.implementation.name)
    major, minor, patch = (str(part) for part in sys.version_info[:3])
    native.set_python_info(impl, major, minor, patch, f"{major}.{minor}.{patch}")


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


def start(**options: Any) -> dict[str, Any]:
    """Starts profiling in this process; returns :func:`status`.

    Options are the ``LEAKPROBE_*`` variables in lower case without the
    prefix (``host``, ``port``, ``log_level``, ``heap``, ``fds``, ...: see
    docs/configuration.md); they override the environment. Calling it again
    with the same configuration does nothing; with a different one it
    restarts. A bad configuration logs one line per problem and leaves
    leakprobe stopped, or raises :class:`ConfigError` in strict mode.
    """
    global _state, _last_problems, _options, _restart_pending
    with _lock:
        _restart_pending = False  # an explicit start() wins over a queued one
        config, problems = _config.resolve(os.environ, options)
        if config.disable and not problems:
            return status()
        native = _native()
        native.set_log_level(config.log_level)
        _owners._bind(native)
        _last_problems = problems
        if problems:
            if config.strict:
                raise ConfigError(problems)
            for problem in problems:
                native.log("warning", f"{problem}; leakprobe is not running")
            return status()
        if _state is not None:
            if _state.config == config:
                return status()
            _stop_locked()
        # What a start that fails midway (a ConfigError in strict mode: the
        # port or the targets file) has started, stopped again before the
        # error reaches the caller: nothing is left half running.
        partial = _State(config, None, None, None, False)
        try:
            _install_hooks()
            _python_info(native)
            if config.heap or config.fds or config.objects or config.native:  # attribution sites
                prefixes = _library_prefixes()
                prefixes += _runfile_prefixes(config)  # `leakprobe run`'s sitecustomize
                # As bytes: a prefix need not be valid UTF-8 (surrogateescape).
                # leakprobe's own package: a thread or an object a framework
                # creates is counted inside an adapter; its site is the
                # framework's call, not the adapter's line.
                own = os.path.dirname(os.path.abspath(__file__)) + os.sep
                native.set_library_prefixes([os.fsencode(p) for p in prefixes],
                                            [os.fsencode(own)])
                _start_async_attribution(native, prefixes)
            if config.heap:
                native.heap_start(config.heap_sample_bytes, config.heap_frames,
                                  config.heap_top_sites)
                _watch_tracemalloc(native)
            if config.native:
                _start_native(native, config)
            fds = partial.fds = config.fds and _start_fds(native, config)
            if config.objects:
                native.objects_start(config.object_frames, config.object_top_sites,
                                     config.object_records)
            sampler = partial.sampler = _Sampler(config.sample_interval, config.heap,
                                                 config.fd_reconcile_interval if fds else None)
            sampler.extra_tasks += _containers.sampler_tasks(native, config)
            if config.trends:  # docs/trends.md: series and verdicts in the process
                native.trend_start(config.trend_interval, config.trend_warmup,
                                   config.heap_sample_bytes, config.native_sample_bytes,
                                   config.heap_top_sites, config.fd_top_sites)
                sampler.extra_tasks.append(("trends", config.trend_interval, native.trend_sample))
            sampler.sample_once()  # the first scrape already has gc figures
            targets = _targets_mode(native, config)
            # With a targets file every process serves its own free port, alone
            # (docs/multiprocess.md#one-target-per-process-file_sd).
            port, error, group = _start_exporter(
                native, config._replace(port=0, group=False) if targets else config)
            partial.group = group
            from . import _runfile  # LEAKPROBE_RUN_DIR: the run file of `leakprobe run`

            sampler.extra_tasks += _runfile.sampler_tasks(config)
            if targets:
                from . import _targets

                sampler.extra_tasks += _targets.sampler_tasks(
                    native, config, port, functools.partial(_refresh_role, native, bool(config.role)))
            if group is not None:
                sampler.extra_tasks.append(("group", config.sample_interval,
                                            functools.partial(_group_task, native, group,
                                                              bool(config.role))))
            sampler.start()
            _start_adapters(native, config)
            _state = _State(config, sampler, port, error, fds, group)
            _options = dict(options)
        except BaseException:
            _state = partial
            _stop_locked()
            raise
        return status()


_async_hooks_registered: set[str] = set()  # the post-import hooks, once each
# The event loop classes whose create_task is wrapped, by module.
_LOOP_CLASSES = {"asyncio.base_events": "BaseEventLoop", "uvloop": "Loop"}


def _start_async_attribution(native: Any, prefixes: list[str]) -> None:
    """Library-spawned asyncio tasks are stitched to their creator (_tasks),
    on asyncio's loops and on uvloop's, from when the application imports
    them (now, if it has)."""
    for module_name, class_name in _LOOP_CLASSES.items():
        module = sys.modules.get(module_name)
        if module is not None:
            _tasks.install(getattr(module, class_name), native, prefixes)
        elif module_name not in _async_hooks_registered:
            _async_hooks_registered.add(module_name)
            import wrapt  # a post-import hook, once per module and process

            def on_import(module: Any, class_name: str = class_name) -> None:
                state = _state
                if state is not None and (state.config.heap or state.config.fds
                                          or state.config.objects):
                    _tasks.install(getattr(module, class_name), _native(),
                                   _library_prefixes())

            wrapt.register_post_import_hook(on_import, module_name)


def _runfile_prefixes(config: Config) -> list[str]:
    from . import _runfile

    return _runfile.library_prefixes(config)


def _start_native(native: Any, config: Config) -> None:
    # The heap's frame depth: one stack service, one depth (docs/native.md).
    native.native_start(config.native_sample_bytes, config.heap_frames,
                        config.native_top_sites)


def _start_fds(native: Any, config: Config) -> bool:
    try:
        native.fd_start(config.fd_frames, config.fd_top_sites)
    except Exception as exc:  # the host runs on; so does the rest of leakprobe
        # The native Error's text already says "fd tracking could not start: ...".
        why = str(exc) if isinstance(exc, native.Error) else \
            f"fd tracking could not start: {exc!r}"
        native.log("warning", f"{why}; profiling continues without fd tracking")
        return False
    return True


def _start_adapters(native: Any, config: Config) -> None:
    """Post-import hooks of the built-in adapters (leakprobe.adapters); the
    libraries themselves are never imported here."""
    try:
        from . import adapters

        # Their figures live in the object registry: off with it.
        adapters.activate(_config.adapter_names(config.adapters) if config.objects else ())
    except Exception as exc:  # the host runs on; so does the rest of leakprobe
        native.log("warning", f"library adapters could not start: {exc!r}; "
                   "profiling continues without them")


def _start_exporter(native: Any, config: Config) -> tuple[int | None, str | None, Any]:
    """Serves the exporter, or, with a fixed port held by another leakprobe
    process of this host, joins that port's group (leakprobe._group);
    returns (port served, why not served, group)."""
    global _role
    from . import _group

    _role = config.role or _group.detect_role(_parent_role)
    native.set_process_role(_role)
    group = None
    if config.group and config.port != 0:
        try:
            group = _group.Group(native, config.host, config.port, _role,
                                 config.exporter_cpu_share)
        except native.Error as exc:  # no private socket: this process serves only itself
            native.log("warning", f"{exc}; the series of this process reach no other")
    try:
        port = native.start_exporter(config.host, config.port, group=group is not None,
                                     cpu_share=config.exporter_cpu_share)
    except native.BindError as exc:
        if group is not None and group.others():
            native.log("info", f"port {config.port} is served by another leakprobe process of "
                       f"this host: its scrapes carry this process's series (pid "
                       f"{os.getpid()}, role {_role}); this process serves the port if "
                       "that one goes")
            return None, None, group
        message = (
            f"LEAKPROBE_HOST={config.host!r}, LEAKPROBE_PORT={config.port}: {exc}; "
            "accepted: an address of this host and a free port (0: any free port)"
        )
        if config.strict:
            if group is not None:
                group.stop()  # its private socket: nothing is left of this start
            raise ConfigError([message]) from None
        native.log("warning", f"{message}; profiling continues without the exporter")
        return None, message, group
    if group is not None:
        group.holder = True
    native.log("info", f"serving metrics on {_url(config.host, port)} (pid {os.getpid()})")
    return port, None, group


def _targets_mode(native: Any, config: Config) -> bool:
    """Whether this process lists itself in a targets file. A file that
    cannot be written raises ConfigError in strict mode; otherwise the
    targets file's task says why and retries (leakprobe._targets)."""
    if config.targets_file is None:
        return False
    from . import _targets

    problem = _targets.check(config.targets_file)
    if problem is not None and config.strict:
        raise ConfigError([problem])
    return True


def _refresh_role(native: Any, role_configured: bool) -> str:
    """This process's role now: a spawned worker's changes once it has
    imported its server (after leakprobe started)."""
    global _role
    if not role_configured:
        from . import _group

        if _group._spawned():
            role = _group.detect_role(_parent_role)
            if role != _role:
                _role = role
                native.set_process_role(role)
    return _role or "main"


def _group_task(native: Any, group: Any, role_configured: bool) -> None:
    """The sampler's group task: serve the port when its holder is gone,
    and follow a role that changes (a spawned worker imports its server
    after leakprobe started)."""
    group.role = _refresh_role(native, role_configured)
    if group.holder or not group.try_to_serve():
        return
    state = _state
    if state is not None and state.group is group:
        state.port, state.error = group.port, None
    native.log("info", f"serving metrics on {_url(group.host, group.port)} (pid "
               f"{os.getpid()}): took the port over from a holder that is gone")


def stop() -> None:
    """Stops profiling and the exporter; a later :func:`start` starts anew."""
    global _restart_pending
    with _lock:
        _restart_pending = False  # a forked child that stops stays stopped
        _stop_locked()


def _stop_locked() -> None:
    global _state
    if _state is None:
        return
    state, _state = _state, None
    sampler = state.sampler  # None, or not started, after a start that failed midway
    if sampler is not None:
        sampler.stopping.set()
    adapters = sys.modules.get("leakprobe.adapters")
    if adapters is not None:
        adapters.deactivate()
    if sampler is not None and sampler.ident is not None \
            and sampler is not threading.current_thread():
        sampler.join(timeout=5)
    if state.fds:
        _native().fd_stop()
    if state.config.heap:
        _native().heap_stop()
    if state.config.native:
        _native().native_stop()
    _tasks.uninstall()
    _containers.reset()
    if state.config.objects:
        _native().objects_stop()
    if state.config.trends:
        _native().trend_stop()
    targets = sys.modules.get("leakprobe._targets")
    if targets is not None:
        targets.stop()  # unlisted before its port closes
    _native().stop_exporter()
    if state.group is not None:
        state.group.stop()


def status() -> dict[str, Any]:
    """What leakprobe is doing in this process: ``running``, ``host``,
    ``port`` and ``url`` of the exporter (``None`` when not serving),
    active ``features``, ``version``, ``pid``, and ``problems`` (the
    configuration problems of the last start, if any), ``error`` (why
    the exporter is not serving), ``role`` (the role label of this
    process's series), ``group`` (with a fixed port: ``port``,
    ``serving`` when this process holds it, and ``processes`` of the group
    now; docs/multiprocess.md) and ``targets_file`` (the file_sd targets
    file that lists this process, if one does)."""
    with _lock:
        state = _state
        result: dict[str, Any] = {
            "running": state is not None,
            "version": VERSION,
            "pid": os.getpid(),
            "host": None,
            "port": None,
            "url": None,
            "features": [],
            "problems": list(_last_problems),
            "error": None,
            "role": None,
            "group": None,
            "targets_file": None,
        }
        if state is not None:
            result["features"] = ["process", "gc"] + (["heap"] if state.config.heap else []) \
                + (["native"] if state.config.native else []) \
                + (["fds"] if state.fds else []) \
                + (["objects"] if state.config.objects else []) \
                + (["trends"] if state.config.trends else [])
            result["error"] = state.error
            result["role"] = _role
            if state.group is not None:
                result["group"] = {"port": state.group.port, "serving": state.group.holder,
                                   "processes": len(state.group.others()) + 1}
            targets = sys.modules.get("leakprobe._targets")
            if targets is not None:
                result["targets_file"] = targets.listed_path()
            if state.port is not None:
                result.update(host=state.config.host, port=state.port,
                              url=_url(state.config.host, state.port))
                result["features"].append("exporter")
        return result


def heap_snapshot() -> HeapSnapshot:
    """The sampled live heap now, per creation stack. Raises RuntimeError
    when heap tracking is off (LEAKPROBE_HEAP=0, or leakprobe not started)."""
    with _lock:
        if _state is None or not _state.config.heap:
            raise RuntimeError("heap tracking is off: leakprobe is not running with "
                               "LEAKPROBE_HEAP=1 (see leakprobe.status())")
        return HeapSnapshot._take(_native())


def native_snapshot() -> NativeSnapshot:
    """The sampled live native heap (malloc family) and anonymous mappings
    now, per creation stack: native frames innermost first, then the Python
    frames from where the interpreter called into native code. Raises
    RuntimeError when native tracking is off (LEAKPROBE_NATIVE=0, the
    default, or leakprobe not started)."""
    with _lock:
        if _state is None or not _state.config.native:
            raise RuntimeError("native tracking is off: leakprobe is not running with "
                               "LEAKPROBE_NATIVE=1 (see leakprobe.status())")
        return NativeSnapshot._take(_native())


def memory_components() -> dict[str, float]:
    """RSS split into ``python_heap``, ``python_arena_free``, ``native_heap``,
    ``mmap`` and ``other``, plus ``rss`` itself, in bytes (as the
    ``leakprobe_memory_bytes`` metric); empty when native tracking is off."""
    with _lock:
        if _state is None or not _state.config.native:
            return {}
    return dict(_native().memory_components())


def top_sites(n: int = 10) -> list[HeapStat]:
    """The `n` sites holding the most live heap, largest first."""
    return heap_snapshot().statistics("site")[:n]


def _fds_on() -> Any:
    if _state is None or not _state.fds:
        raise RuntimeError("fd tracking is off: leakprobe is not running with "
                           "LEAKPROBE_FDS=1, or its hooks could not be installed "
                           "(see leakprobe.status() and the log)")
    return _native()


def open_fds(reconcile: bool = True) -> list[FdRecord]:
    """The process's open fds, by fd number, each with its creation site and
    stack. First reconciles with /proc/self/fd (unless `reconcile` is
    False), so fds made unseen are listed too, with ``attributed=False``.
    Raises RuntimeError when fd tracking is off."""
    return list(fd_snapshot(reconcile).fds)


def fd_snapshot(reconcile: bool = True) -> FdSnapshot:
    """The open fds now, for :meth:`FdSnapshot.compare_to` a later one.
    Reconciles first, as :func:`open_fds` does."""
    with _lock:
        native = _fds_on()
        if reconcile:
            native.fd_reconcile()
        return FdSnapshot._take(native)


def _objects_on() -> Any:
    if _state is None or not _state.config.objects:
        raise RuntimeError("object tracking is off: leakprobe is not running with "
                           "LEAKPROBE_OBJECTS=1 (see leakprobe.status())")
    return _native()


def objects() -> list[ObjectTypeStats]:
    """Every tracked type's figures now: live, created, closed, collected
    while open, dropped, the oldest live object's age, and its live objects
    by creation site; most live first. Raises RuntimeError when object
    tracking is off."""
    return object_snapshot().types()


def object_snapshot() -> ObjectSnapshot:
    """The live tracked objects now, with their creation stacks, for
    :meth:`ObjectSnapshot.compare_to` a later one."""
    with _lock:
        return ObjectSnapshot._take(_objects_on())


def _after_fork_in_child() -> None:
    # The native side has already abandoned the inherited exporter (its
    # threads do not exist here) and closed its listening sockets. This
    # process's own profiler starts later, from the eval loop, not here:
    # these hooks also run in a subprocess child between fork and exec when
    # it has a preexec_fn, and such a child must start no thread and no
    # exporter (see _restart_in_child).
    global _state, _lock, _restart_pending, _parent_role
    _lock = threading.RLock()
    state, _state = _state, None
    if state is not None:
        _parent_role = _role
    if state is None:
        return
    _restart_pending = True
    try:
        if _native().call_from_eval_loop(_restart_in_child):
            return
    except Exception:  # never raise into the host's fork
        pass
    _restart_in_child()  # no pending call could be queued: start now


def _restart_in_child() -> None:
    """Starts the forked child's profiler with the parent's configuration,
    the first time the child runs Python code after the fork: right after
    ``os.fork()`` returns. Not in a child that is about to exec (a
    subprocess's preexec_fn), nor when start() or stop() came first."""
    global _restart_pending
    with _lock:
        if not _restart_pending:
            return
        _restart_pending = False
        if _in_subprocess_child():
            return  # exec follows, or _exit(255): nothing to profile
        try:
            start(**_options)
        except Exception as exc:  # never raise into the host's code
            _native().log("error", f"could not restart in the forked child: {exc}")


def _in_subprocess_child() -> bool:
    """Whether this code runs inside subprocess's fork-and-exec: the
    child's preexec_fn is called from _posixsubprocess.fork_exec, a C
    function, so the Popen._execute_child frame that called it is on the
    stack (in the parent it never is while Python code runs)."""
    subprocess = sys.modules.get("subprocess")
    execute_child = getattr(getattr(subprocess, "Popen", None), "_execute_child", None)
    code = getattr(execute_child, "__code__", None)
    if code is None:
        return False
    frame: Any = sys._getframe()
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _at_exit() -> None:
    # No lock: exit must not wait on anything. The server is released, not
    # joined: civetweb's shutdown would cost up to its poll quantum (~2 s).
    state = _state
    if state is not None:
        state.sampler.stopping.set()
    if "leakprobe._native" in sys.modules:
        native = sys.modules["leakprobe._native"]
        native.heap_freeze()  # the hooks stay (pass-through): frames die now
        native.native_freeze()
        native.release_at_exit()


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
    atexit.register(_at_exit)


def start_from_import() -> None:
    """What ``import leakprobe`` does: start from the environment, unless
    ``LEAKPROBE_DISABLE`` is set to a true value."""
    try:
        if _config._parse_bool(os.environ.get("LEAKPROBE_DISABLE", "0")):
            return
    except _config._Invalid:
        pass  # start() reports the bad value
    if _is_cli():
        return
    start()


def _is_cli() -> bool:
    """Whether this process is the `leakprobe` command itself (the console
    script, or ``python -m leakprobe``), which profiles its PROGRAM, not
    itself."""
    main = sys.modules.get("__main__")
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "leakprobe" and isinstance(getattr(main, "__file__", None), str) \
            and os.path.realpath(main.__file__) == os.path.realpath(script):  # type: ignore[union-attr]
        return True  # the console script (pip's launcher runs leakprobe.cli)
    argv = list(getattr(sys, "orig_argv", ()))[1:]
    i = 0
    while i < len(argv):  # the interpreter's options, up to -m MODULE
        arg = argv[i]
        if arg == "-m":
            return argv[i + 1:i + 2] == ["leakprobe"]
        if arg.startswith("-m"):
            return arg[2:] == "leakprobe"
        if arg in ("-X", "-W"):
            i += 1  # its value
        elif not arg.startswith("-") or arg in ("-c", "-"):
            return False  # a script, -c code or stdin: not us
        i += 1
    return False
