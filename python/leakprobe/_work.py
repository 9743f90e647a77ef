"""What a unit of work leaves behind: per (kind, name), the open fds, live
tracked objects and sampled live heap that its runs did not give back
(docs/work.md).

A unit of work is one run of something with a name: a Celery task (kind
``task``, leakprobe.adapters._celery), an HTTP route (kind ``route``,
leakprobe.integrations.asgi). Its integration calls::

    token = leakprobe._work.begin("task", "app.tasks.fetch")
    ...                       # the unit runs
    leakprobe._work.end(token)

What a run left behind:

- **fds**: the net change of the application's open fds: those created
  during the run by code with an application frame on its stack and still
  open at its end, less those the application had created before the run
  that were closed during it (the fd table's creation sequence and the
  positions of its creation and close logs at ``begin``; at ``end``, the
  records logged as created since, each looked up and checked open, and
  those logged as retired since: a cost in the run's own creations and
  closes, not in the process's open fds). A keep-alive connection
  the application replaces during a run (old socket closed, new one
  opened) counts 0. Not counted either way: fds the framework itself
  opened or closed around the run with no application frame on the
  creating stack, such as a result backend's connection opened lazily
  after the first task of a process (it made a clean Celery task show +1
  when this was a net change of all the process's open fds), nor
  leakprobe's own files.
- **objects** and **bytes**: after-minus-before of live tracked objects
  by type and of the sampled live heap, the process's net change.

A unit that closes what it opens adds 0; one that keeps one socket per
run adds 1 per run, so its ``retained_fds`` grows with its ``runs``:
exported as ``leakprobe_work_*{kind,name}`` and fed to the trend engine as
the series ``work/<kind>:<name>:fds`` and ``:objects``, whose verdict says
"task X leaves one socket per run".

Exact when one unit runs at a time in the process (Celery's prefork pool:
one task at a time per child; a sync worker). Blurred when units overlap
(threads, gevent or eventlet pools, async routes): a run is then charged
with what the overlapping runs created and left open meanwhile (fds) or
changed (objects, bytes), so the totals of a leaking unit still grow, but
a clean unit that overlaps it may show part of the growth. ``overlapped``
counts the runs that began while another was in progress (while
leakprobe runs: the native module counts them as it reads the figures).

Cold path only: called from a framework's signal or middleware, never from
an allocation or fd hook. Bounded: at most ``MAX_KINDS`` kinds and
``MAX_NAMES`` names per kind; the runs of further names are counted under
the name ``<other>``. Thread-safe (one lock, never held across a read of
the figures; on a run's path only its end takes it, with ``acquire()`` and
``release()`` rather than ``with``, which costs three times as much on
CPython 3.11: bound ``__enter__``/``__exit__`` methods made per use; the
readers, ``stats`` and ``kept_runs``, take it too).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from . import _runtime

MAX_KINDS = 4
MAX_NAMES = 30  # per kind; (MAX_NAMES + 1) * MAX_KINDS <= the native store's 128 rows
MAX_KEPT_RUNS = 64  # per unit: the latest runs that left fds or objects behind (sites)
OTHER = "<other>"
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_lock = threading.Lock()
_units: dict[tuple[str, str], _Unit] = {}
_names: dict[str, int] = {}  # kind -> names admitted


class _Unit:
    __slots__ = ("kind", "name", "row", "runs", "fds", "objects", "fds_total",
                 "objects_total", "bytes", "kept", "published")

    def __init__(self, kind: str, name: str, row: int) -> None:
        self.kind = kind
        self.name = name
        self.row = row  # its row in the exporter's store: units in creation order
        self.runs = 0
        self.fds: dict[str, int] = {}  # fd kind -> retained
        self.objects: dict[str, int] = {}  # tracked type -> retained
        self.fds_total = 0  # sum(fds.values())
        self.objects_total = 0  # sum(objects.values())
        self.bytes = 0.0
        self.published = False  # its row named in the exporter's store
        # (start, end) monotonic ns of the latest runs that left fds or
        # objects behind, by "fds"/"objects": where their sites come from
        self.kept: dict[str, deque[tuple[int, int]]] = {}


class WorkStat(NamedTuple):
    """What the runs of one unit of work left behind, summed over its runs."""

    kind: str
    name: str
    runs: int
    retained_fds: int
    retained_objects: int
    retained_bytes: float  # sampled heap: an estimate, noisy below the sample size
    fds_by_kind: dict[str, int]  # nonzero only
    objects_by_type: dict[str, int]  # nonzero only


# What a run's begin read, as work_figures() returns it: (the fd table's
# mark or None when fds are not tracked, live tracked objects by type id or
# None, the sampled live heap or None). A plain tuple, as is a Token: a
# named tuple's constructor is a Python function, and both are made on
# every run of every unit (an HTTP request, a Celery task).
_Figures = tuple[tuple[int, int, int] | None, tuple[int, ...] | None, float | None]
_NOTHING: _Figures = (None, None, None)

# What begin() returns and end() takes: (kind, name, figures at the begin,
# time.monotonic_ns() as the run began). Opaque to callers.
Token = tuple[str, str, _Figures, int]


_native_module: Any = None


def _native() -> Any:
    # Imported once (not per call: a function-level import costs every
    # request of a route a package lookup).
    global _native_module
    if _native_module is None:
        from . import _native as native

        _native_module = native
    return _native_module


_valid_kinds: set[str] = set()


def _check(kind: str, name: str) -> None:
    if type(kind) is str and kind in _valid_kinds and type(name) is str and name:
        return  # the common case, without a match per run
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"kind {kind!r} is not valid; accepted: a lower-case word "
                         "([a-z][a-z0-9_]*, at most 32 characters), e.g. 'task' or 'route'")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name {name!r} is not valid; accepted: a non-empty str")
    if len(_valid_kinds) < 64:
        _valid_kinds.add(kind)


def begin(kind: str, name: str) -> Token:
    """Starts measuring one run of the unit `name` of `kind`; pass the
    token to :func:`end` when the run is over."""
    if not (type(kind) is str and kind in _valid_kinds and type(name) is str and name):
        _check(kind, name)  # raises for bad input; notes a valid kind
    started_ns = time.monotonic_ns()
    # The figures are read here rather than in a helper: a Python call
    # costs a request of a route under the middleware ~400 instructions.
    state = _runtime._state
    if state is None:
        return kind, name, _NOTHING, started_ns
    # With fds tracked, the fd table logs creations and closes from here
    # until the run's end releases it.
    config = state.config
    native = _native_module or _native()
    return kind, name, native.work_figures(state.fds, config.objects, config.heap), started_ns


def end(token: Token, name: str | None = None) -> None:
    """Ends the run `token` began: adds what it left behind to its unit's
    totals, and publishes the totals to the exporter. `name`, if given,
    is the unit's name instead of the one given to :func:`begin` (an HTTP
    route is known only once the app has routed the request)."""
    kind, begun_as, before, started_ns = token
    if name is None:
        name = begun_as
    elif not (type(name) is str and name):
        _check(kind, name)  # raises: the kind was checked by begin
    ended_ns = time.monotonic_ns()
    native = _native_module or _native()
    if before is _NOTHING:
        fds = objects = None
        heap = 0.0
    else:
        # What the run left behind: fds by kind, live objects by type
        # (nonzero changes only, None for none) and heap bytes. An fd the
        # run created and closed unseen (os.closerange's close_range
        # syscall, say) is left out by the native count's check of each
        # fd: no reconciliation (~15 us) per run. The fds it created are
        # read from the table's creation log, not by a scan of the table.
        mark, live, heap_before = before
        fds, objects, live_bytes = native.work_end(mark, live, mark is not None)
        if _runtime._state is None:  # stopped during the run: the logs released
            fds = objects = None
            heap = 0.0
        else:
            heap = live_bytes - heap_before if heap_before is not None else 0.0
    lock = _lock  # the one released below, even if reset() replaces it meanwhile
    lock.acquire()
    try:
        unit = _units.get((kind, name)) or _unit(kind, name)
        unit.runs += 1
        unit.bytes += heap
        # None, the common case: the run left nothing behind
        if fds is not None:
            unit.fds_total += _add(unit, "fds", fds, unit.fds, started_ns, ended_ns)
        if objects is not None:
            unit.objects_total += _add(unit, "objects", objects, unit.objects, started_ns,
                                       ended_ns)
        # Only this unit's row: what the run changed (a full re-publish cost
        # every run of 30 routes 17 us), its name once. Under the lock, so
        # that two runs of one unit cannot publish out of order.
        if unit.published:
            native.set_work_counts(unit.row, unit.runs, unit.fds_total, unit.objects_total,
                                   unit.bytes)
        else:
            native.set_work_row(unit.row, unit.kind, unit.name, unit.runs, unit.fds_total,
                                unit.objects_total, unit.bytes)
            unit.published = True
    finally:
        lock.release()


def _add(unit: _Unit, what: str, delta: dict[str, int], totals: dict[str, int],
         started_ns: int, ended_ns: int) -> int:
    """Adds one run's `delta` (by fd kind or type) to `totals`; returns its
    sum. A run that left some behind is kept (for the sites)."""
    for key, value in delta.items():
        totals[key] = totals.get(key, 0) + value
    change = sum(delta.values())
    if change > 0:
        unit.kept.setdefault(what, deque(maxlen=MAX_KEPT_RUNS)).append((started_ns, ended_ns))
    return change


def _unit(kind: str, name: str) -> _Unit:
    """The unit a run of (`kind`, `name`) counts under, when no unit has that
    key (end() looks it up first): a new one, or `<other>` past the caps."""
    kinds = {k for k, _ in _units}
    if kind not in kinds and len(kinds) >= MAX_KINDS:
        # Beyond the kinds' cap: counted in the first kind's <other>.
        kind = sorted(kinds)[0]
        name = OTHER
    elif _names.get(kind, 0) >= MAX_NAMES:
        name = OTHER
    unit = _units.get((kind, name))
    if unit is None:
        unit = _units[(kind, name)] = _Unit(kind, name, len(_units))
        if name != OTHER:
            _names[kind] = _names.get(kind, 0) + 1
    return unit


def stats(kind: str | None = None) -> list[WorkStat]:
    """Every unit's totals (of `kind` only, if given), by kind and name."""
    with _lock:
        units = sorted(_units.values(), key=lambda u: (u.kind, u.name))
        return [WorkStat(u.kind, u.name, u.runs, sum(u.fds.values()),
                         sum(u.objects.values()), u.bytes,
                         {k: v for k, v in sorted(u.fds.items()) if v},
                         {k: v for k, v in sorted(u.objects.items()) if v})
                for u in units if kind is None or u.kind == kind]


def kept_runs(kind: str, name: str, what: str) -> list[tuple[int, int]]:
    """(start, end) ``time.monotonic_ns()`` of the latest runs (at most
    ``MAX_KEPT_RUNS``) of a unit that left `what` ("fds" or "objects")
    behind, oldest first: the trend engine names the site of a unit's
    verdict after what was created in them and is still open."""
    with _lock:
        unit = _units.get((kind, name))
        return list(unit.kept.get(what, ())) if unit is not None else []


def overlapped() -> int:
    """Runs that began while another run was in progress in this process:
    their deltas include what the overlapping runs did (see above)."""
    return int(_native().work_overlapped())


def _after_fork_in_child() -> None:
    reset()


def reset() -> None:
    """Forgets every unit (a forked child starts its own totals; tests)."""
    global _lock
    _lock = threading.Lock()  # a fork may have copied it held
    _units.clear()
    _names.clear()
    try:
        native = _native()
        native.set_work([])
        native.work_reset_runs()
    except Exception:  # the native module is not loaded yet
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)
