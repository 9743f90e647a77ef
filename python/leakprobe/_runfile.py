"""The run file: what a process profiled under ``leakprobe run`` tells the
CLI (see docs/cli.md and docs/report-schema.md).

When ``LEAKPROBE_RUN_DIR`` is set, the process writes
``$LEAKPROBE_RUN_DIR/<pid>.json`` at start, after every trend sample (a
sampler task at the trend interval) and at exit: its identity and every
trend series with its verdict and points. Each write goes to a temporary file
that is then renamed over the run file, so a reader never sees half a file.

Nothing here may harm the host: a write that fails is logged once by the
sampler (``_Sampler._guarded``) and at exit not at all; the exit write never
waits more than a moment for a write in progress.

Shared state: ``_writer`` is replaced under ``leakprobe._runtime._lock``
(by ``sampler_tasks``, called from ``start()``); a ``_Writer``'s fields are
protected by its own ``lock``.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ._files import strict_json, write_atomically

CLI_PID_FILE = "cli.pid"  # written by `leakprobe run` into the run dir: the CLI's pid
SITE_DIR = "site"  # the run dir's folder that holds the generated sitecustomize.py

_writer: _Writer | None = None
_unreleased: list[dict[str, Any]] | None = None  # a shutdown report's rows (note_unreleased)
_atexit_registered = False


class _Writer:
    """Writes one process's run file. Made at each start() in a process
    (so a forked child gets its own, for its own pid)."""

    def __init__(self, run_dir: str, trends: bool) -> None:
        self.run_dir = run_dir
        self.trends = trends  # LEAKPROBE_TRENDS: without them, no series
        self.pid = os.getpid()
        self.path = os.path.join(run_dir, f"{self.pid}.json")
        self.lock = threading.Lock()  # taken by the sampler's write and the exit write
        self.started_at = time.time()
        self.role = _role(run_dir)
        self.cmdline = _cmdline()
        self.exited = False  # the exit write is done: later writes are skipped

    def document(self, series: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ppid": os.getppid(),
            "cmdline": self.cmdline,
            "role": self.role,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "exited": self.exited,
            "series": series,
            **({"unreleased": _unreleased} if _unreleased is not None else {}),
        }

    def write(self, series: list[dict[str, Any]]) -> None:
        document = self.document(series)
        try:  # the figures are finite (the engine's and the store's): one pass
            data = json.dumps(document, separators=(",", ":"), allow_nan=False)
        except ValueError:
            data = json.dumps(strict_json(document), separators=(",", ":"), allow_nan=False)
        write_atomically(self.path, data)

    def sample(self) -> None:
        """The sampler task: the current verdicts and series, written."""
        if self.pid != os.getpid():
            return
        series = _series() if self.trends else []
        with self.lock:
            if self.exited:
                return
            self.write(series)

    def at_exit(self) -> None:
        if self.pid != os.getpid():
            return  # a forked child that never restarted leakprobe: not its file
        try:
            series = _series() if self.trends else []
        except Exception:  # leakprobe stopped: the series last written stand
            series = self.last_series()
        if not self.lock.acquire(timeout=1.0):
            return  # a write is stuck: the last one on disk stands
        try:
            self.exited = True
            self.write(series)
        finally:
            self.lock.release()

    def last_series(self) -> list[dict[str, Any]]:
        """The series of the run file on disk (not kept in memory: they
        would grow the host's heap with every sample)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                series = json.load(f).get("series")
        except (OSError, ValueError, AttributeError):
            return []
        return series if isinstance(series, list) else []


def note_unreleased(rows: list[dict[str, Any]]) -> None:
    """A shutdown report (leakprobe.adapters._unreleased): the resource owners
    this process still holds, as rows {"type", "site", "count"}; written
    into the run file at once (the process may end without atexit)."""
    global _unreleased
    _unreleased = list(rows)
    writer = _writer
    if writer is not None:
        try:
            writer.sample()
        except Exception:  # leakprobe stopped meanwhile: the exit write has them
            pass


def _series() -> list[dict[str, Any]]:
    """Every evaluated series: its verdict (Verdict.to_dict()) and its points."""
    from . import _trends

    entries = []
    for verdict in _trends.verdicts():
        entry = verdict.to_dict()
        entry["points"] = _trends.series(verdict.resource, verdict.key)  # (t, value) pairs
        entries.append(entry)
    return entries


def _role(run_dir: str) -> str:
    """"main" for the process that `leakprobe run` started (its parent is
    the CLI), "child" for every other."""
    try:
        with open(os.path.join(run_dir, CLI_PID_FILE), encoding="ascii") as f:
            cli_pid = int(f.read().strip())
    except (OSError, ValueError):
        return "child"
    return "main" if os.getppid() == cli_pid else "child"


def _cmdline() -> list[str]:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        import sys

        return list(getattr(sys, "orig_argv", sys.argv))
    return [arg.decode("utf-8", "backslashreplace") for arg in raw.split(b"\0")[:-1]]


def _at_exit() -> None:
    writer = _writer
    if writer is None:
        return
    try:
        writer.at_exit()
    except Exception:  # never fail the host's exit
        pass


def sampler_tasks(config: Any) -> list[tuple[str, float, Callable[[], None]]]:
    """The run file's sampler task (none without ``run_dir``), for start().
    Writes the first run file now, so that the process is listed from its
    start."""
    global _writer, _atexit_registered
    if config.run_dir is None:
        _writer = None
        return []
    writer = _Writer(config.run_dir, config.trends)
    _writer = writer
    if not _atexit_registered:
        # After _runtime's own exit hook: atexit runs this one first, while
        # the native module still answers.
        _atexit_registered = True
        atexit.register(_at_exit)
    try:
        with writer.lock:
            writer.write([])
    except Exception as exc:
        from . import _runtime

        _runtime._native().log("error", f"run file {writer.path} could not be written: "
                               f"{exc!r}; profiling continues")
    return [("run file", config.trend_interval, writer.sample)]


def library_prefixes(config: Any) -> list[str]:
    """The generated sitecustomize's folder, for the attribution-site rule:
    it imports leakprobe, and is leakprobe's code, not the application's."""
    if config.run_dir is None:
        return []
    site = os.path.join(config.run_dir, SITE_DIR)
    return sorted({os.path.join(os.path.abspath(site), ""), os.path.join(os.path.realpath(site), "")})
