"""Heap snapshots: what the sampled allocation tracker knows, per creation
stack, in tracemalloc's vocabulary (``statistics``, ``compare_to``).

Sizes and counts are unbiased estimates from sampling (see
docs/heap.md): close to the truth for sites holding many multiples of
``LEAKPROBE_HEAP_SAMPLE_BYTES``, noisy below that.
"""

from __future__ import annotations

import time
from typing import Literal, NamedTuple  # not dataclasses: slow to import

KeyType = Literal["site", "traceback"]


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


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


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
            traceback = tuple(Frame(f, line, fn) for f, line, fn in frames)
            site = traceback[site_index] if traceback else None
            stats.append(HeapStat(site, traceback, live_bytes, live_count))
        return cls(stats, native.heap_summary()["sample_bytes"])

    def _grouped(self, key_type: KeyType) -> dict[object, HeapStat]:
        if key_type not in ("site", "traceback"):
            raise ValueError(f"key_type must be 'site' or 'traceback', not {key_type!r}")
        groups: dict[object, HeapStat] = {}
        for stat in self._stacks:
            key = stat.site if key_type == "site" else stat.traceback
            old = groups.get(key)
            groups[key] = stat if old is None else old._replace(
                size=old.size + stat.size, count=old.count + stat.count)
        return groups

    def statistics(self, key_type: KeyType = "site") -> list[HeapStat]:
        """Live heap per site (or per full stack), largest first."""
        return sorted(self._grouped(key_type).values(), key=lambda s: (-s.size, str(s.site)))

    def compare_to(self, old: HeapSnapshot, key_type: KeyType = "site") -> list[HeapStatDiff]:
        """Differences from an older snapshot, largest growth first."""
        new_groups, old_groups = self._grouped(key_type), old._grouped(key_type)
        diffs = []
        for key in new_groups.keys() | old_groups.keys():
            new, before = new_groups.get(key), old_groups.get(key)
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
