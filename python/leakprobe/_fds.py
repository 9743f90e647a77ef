"""Open file descriptors and sockets: what the fd tracker knows, per fd, with
its creating stack, and snapshots that answer "which fds appeared since
then, created where" (``FdSnapshot.compare_to``), in the vocabulary of
heap snapshots (see docs/fds.md).

Records come from hooks on libc's fd calls; fds made where no hook sees them
(raw ``syscall()``, statically linked code, before leakprobe started) are
added by reconciling with ``/proc/self/fd`` and have ``attributed=False``.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple  # not dataclasses: slow to import

from ._heap import Frame, KeyType, _check_key_type, _frames, _group, _pairs

NATIVE = "<native>"  # created by a call with no Python frame on its thread
UNATTRIBUTED = "<unattributed>"  # found in /proc/self/fd, creation unseen


def _site_name(site: Frame | None, attributed: bool) -> str:
    if site is not None:
        return str(site)
    return NATIVE if attributed else UNATTRIBUTED


class FdOwner(NamedTuple):
    """The resource object an fd was created for (docs/objects.md): its type
    and where that object was created. The object itself is not kept."""

    type: str  # "httpx.Client", "sqlalchemy.Engine", ...
    site: Frame | None  # innermost application frame of the owner's creation
    stack: tuple[Frame, ...]  # the owner's creating Python stack, innermost first

    def __str__(self) -> str:
        return f"{self.type} created at {self.site if self.site is not None else NATIVE}"

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any] | None) -> FdOwner | None:
        if raw is None:
            return None
        stack = _frames(raw["stack"])
        site = next((f for f in stack if str(f) == raw["site"]), None)
        return cls(raw["type"], site, stack)


class FdRecord(NamedTuple):
    """One open file descriptor, as leakprobe recorded its creation."""

    fd: int
    kind: str  # file, tcp, tcp6, udp, unix, pipe, eventfd, epoll, timerfd, ...
    sequence: int  # creation order, process-wide: a reused fd number gets a new one
    created_ns: int  # time.monotonic_ns() clock at creation, to the kernel tick
    age_seconds: float  # at the time the record was read
    attributed: bool  # False: found by reconciliation, creating call unseen
    site: Frame | None  # innermost application frame; None: see site_name
    stack: tuple[Frame, ...]  # creating Python stack, innermost first
    target: str | None  # what /proc/self/fd/N links to, e.g. /tmp/x, socket:[123]
    local: str | None  # sockets: local address, e.g. 127.0.0.1:8000
    peer: str | None  # connected sockets: peer address
    tcp_state: str | None  # TCP sockets: ESTABLISHED, CLOSE_WAIT, LISTEN, ...
    owner: FdOwner | None = None  # the resource object it was created for, if known

    @property
    def site_name(self) -> str:
        """``path:line in function``, ``<native>`` (no Python frame) or
        ``<unattributed>`` (creation not seen); the metric label's text."""
        return _site_name(self.site, self.attributed)

    def __str__(self) -> str:
        what = " ".join(filter(None, (
            self.kind,
            f"{self.local} -> {self.peer}" if self.local and self.peer else self.local,
            self.tcp_state,
            None if self.local else self.target,
        )))
        owned = f", owned by {self.owner}" if self.owner is not None else ""
        return (f"fd {self.fd} ({what}) created at {self.site_name}{owned}, "
                f"{self.age_seconds:.1f} s ago")

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> FdRecord:
        stack = _frames(raw["stack"])
        # The native site text is str() of one of the stack's frames.
        site = next((f for f in stack if str(f) == raw["site"]), None)
        return cls(raw["fd"], raw["kind"], raw["sequence"], raw["created_ns"],
                   raw["age_seconds"], raw["attributed"], site, stack, raw["target"],
                   raw["local"], raw["peer"], raw["tcp_state"],
                   FdOwner._from_native(raw["owner"]))


class FdStat(NamedTuple):
    """The open fds of one kind made at one site (or by one full stack)."""

    site: Frame | None
    traceback: tuple[Frame, ...]
    kind: str
    attributed: bool
    count: int
    fds: tuple[FdRecord, ...]  # by fd number

    @property
    def site_name(self) -> str:
        return _site_name(self.site, self.attributed)

    def __str__(self) -> str:
        return f"{self.site_name}: {self.kind} count={self.count}"


class FdStatDiff(NamedTuple):
    """One site's (or stack's) fds of one kind: what changed between two
    snapshots. ``opened`` are fds open now that were not open then (by
    creation, so a reused fd number counts as new); ``closed`` are fds open
    then that are not any more."""

    site: Frame | None
    traceback: tuple[Frame, ...]
    kind: str
    attributed: bool
    count: int
    count_diff: int
    opened: tuple[FdRecord, ...]
    closed: tuple[FdRecord, ...]

    @property
    def site_name(self) -> str:
        return _site_name(self.site, self.attributed)

    def __str__(self) -> str:
        return (f"{self.site_name}: {self.kind} count={self.count} ({self.count_diff:+d}): "
                f"{len(self.opened)} opened, {len(self.closed)} closed")


class FdSnapshot:
    """The process's open fds at one moment, with their creation stacks."""

    def __init__(self, fds: Iterable[FdRecord]) -> None:
        self.timestamp = time.time()
        self.fds: tuple[FdRecord, ...] = tuple(sorted(fds, key=lambda r: r.fd))

    @classmethod
    def _take(cls, native: Any) -> FdSnapshot:
        return cls(FdRecord._from_native(raw) for raw in native.open_fds())

    def __len__(self) -> int:
        return len(self.fds)

    def _grouped(self, key_type: KeyType) -> dict[Hashable, FdStat]:
        _check_key_type(key_type)
        by_site = key_type == "site"
        groups = _group(self.fds, lambda r: ((r.site if by_site else r.stack),
                                             r.attributed, r.kind))
        return {key: FdStat(records[0].site, records[0].stack, records[0].kind,
                            records[0].attributed, len(records), tuple(records))
                for key, records in groups.items()}

    def statistics(self, key_type: KeyType = "site") -> list[FdStat]:
        """Open fds per site (or full stack) and kind, most first."""
        return sorted(self._grouped(key_type).values(),
                      key=lambda s: (-s.count, s.site_name, s.kind))

    def compare_to(self, old: FdSnapshot, key_type: KeyType = "site") -> list[FdStatDiff]:
        """Per site (or full stack) and kind, the fds opened and closed since
        the older snapshot `old`; largest growth first."""
        diffs = []
        for new, before in _pairs(self._grouped(key_type), old._grouped(key_type)):
            ref = new or before
            now = {r.sequence: r for r in new.fds} if new else {}
            then = {r.sequence: r for r in before.fds} if before else {}
            opened = tuple(r for seq, r in now.items() if seq not in then)
            closed = tuple(r for seq, r in then.items() if seq not in now)
            diffs.append(FdStatDiff(ref.site, ref.traceback, ref.kind, ref.attributed,
                                    len(now), len(now) - len(then), opened, closed))
        return sorted(diffs, key=lambda d: (-d.count_diff, -len(d.opened), d.site_name, d.kind))
