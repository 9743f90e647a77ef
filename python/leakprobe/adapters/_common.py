"""What every adapter shares: the on/off switch its wrappers consult, the
"never raise into the application" guard, and the pool-connection gauges.

Shared state (``_errors``, ``_logged``) is protected by ``_lock``; the
per-pool gauge dicts are updated under the GIL by the library's own event
callbacks (one ``dict`` item add per event) and read as copies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

_lock = threading.Lock()
_errors: dict[str, int] = {}  # adapter name -> internal errors caught
_logged: set[str] = set()  # adapters whose first error was logged


class Switch:
    """Whether an adapter's wrappers record (``on``) or just call through.
    Wrappers read ``on`` without a lock: a plain attribute read under the GIL."""

    __slots__ = ("name", "on")

    def __init__(self, name: str) -> None:
        self.name = name
        self.on = False


def internal_error(adapter: str, exc: BaseException) -> None:
    """Counts an error inside an adapter and logs the first one of each
    adapter; never raises (the application's call goes on untouched)."""
    try:
        with _lock:
            _errors[adapter] = _errors.get(adapter, 0) + 1
            first = adapter not in _logged
            _logged.add(adapter)
        if first:
            from .. import _native

            _native.log("error", f"the {adapter} adapter failed: {exc!r}; the "
                        "application's call was not affected (further errors "
                        "of this adapter are counted, not logged)")
    except Exception:  # the log itself failed: nothing more to do
        pass


def attach_socket(adapter: str, owner: Any, sock: Any) -> None:
    """The open fd of `sock` (anything with ``fileno()``) is owned by the
    tracked object `owner` (docs/fds.md, "Owners"); never raises."""
    try:
        fileno = getattr(sock, "fileno", None)
        if fileno is None:
            return
        fd = fileno()
        if fd >= 0:
            from .. import _objects, _owners

            _owners.attach_fd(_objects.fd_owner(owner), fd)
    except Exception as exc:
        internal_error(adapter, exc)


def owning(adapter: str, owner: Any) -> Any:
    """A context in which fds created on this thread are owned by the
    tracked object `owner` (synchronous code only); never raises."""
    from .. import _objects, _owners

    try:
        return _owners.owning(_objects.fd_owner(owner))
    except Exception as exc:
        internal_error(adapter, exc)
        return _owners.owning(_owners.NO_OWNER)


def errors() -> dict[str, int]:
    """Internal errors caught per adapter since start-up."""
    with _lock:
        return dict(_errors)


def log(level: str, message: str) -> None:
    try:
        from .. import _native

        _native.log(level, message)
    except Exception:
        pass


def guarded(adapter: str, action: Callable[..., Any], *args: Any) -> None:
    """Runs bookkeeping ``action(*args)``; an exception is counted, not raised."""
    try:
        action(*args)
    except Exception as exc:
        internal_error(adapter, exc)


class PoolGauges:
    """Connections by state of the pools of one library, per pool label.

    ``counts[label][state]`` are kept by the library's events (SQLAlchemy)
    or computed on demand by ``probe`` (httpcore, urllib3). Labels are
    capped at ``max_labels``; later ones share the label ``"other"``, so
    the metric's cardinality stays bounded. ``limit_probe`` gives each
    label's size limit (connections in use at which its pools run out), or
    None for a label without one (docs/objects.md, "Pool size limits")."""

    def __init__(self, library: str, max_labels: int = 20) -> None:
        self.library = library
        self.max_labels = max_labels
        self.counts: dict[str, dict[str, int]] = {}
        self.probe: Callable[[], dict[str, dict[str, int]]] | None = None
        self.limit_probe: Callable[[], dict[str, int | None]] | None = None

    def label(self, wanted: str) -> str:
        if wanted in self.counts or len(self.counts) < self.max_labels:
            return wanted
        return "other"

    def add(self, label: str, state: str, delta: int) -> None:
        states = self.counts.get(label)
        if states is None:
            states = self.counts.setdefault(label, {})
        states[state] = states.get(state, 0) + delta

    def rows(self) -> list[tuple[str, str, str, int]]:
        counts = self.probe() if self.probe is not None else \
            {label: dict(states) for label, states in list(self.counts.items())}
        return [(self.library, label, state, value)
                for label, states in sorted(counts.items())
                for state, value in sorted(states.items())]

    def limits(self) -> list[tuple[str, str, int | None]]:
        """Rows ``(library, label, limit or None)``, one per label that
        ``limit_probe`` knows (none without one)."""
        if self.limit_probe is None:
            return []
        return [(self.library, label, limit)
                for label, limit in sorted(self.limit_probe().items())]


def summed_limit(limits: Iterable[int | None]) -> int | None:
    """The limit of pools counted together: the sum of their limits, or None
    when one of them has none (or there are none)."""
    total = 0
    seen = False
    for limit in limits:
        if limit is None or limit < 0:
            return None
        total += limit
        seen = True
    return total if seen else None
