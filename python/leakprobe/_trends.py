"""Growth trends and leak verdicts of this process: :func:`verdicts` and
:func:`series`.

Every trend interval (``LEAKPROBE_TREND_INTERVAL``) the sampler thread calls
the native trend state, which records every watched figure in bounded time
series and evaluates each with the trend engine, without the GIL
(docs/trends.md). This module reads the cached verdicts and adds, for a
suspected verdict whose site has live records, the creation stack of one of
them (looked up cold, in the matching snapshot, only when asked); for
``object/<type>:collected_open``, the stack the registry kept with its count
of that site's instances collected while open.

Imported on first use (``leakprobe.verdicts``, ``leakprobe.Verdict``): the
dataclasses module costs milliseconds that ``import leakprobe`` does not pay.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._heap import Frame

_TICK_NS = 5_000_000  # slack for the coarse clock of fd records (a 250 Hz tick is 4 ms)

RESOURCES = ("rss", "heap", "native_heap", "fd", "object", "container", "thread", "pool", "work")
_THREAD_TYPE = "threading.Thread"  # the threading adapter's tracked type
_COLLECTED_OPEN = ":collected_open"  # object/<type>:collected_open
# pool/sqlalchemy:<url>: its site is that of the checked-out connections
_SQLALCHEMY_POOL = "sqlalchemy:"
_CHECKED_OUT_TYPE = "sqlalchemy.PoolProxiedConnection"


@dataclass(frozen=True)
class Verdict:
    """What the trend engine concluded about one series of this process.

    ``suspected`` is True for a leak (``reason == "growing"``): a significant,
    large enough increasing trend after warm-up that does not flatten.
    Growth figures are in base units (``unit``) of the per-window minima's
    robust slope; ``time_to_exhaustion_seconds`` is how long until ``limit``
    at that rate (None when not growing or no limit is known). ``site`` is
    the attribution site the verdict points at (``path:line in function``),
    ``stack`` the creation stack of a live resource made there, innermost
    first (filled for suspected verdicts whose site has live records; for
    ``<type>:collected_open``, the stack of that site's instances collected
    while open).
    """

    resource: str  # rss, heap, native_heap, fd, object, container, thread, pool, work
    key: str  # "total", a kind, "site:<site>", "owner:<type>", a type, a name,
    #           "<library>:<pool>", "<kind>:<name>:fds"
    pid: int
    unit: str  # bytes, fds, objects, entries, threads, connections
    suspected: bool
    reason: str  # warmup, growing, flat, too_small, plateau, shrinking
    growth_per_second: float
    growth_per_hour: float
    confidence: float  # 1 - p_value
    p_value: float
    time_to_exhaustion_seconds: float | None
    limit: float | None
    window_seconds: float
    points: int  # points evaluated (after warm-up and reduction)
    last_value: float
    site: str | None
    stack: tuple[Frame, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON report's series entry (docs/report-schema.md), without
        its ``points``."""
        return {
            "resource": self.resource, "key": self.key, "pid": self.pid,
            "unit": self.unit, "suspected": self.suspected, "reason": self.reason,
            "growth_per_second": self.growth_per_second,
            "growth_per_hour": self.growth_per_hour,
            "confidence": self.confidence, "p_value": self.p_value,
            "time_to_exhaustion_seconds": self.time_to_exhaustion_seconds,
            "limit": self.limit, "window_seconds": self.window_seconds,
            "points_evaluated": self.points, "last_value": self.last_value,
            "site": self.site,
            "stack": [{"filename": f.filename, "lineno": f.lineno, "function": f.function}
                      for f in self.stack],
        }


def _finite(value: float) -> float:
    # JSON has no NaN or infinity; the engine gives neither for these fields.
    return value if math.isfinite(value) else 0.0


class _Stacks:
    """Creation stacks by site, from snapshots taken at most once per call."""

    def __init__(self, native: Any, config: Any, fds_on: bool) -> None:
        self._native = native
        self._config = config
        self._fds_on = fds_on
        self._cache: dict[str, Any] = {}

    def _once(self, name: str, take: Callable[[], Any]) -> Any:
        if name not in self._cache:
            try:
                self._cache[name] = take()
            except Exception:  # tracking stopped meanwhile: no stack
                self._cache[name] = None
        return self._cache[name]

    def heap(self, site: str) -> tuple[Frame, ...]:
        if not self._config.heap:
            return ()
        from ._heap import HeapSnapshot

        snapshot = self._once("heap", lambda: HeapSnapshot._take(self._native))
        if snapshot is None:
            return ()
        stats = [s for s in snapshot.statistics("traceback") if str(s.site) == site]
        return max(stats, key=lambda s: s.size).traceback if stats else ()

    def fd(self, site: str) -> tuple[Frame, ...]:
        if not self._fds_on:
            return ()
        from ._fds import FdSnapshot

        snapshot = self._once("fd", lambda: FdSnapshot._take(self._native))
        if snapshot is None:
            return ()
        records = [r for r in snapshot.fds if r.site_name == site and r.stack]
        return max(records, key=lambda r: r.sequence).stack if records else ()

    def objects(self, type_name: str, site: str) -> tuple[Frame, ...]:
        if not self._config.objects:
            return ()
        from ._objects import ObjectSnapshot

        snapshot = self._once("objects", lambda: ObjectSnapshot._take(self._native))
        if snapshot is None:
            return ()
        records = [r for r in snapshot.records
                   if r.type == type_name and r.site_name == site and r.stack]
        return max(records, key=lambda r: r.sequence).stack if records else ()


    def work(self, key: str) -> tuple[str | None, tuple[Frame, ...]]:
        """The site and stack of a unit of work's verdict (key
        ``<kind>:<name>:fds`` or ``:objects``): the creation site of most
        of the open fds (live objects) created during the unit's latest
        runs that left some behind, and the stack of the newest of them
        (docs/trends.md, "Sites")."""
        kind, _, rest = key.partition(":")
        name, _, what = rest.rpartition(":")
        from . import _work

        runs = _work.kept_runs(kind, name, what)
        if not runs:
            return None, ()
        if what == "fds" and self._fds_on:
            from ._fds import FdSnapshot

            snapshot = self._once("fd", lambda: FdSnapshot._take(self._native))
            records = [r for r in snapshot.fds if r.attributed] if snapshot else []
        elif what == "objects" and self._config.objects:
            from ._objects import ObjectSnapshot

            snapshot = self._once("objects", lambda: ObjectSnapshot._take(self._native))
            records = list(snapshot.records) if snapshot else []
        else:
            return None, ()
        # The runs' intervals, merged, widened at the start by a clock tick
        # (fd records are stamped with the kernel's coarse clock).
        merged: list[list[int]] = []
        for start, end in sorted(runs):
            if merged and start - _TICK_NS <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start - _TICK_NS, end])
        starts = [m[0] for m in merged]
        counts: dict[str, int] = {}
        newest: dict[str, Any] = {}
        for record in records:
            i = bisect.bisect_right(starts, record.created_ns) - 1
            if i < 0 or record.created_ns > merged[i][1]:
                continue
            site = record.site_name
            counts[site] = counts.get(site, 0) + 1
            if record.stack and (site not in newest or record.sequence > newest[site].sequence):
                newest[site] = record
        if not counts:
            return None, ()
        site = max(counts, key=lambda s: (counts[s], s))
        return site, (newest[site].stack if site in newest else ())

    def collected(self, type_name: str, site: str) -> tuple[Frame, ...]:
        """The stack of `type_name`'s instances collected while open at
        `site`: they are gone, so the registry keeps it with their count."""
        if not self._config.objects:
            return ()
        from ._heap import _frames

        sites = self._once(f"collected:{type_name}",
                           lambda: self._native.object_collected_open_sites(type_name))
        for name, _count, frames in sites or ():
            if name == site:
                return _frames(frames)
        return ()


def _stack_of(entry: dict[str, Any], stacks: _Stacks) -> tuple[Frame, ...]:
    """The stack of a suspected verdict's site, from the snapshot its site
    came from (docs/trends.md, "Series and verdicts in the process")."""
    site, resource, key = entry["site"], entry["resource"], entry["key"]
    if not entry["suspected"] or site is None:
        return ()
    if resource == "heap":
        return stacks.heap(site)
    if resource == "fd":
        if key.startswith("owner:"):
            return stacks.objects(key[len("owner:"):], site)
        return stacks.fd(site)
    if resource == "object":
        if key.endswith(_COLLECTED_OPEN):
            return stacks.collected(key[:-len(_COLLECTED_OPEN)], site)
        return stacks.objects(key, site)
    if resource == "thread":
        return stacks.objects(_THREAD_TYPE, site)
    if resource == "pool" and key.startswith(_SQLALCHEMY_POOL):
        return stacks.objects(_CHECKED_OUT_TYPE, site)
    return ()


def _trends_on() -> tuple[Any, Any, bool]:
    from . import _runtime

    state = _runtime._state
    if state is None or not state.config.trends:
        raise RuntimeError("trends are off: leakprobe is not running with "
                           "LEAKPROBE_TRENDS=1 (see leakprobe.status())")
    return _runtime._native(), state.config, state.fds


def verdicts() -> list[Verdict]:
    """One verdict per series this process keeps (flagged or not), flagged
    first, as of the latest trend sample (none before the first). Raises
    RuntimeError when trends are off (LEAKPROBE_TRENDS=0, or leakprobe not
    started)."""
    from . import _runtime

    with _runtime._lock:
        native, config, fds_on = _trends_on()
        raw = native.trend_verdicts()
        if raw is None:
            return []
        stacks = _Stacks(native, config, fds_on)
        pid = os.getpid()
        out = []
        for entry in raw["series"]:
            rate = _finite(entry["growth_per_second"])
            site, stack = entry["site"], _stack_of(entry, stacks)
            if entry["resource"] == "work" and entry["suspected"] and site is None:
                site, stack = stacks.work(entry["key"])
            out.append(Verdict(
                resource=entry["resource"], key=entry["key"], pid=pid, unit=entry["unit"],
                suspected=entry["suspected"], reason=entry["reason"],
                growth_per_second=rate, growth_per_hour=rate * 3600.0,
                confidence=_finite(entry["confidence"]), p_value=_finite(entry["p_value"]),
                time_to_exhaustion_seconds=entry["time_to_exhaustion_seconds"],
                limit=entry["limit"], window_seconds=_finite(entry["window_seconds"]),
                points=entry["points"], last_value=_finite(entry["last_value"]),
                site=site, stack=stack))
        return out


def series(resource: str, key: str) -> list[tuple[float, float]]:
    """The stored history of one series as (seconds since leakprobe started
    in this process, value) pairs, oldest first: the per-bucket minima of
    the finest resolution that covers it all. Empty for a series never
    recorded. Raises ValueError for an unknown resource, RuntimeError when
    trends are off."""
    if resource not in RESOURCES:
        raise ValueError(f"resource {resource!r} is not known; accepted: "
                         + ", ".join(RESOURCES))
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    from . import _runtime

    with _runtime._lock:
        native, _config, _fds_on = _trends_on()
        return native.trend_series(resource, key)
