"""The JSON report of ``leakprobe run`` (schema 1, docs/report-schema.md):
the run files of the profiled processes, merged, with the run's own facts.

    files = read_run_files(run_dir)
    report = build(files, main_pid=4242, command=[...], ...)
    write_json(report, "report.json")
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from typing import Any

from .._files import strict_json, write_atomically

SCHEMA = 1
PROCESS_FIELDS = ("pid", "ppid", "cmdline", "role", "started_at", "updated_at", "exited")
# A series entry's fields, in the report's order; a run file's entry may hold more.
SERIES_FIELDS = ("resource", "key", "pid", "unit", "suspected", "reason", "growth_per_second",
                 "growth_per_hour", "confidence", "p_value", "time_to_exhaustion_seconds",
                 "limit", "window_seconds", "points_evaluated", "last_value", "site", "stack")
_RUN_FILE = re.compile(r"^[0-9]+\.json$")


def read_run_files(run_dir: str) -> list[dict[str, Any]]:
    """Every complete run file in ``run_dir`` (each is written atomically;
    one that cannot be read or parsed is skipped), by pid."""
    files = []
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    for name in names:
        if not _RUN_FILE.match(name):
            continue
        try:
            with open(os.path.join(run_dir, name), encoding="utf-8") as f:
                document = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and isinstance(document.get("pid"), int):
            files.append(document)
    return sorted(files, key=lambda d: d["pid"])


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def _entry(raw: dict[str, Any], pid: int, with_points: bool) -> dict[str, Any]:
    entry = {field: raw.get(field) for field in SERIES_FIELDS}
    entry["pid"] = pid  # the process that evaluated it
    entry["stack"] = [{"filename": f.get("filename"), "lineno": f.get("lineno"),
                       "function": f.get("function")} for f in raw.get("stack") or ()]
    if with_points:
        entry["points"] = [[t, v] for t, v in raw.get("points") or ()]
    return entry


def _unreleased(rows: Any) -> list[dict[str, Any]] | None:
    """A run file's shutdown report (``unreleased``, written by a worker
    integration at its shutdown) as the report's rows; None when the process
    wrote none. Rows of another shape are left out, never guessed at."""
    if not isinstance(rows, list):
        return None
    return [{"type": row["type"], "site": row.get("site"), "count": row["count"]}
            for row in rows
            if isinstance(row, dict) and isinstance(row.get("type"), str)
            and isinstance(row.get("count"), int) and not isinstance(row.get("count"), bool)
            and isinstance(row.get("site"), (str, type(None)))]


def build(files: list[dict[str, Any]], *, main_pid: int | None, command: list[str],
          started_at: float, ended_at: float, settings: dict[str, Any],
          program_status: int | None, stopped_by: str, fail_on_leak: bool) -> dict[str, Any]:
    """The report: ``files`` (from :func:`read_run_files`) merged. The
    process ``leakprobe run`` started (``main_pid``) is the "main"; every
    other is a "child". Series: flagged first, then by process (the main
    first) in each process's own order."""
    processes = []
    series = []
    ordered = sorted(files, key=lambda d: (d["pid"] != main_pid, d.get("started_at") or 0,
                                           d["pid"]))
    for document in ordered:
        pid = document["pid"]
        process = {field: document.get(field) for field in PROCESS_FIELDS}
        process["role"] = "main" if pid == main_pid else "child"
        process["cmdline"] = [str(arg) for arg in document.get("cmdline") or ()]
        process["exited"] = bool(document.get("exited"))
        process["unreleased"] = _unreleased(document.get("unreleased"))
        processes.append(process)
        series += [_entry(raw, pid, True) for raw in document.get("series") or ()
                   if isinstance(raw, dict)]
    series.sort(key=lambda e: not e["suspected"])  # stable: each process's order kept
    leaks = [{k: v for k, v in e.items() if k != "points"} for e in series if e["suspected"]]
    leak_found = bool(leaks)
    exited_by_itself = stopped_by == "exited"
    if exited_by_itself and program_status:
        status = program_status  # the program's own failure comes first
    elif leak_found and fail_on_leak:
        status = 3
    else:
        status = 0
    return {
        "schema": SCHEMA,
        "tool": {"name": "leakprobe", "version": _version()},
        "command": list(command),
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "duration_seconds": round(ended_at - started_at, 3),
        "settings": dict(settings),
        "exit": {"program_status": program_status, "stopped_by": stopped_by,
                 "leak_found": leak_found, "status": status},
        "processes": processes,
        "leaks": leaks,
        "series": series,
    }


def _version() -> str:
    from .. import _runtime

    return _runtime.VERSION


def write_json(report: dict[str, Any], path: str) -> None:
    """Writes the report to ``path`` (strict JSON, indented), atomically."""
    write_atomically(path, json.dumps(strict_json(report), indent=1, allow_nan=False) + "\n")
