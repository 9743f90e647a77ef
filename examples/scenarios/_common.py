"""What the scenario programs share: their command line, a steady pace, the
local upstream HTTP server and a temporary directory.

Every scenario runs a bounded loop at a steady rate (``--rate`` tasks per
second for ``--seconds``), so that a leak grows linearly in time and the
run fits in compressed time; ``--fixed`` runs its fixed twin, which differs
from the leak only in the fix. The line that leaks carries the comment
marker ``# leak-site`` (tests/test_scenarios.py reads it to compute the
expected attribution site ``path:line in function``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


def options(doc: str | None, *, rate: float, seconds: float = 25.0,
            fixed: bool = True) -> argparse.Namespace:
    """Parses the scenario's command line: ``--seconds``, ``--rate`` and,
    for a leak with a twin, ``--fixed``. Also makes SIGTERM (what
    ``leakprobe run`` sends at ``--duration``) a normal exit, so that
    clean-up code runs."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=seconds,
                        help=f"how long the loop runs (default {seconds:g})")
    parser.add_argument("--rate", type=float, default=rate,
                        help=f"tasks per second (default {rate:g})")
    if fixed:
        parser.add_argument("--fixed", action="store_true", help="run the fixed twin")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be positive numbers")
    signal.signal(signal.SIGTERM, _terminate)
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


def ticks(seconds: float, rate: float) -> Iterator[int]:
    """Yields 0, 1, 2, ... at `rate` per second for `seconds`. A loop that
    falls more than a second behind (a loaded machine) skips ticks rather
    than catching up in a burst."""
    period = 1.0 / rate
    start = time.monotonic()
    i = 0
    while i * period < seconds:
        late = time.monotonic() - (start + i * period)
        if late < 0:
            time.sleep(-late)
        elif late > 1.0:
            i = int((time.monotonic() - start) / period)
            continue
        yield i
        i += 1


async def aticks(seconds: float, rate: float) -> AsyncIterator[int]:
    """:func:`ticks` for asyncio code."""
    period = 1.0 / rate
    start = time.monotonic()
    i = 0
    while i * period < seconds:
        late = time.monotonic() - (start + i * period)
        if late < 0:
            await asyncio.sleep(-late)
        elif late > 1.0:
            i = int((time.monotonic() - start) / period)
            continue
        yield i
        i += 1


class Upstream:
    """The remote service: ``_upstream.py`` in a process of its own, with
    leakprobe disabled there (it is not the program under test). It exits
    when this process closes its standard input, or ends."""

    def __init__(self) -> None:
        env = dict(os.environ, LEAKPROBE_DISABLE="1")
        self._process = subprocess.Popen(
            [sys.executable, str(HERE / "_upstream.py")], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        self._process.stdout.close()
        if not line.startswith("upstream listening on "):
            self.close()
            raise RuntimeError(f"the upstream server did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1]

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkDir:
    """A temporary directory (SQLite files, scratch files), removed at exit."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="leakprobe-scenario-"))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
