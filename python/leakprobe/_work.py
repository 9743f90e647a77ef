"""What a unit of work leaves behind: per (kind, name), the open fds, live
tracked objects and sampled live heap that its runs did not give back
(docs/work.md).

A unit of work is one run of something with a name: a Celery task (kind
``task``, leakprobe.adapters._celery), an HTTP route (kind ``route``,
leakprobe.integrations.asgi). Its integration calls::

    token = leakprobe._work.begin("task", "app.tasks.fetch")
    ...                       # the unit runs
    leakprobe._work.end(token)

``begin`` reads the process's figures (open fds by kind from the fd table,
live objects by tracked type, the sampled live heap); ``end`` reads them
again and adds after-minus-before to the unit's totals. A unit that closes
what it opens adds 0; one that keeps one socket per run adds 1 per run, so
its ``retained_fds`` grows with its ``runs``: exported as
``leakprobe_work_*{kind,name}`` and fed to the trend engine as the series
``work/<kind>:<name>:fds`` and ``:objects``, whose verdict says "task X
leaves one socket per run".

The deltas are the whole process's: exact when one unit runs at a time in
the process (Celery's prefork pool: one task at a time per child; a sync
worker), blurred when units overlap (threads, gevent or eventlet pools,
async routes): a run is then charged with what the overlapping runs
opened or closed meanwhile, so the totals of a leaking unit still grow, but
a clean unit that overlaps it may show part of the growth. ``overlapped``
counts the runs that began while another was in progress.

Cold path only: called from a framework's signal or middleware, never from
an allocation or fd hook. Bounded: at most ``MAX_KINDS`` kinds and
``MAX_NAMES`` names per kind; the runs of further names are counted under
the name ``<other>``. Thread-safe (one lock, never held across a read of
the figures).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, NamedTuple

MAX_KINDS = 4
MAX_NAMES = 30  # per kind; (MAX_NAMES + 1) * MAX_KINDS <= the native store's 128 rows
OTHER = "<other>"
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

_lock = threading.Lock()
_units: dict[tuple[str, str], _Unit] = {}
_names: dict[str, int] = {}  # kind -> names admitted
_in_progress = 0
_overlapped = 0


class _Unit:
    __slots__ = ("kind", "name", "runs", "fds", "objects", "bytes")

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.runs = 0
        self.fds: dict[str, int] = {}  # fd kind -> retained
        self.objects: dict[str, int] = {}  # tracked type -> retained
        self.bytes = 0.0


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


class _Figures(NamedTuple):
    fds: dict[str, int] | None
    objects: dict[str, int] | None
    heap: float | None


class Token(NamedTuple):
    kind: str
    name: str
    before: _Figures


def _native() -> Any:
    from . import _native as native

    return native


def _figures() -> _Figures:
    """The process's figures now; None for a tracker that is off."""
    from . import _runtime

    state = _runtime._state
    if state is None:
        return _Figures(None, None, None)
    native = _native()
    fds = objects = heap = None
    if state.fds:
        # Reconciled first (~20 us): fds closed unseen before the run (by
        # os.closerange's close_range syscall, say; a Celery child showed
        # -1 in a clean task without this) would otherwise leave the table
        # at the sampler's next reconcile, inside whichever run is then.
        # Attributed only: what reconciliation adds (fds open before start,
        # raw syscalls) is no run's doing.
        from . import _files

        with _files.FD_LOCK:  # not amid leakprobe's own file write
            native.fd_reconcile()
            counters = native.fd_counters()["open_attributed"]
        fds = {k: v for k, v in counters.items() if v}
    if state.config.objects:
        objects = {t["name"]: t["live"] for t in native.object_summary()["types"] if t["live"]}
    if state.config.heap:
        heap = float(native.heap_summary()["live_bytes"])
    return _Figures(fds, objects, heap)


def _check(kind: str, name: str) -> None:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"kind {kind!r} is not valid; accepted: a lower-case word "
                         "([a-z][a-z0-9_]*, at most 32 characters), e.g. 'task' or 'route'")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name {name!r} is not valid; accepted: a non-empty str")


def begin(kind: str, name: str) -> Token:
    """Starts measuring one run of the unit `name` of `kind`; pass the
    token to :func:`end` when the run is over."""
    global _in_progress, _overlapped
    _check(kind, name)
    with _lock:
        if _in_progress:
            _overlapped += 1
        _in_progress += 1
    return Token(kind, name, _figures())


def _delta(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int]:
    if after is None or before is None:
        return {}
    keys = after.keys() | before.keys()
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def end(token: Token, name: str | None = None) -> None:
    """Ends the run `token` began: adds what it left behind to its unit's
    totals, and publishes the totals to the exporter. `name`, if given,
    is the unit's name instead of the one given to :func:`begin` (an HTTP
    route is known only once the app has routed the request)."""
    global _in_progress
    if name is not None:
        _check(token.kind, name)
        token = token._replace(name=name)
    after = _figures()
    before = token.before
    fds = _delta(after.fds, before.fds)
    objects = _delta(after.objects, before.objects)
    heap = (after.heap - before.heap) if after.heap is not None and before.heap is not None \
        else 0.0
    with _lock:
        _in_progress = max(0, _in_progress - 1)
        unit = _unit(token.kind, token.name)
        unit.runs += 1
        for key, value in fds.items():
            unit.fds[key] = unit.fds.get(key, 0) + value
        for key, value in objects.items():
            unit.objects[key] = unit.objects.get(key, 0) + value
        unit.bytes += heap
        rows = _rows()
    _native().set_work(rows)


def _unit(kind: str, name: str) -> _Unit:
    unit = _units.get((kind, name))
    if unit is not None:
        return unit
    kinds = {k for k, _ in _units}
    if kind not in kinds and len(kinds) >= MAX_KINDS:
        # Beyond the kinds' cap: counted in the first kind's <other>.
        kind = sorted(kinds)[0]
        name = OTHER
    elif _names.get(kind, 0) >= MAX_NAMES:
        name = OTHER
    unit = _units.get((kind, name))
    if unit is None:
        unit = _units[(kind, name)] = _Unit(kind, name)
        if name != OTHER:
            _names[kind] = _names.get(kind, 0) + 1
    return unit


def _rows() -> list[tuple[str, str, int, int, int, float]]:
    return [(u.kind, u.name, u.runs, sum(u.fds.values()), sum(u.objects.values()), u.bytes)
            for u in sorted(_units.values(), key=lambda u: (u.kind, u.name))]


def stats(kind: str | None = None) -> list[WorkStat]:
    """Every unit's totals (of `kind` only, if given), by kind and name."""
    with _lock:
        units = sorted(_units.values(), key=lambda u: (u.kind, u.name))
        return [WorkStat(u.kind, u.name, u.runs, sum(u.fds.values()),
                         sum(u.objects.values()), u.bytes,
                         {k: v for k, v in sorted(u.fds.items()) if v},
                         {k: v for k, v in sorted(u.objects.items()) if v})
                for u in units if kind is None or u.kind == kind]


def overlapped() -> int:
    """Runs that began while another run was in progress in this process:
    their deltas include what the overlapping runs did (see above)."""
    with _lock:
        return _overlapped


def _after_fork_in_child() -> None:
    reset()


def reset() -> None:
    """Forgets every unit (a forked child starts its own totals; tests)."""
    global _lock, _in_progress, _overlapped
    _lock = threading.Lock()  # a fork may have copied it held
    _units.clear()
    _names.clear()
    _in_progress = 0
    _overlapped = 0
    try:
        _native().set_work([])
    except Exception:  # the native module is not loaded yet
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)
