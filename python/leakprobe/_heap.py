"""Heap snapshots: what the sampled allocation tracker knows, per creation
stack, in tracemalloc's vocabulary (``statistics``, ``compare_to``).

Sizes and counts are unbiased estimates from sampling (see
docs/heap.md): close to the truth for sites holding many multiples of
``LEAKPROBE_HEAP_SAMPLE_BYTES``, noisy below that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypeVar  # not dataclasses: slow to import

KeyType = Literal["site", "traceback"]
T = TypeVar("T")


class Frame(NamedTuple):
    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


class HeapStat(NamedTuple):
    """Estimated live heap held by one site (or one full stack)."""

    site: Frame | None  # None for allocations with no Python frame
    traceback: tuple[Frame, ...]  # innermost first
    size: float  # estimated live bytes
    count: float  # estimated live blocks

    def __str__(self) -> str:
        return f"{self.site or '<native>'}: size={_bytes(self.size)}, count={self.count:.0f}"


class HeapStatDiff(NamedTuple):
    """One site's (or stack's) change between two snapshots."""

    site: Frame | None
    traceback: tuple[Frame, ...]
    size: float
    size_diff: float
    count: float
    count_diff: float

    def __str__(self) -> str:
        return (f"{self.site or '<native>'}: size={_bytes(self.size)} "
                f"({'+' if self.size_diff >= 0 else '-'}{_bytes(abs(self.size_diff))}), "
                f"count={self.count:.0f} ({self.count_diff:+.0f})")


def _frames(raw: Iterable[Sequence[Any]]) -> tuple[Frame, ...]:
    """Frames from the native module's tuples, whose first three items are
    (filename, line, function); innermost first."""
    return tuple(Frame(item[0], item[1], item[2]) for item in raw)


def _group(items: Iterable[T], key: Callable[[T], Hashable]) -> dict[Hashable, list[T]]:
    """`items` by `key`, in their order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _pairs(new: Mapping[Hashable, T], old: Mapping[Hashable, T]
           ) -> Iterator[tuple[T | None, T | None]]:
    """(new, old) for every key of either snapshot's groups; one side is
    None where the key is in only one."""
    for key in new.keys() | old.keys():
        yield new.get(key), old.get(key)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_key_type(key_type: str) -> None:
    if key_type not in ("site", "traceback"):
        raise ValueError(f"key_type must be 'site' or 'traceback', not {key_type!r}")


class HeapSnapshot:
    """The live sampled heap at one moment, grouped by creation stack."""

    def __init__(self, stats: list[HeapStat], sample_bytes: int) -> None:
        self.timestamp = time.time()
        self.sample_bytes = sample_bytes
        self._stacks = stats  # one per stack, live only

    @classmethod
    def _take(cls, native) -> HeapSnapshot:
        stats = []
        for _id, _site, site_index, frames, live_bytes, live_count, _ab, _ac in native.heap_stacks():
            if live_count < 0.5:
                continue
            traceback = _frames(frames)
            site = traceback[site_index] if traceback else None
            stats.append(HeapStat(site, traceback, live_bytes, live_count))
        return cls(stats, native.heap_summary()["sample_bytes"])

    def _grouped(self, key_type: KeyType) -> dict[Hashable, HeapStat]:
        _check_key_type(key_type)
        groups = _group(self._stacks, (lambda s: s.site) if key_type == "site"
                        else (lambda s: s.traceback))
        return {key: stats[0]._replace(size=sum(s.size for s in stats),
                                       count=sum(s.count for s in stats))
                for key, stats in groups.items()}

    def statistics(self, key_type: KeyType = "site") -> list[HeapStat]:
        """Live heap per site (or per full stack), largest first."""
        return sorted(self._grouped(key_type).values(), key=lambda s: (-s.size, str(s.site)))

    def compare_to(self, old: HeapSnapshot, key_type: KeyType = "site") -> list[HeapStatDiff]:
        """Differences from an older snapshot, largest growth first."""
        diffs = []
        for new, before in _pairs(self._grouped(key_type), old._grouped(key_type)):
            ref = new or before
            size = new.size if new else 0.0
            count = new.count if new else 0.0
            diffs.append(HeapStatDiff(
                ref.site, ref.traceback, size, size - (before.size if before else 0.0),
                count, count - (before.count if before else 0.0)))
        return sorted(diffs, key=lambda d: (-d.size_diff, str(d.site)))

    @property
    def total_size(self) -> float:
        return sum(s.size for s in self._stacks)


class NativeSnapshot(HeapSnapshot):
    """The live sampled native heap (malloc family) and anonymous mappings at
    one moment, grouped by creation stack; the same vocabulary as
    :class:`HeapSnapshot`. A traceback holds the native frames first
    (``Frame(object path, 0, "symbol+0x1f")``, innermost first), then the
    Python frames from where the interpreter called into native code; the
    site is the innermost application Python line, or, on a thread without
    Python frames, the innermost native frame outside the C/C++ runtime."""

    @classmethod
    def _take(cls, native) -> NativeSnapshot:
        stats = []
        for _id, _site, site_index, frames, live_bytes, live_count, _ab, _ac in \
                native.native_stacks():
            if live_count < 0.5:
                continue
            traceback = _frames(frames)
            site = traceback[site_index] if traceback else None
            stats.append(HeapStat(site, traceback, live_bytes, live_count))
        return cls(stats, native.native_summary()["sample_bytes"])
