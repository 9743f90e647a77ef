"""What ``leakprobe run`` prints on stderr: the progress line while PROGRAM
runs (only when stderr is a terminal) and the summary at the end (always),
drawn with rich.

    progress = Progress(console)
    progress.update(elapsed=12.0, files=[...]); progress.stop()
    summary(console, report, json_path="report.json", html_path=None)
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Not flagged series shown in the table, beyond every flagged one.
MAX_UNFLAGGED_ROWS = 15


def console() -> Console:
    """stderr: PROGRAM's stdout stays its own. Not a terminal (a log, a
    pipe): no colours and 160 columns, so that sites are not cut short."""
    probe = Console(stderr=True)
    if probe.is_terminal:
        return probe
    return Console(stderr=True, width=160, no_color=True, highlight=False)


class Progress:
    """One live status line: elapsed time, processes, series evaluated,
    suspected so far. Does nothing when stderr is not a terminal."""

    def __init__(self, out: Console) -> None:
        self.status = out.status("starting", spinner="dots") if out.is_terminal else None
        if self.status is not None:
            self.status.start()

    @property
    def shown(self) -> bool:
        return self.status is not None

    def update(self, elapsed: float, files: list[dict[str, Any]],
               duration: float | None) -> None:
        if self.status is None:
            return
        self.status.update(progress_text(elapsed, files, duration))

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def progress_text(elapsed: float, files: list[dict[str, Any]], duration: float | None) -> str:
    series = [s for f in files for s in f.get("series") or ()]
    evaluated = sum(1 for s in series if s.get("reason") != "warmup")
    suspected = sum(1 for s in series if s.get("suspected"))
    running = sum(1 for f in files if not f.get("exited"))
    of = f" of {_duration(duration)}" if duration is not None else ""
    return (f"leakprobe run: {_duration(elapsed)}{of} elapsed, "
            f"{_plural(len(files), 'process', 'processes')} ({running} running), "
            f"{evaluated} of {len(series)} series evaluated (past warm-up), "
            f"{suspected} suspected")


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


_BINARY = ("B", "KiB", "MiB", "GiB", "TiB")


def quantity(value: float | None, unit: str | None) -> str:
    """A value in its unit: bytes with binary prefixes, counts as counts."""
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "bytes":
        magnitude, index = abs(value), 0
        while magnitude >= 1024 and index < len(_BINARY) - 1:
            magnitude /= 1024
            index += 1
        sign = "-" if value < 0 else ""
        return f"{sign}{magnitude:.1f} {_BINARY[index]}" if index else f"{value:.0f} B"
    text = f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"
    return f"{text} {unit or ''}".rstrip()


def growth(entry: dict[str, Any]) -> str:
    rate = entry.get("growth_per_hour")
    if rate is None:
        return "-"
    text = quantity(rate, entry.get("unit"))
    return ("+" + text if rate > 0 else text) + "/h"


def _verdict(entry: dict[str, Any]) -> Text:
    if entry.get("suspected"):
        return Text("LEAK", style="bold red")
    reason = str(entry.get("reason") or "")
    return Text(reason, style="dim" if reason == "warmup" else "green")


def _path_abbreviations() -> list[tuple[str, str]]:
    """Long path prefixes shown short in the table (the JSON report keeps
    them whole): the current directory, site-packages, the standard library."""
    import os
    import sysconfig

    pairs = [(os.path.join(os.getcwd(), ""), "")]
    for name, short in (("purelib", "<site-packages>/"), ("platlib", "<site-packages>/"),
                        ("stdlib", "<stdlib>/"), ("platstdlib", "<stdlib>/")):
        path = sysconfig.get_path(name)
        if path:
            pairs.append((os.path.join(path, ""), short))
    # Longest first: site-packages lies inside the standard library's folder.
    return sorted(set(pairs), key=lambda pair: -len(pair[0]))


def shorten(text: str, abbreviations: list[tuple[str, str]]) -> str:
    for prefix, short in abbreviations:
        if len(prefix) > 1:
            text = text.replace(prefix, short)
    return text


def _key(entry: dict[str, Any]) -> str:
    """The key, without repeating the site column: a per-site series (heap
    sites, fd ``site:`` series) shows "(its site)" for it."""
    key, site = str(entry["key"]), entry.get("site")
    if site and key == site:
        return "(its site)"
    if site and key == f"site:{site}":
        return "site:(its site)"
    return key


def _row_order(entry: dict[str, Any]) -> tuple[bool, float]:
    return (not entry.get("suspected"), -abs(entry.get("growth_per_hour") or 0.0))


def summary(out: Console, report: dict[str, Any], json_path: str | None,
            html_path: str | None) -> None:
    """The run's end: what ran and how it ended, then the verdict table
    (every flagged series first, then the fastest growing of the others)."""
    exit_ = report["exit"]
    processes = report["processes"]
    series = report["series"]
    out.print()
    out.rule("leakprobe run: summary", style="bold")
    ended = {"exited": "PROGRAM exited by itself", "duration": "stopped after --duration",
             "interrupted": "interrupted"}[exit_["stopped_by"]]
    out.print(f"command: {shlex.join(report['command'])}", highlight=False, markup=False)
    out.print(f"ran {report['duration_seconds']:.1f} s, {ended}; "
              f"PROGRAM's status {exit_['program_status']}; {len(processes)} profiled "
              f"process{'es' if len(processes) != 1 else ''} "
              f"({', '.join(str(p['pid']) + ' ' + p['role'] for p in processes) or 'none'})",
              highlight=False)
    if not processes:
        out.print("[bold yellow]no profiled Python process reported[/]: is PROGRAM a Python "
                  "program (or does it start one) whose interpreter can import leakprobe?")
    evaluated = sum(1 for e in series if e["reason"] != "warmup")
    leaks = report["leaks"]
    table = Table(title=f"{len(leaks)} suspected leak{'s' if len(leaks) != 1 else ''} in "
                  f"{evaluated} evaluated series ({len(series)} in all)",
                  title_justify="left", show_lines=False)
    for name, justify in (("verdict", "left"), ("resource", "left"), ("key", "left"),
                          ("pid", "right"), ("growth/hour", "right"), ("confidence", "right"),
                          ("exhausted in", "right"), ("site", "left")):
        table.add_column(name, justify=justify,  # type: ignore[arg-type]
                         overflow="fold")
    rows = sorted(series, key=_row_order)
    shown = [e for e in rows if e["suspected"]]
    others = [e for e in rows if not e["suspected"]]
    shown += others[:MAX_UNFLAGGED_ROWS]
    short = _path_abbreviations()
    for entry in shown:
        confidence = entry.get("confidence")
        table.add_row(
            _verdict(entry), entry["resource"], Text(shorten(_key(entry), short)),
            str(entry["pid"]),
            growth(entry),
            f"{confidence:.0%}" if confidence is not None else "-",
            _duration(entry.get("time_to_exhaustion_seconds"))
            if entry.get("time_to_exhaustion_seconds") is not None else "-",
            Text(shorten(entry.get("site") or "-", short)))
    if series:
        out.print(table)
    if len(others) > MAX_UNFLAGGED_ROWS:
        out.print(f"... and {len(others) - MAX_UNFLAGGED_ROWS} more series not flagged "
                  "(all of them are in the JSON report)", highlight=False)
    _unreleased_summary(out, processes, short)
    for path, what in ((json_path, "JSON report"), (html_path, "HTML report")):
        if path:
            out.print(f"{what}: {path}", highlight=False, markup=False)
    verdict = ("[bold red]leak suspected[/]" if exit_["leak_found"]
               else "[bold green]no leak suspected[/]")
    out.print(f"{verdict}; exit status {exit_['status']}", highlight=False)


def _unreleased_summary(out: Console, processes: list[dict[str, Any]],
                        short: list[tuple[str, str]]) -> None:
    """What worker processes still held open at their shutdown (engines not
    disposed, clients and sessions not closed), one line per process and
    type and site."""
    rows = [(p["pid"], row) for p in processes for row in p.get("unreleased") or ()]
    if not rows:
        return
    out.print(f"[bold yellow]still open at shutdown[/] ({len(rows)} "
              f"{'entry' if len(rows) == 1 else 'entries'}):", highlight=False)
    for pid, row in rows:
        out.print(Text(f"  pid {pid}: {row['count']} x {row['type']} created at "
                       f"{shorten(row.get('site') or 'an unknown site', short)}"))
