"""``leakprobe run``: starts PROGRAM profiled, watches it, stops it, reports.

PROGRAM runs in its own process group, so that it is stopped with every
process it started: SIGTERM to PROGRAM first (a Celery or gunicorn master
then stops its own workers in order, as when a container runtime stops
it), SIGTERM to what is left of the group once PROGRAM is gone, SIGKILL to
the group after the grace period. The CLI is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``):
PROGRAM's orphaned descendants are re-parented to it and reaped by it, so
the group is known to be gone when it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from .. import _runfile
from . import _bootstrap, _report, _terminal

POLL_SECONDS = 0.05
PROGRESS_SECONDS = 1.0
# When PROGRAM exits by itself, what it left running in its group has this
# long (at most the grace period) to finish before SIGTERM.
LINGER_SECONDS = 1.0
KILL_WAIT_SECONDS = 5.0  # after SIGKILL, how long to wait for the group to go


def _become_subreaper() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # not Linux: orphans go to init, and are waited for less well
        pass


class _Children:
    """Reaps every child of the CLI; keeps PROGRAM's status."""

    def __init__(self, main: subprocess.Popen[bytes]) -> None:
        self.main = main
        self.status: int | None = None  # PROGRAM's, shell-style (128+N for signal N)

    def reap(self) -> None:
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main.pid:
                code = os.waitstatus_to_exitcode(raw)
                self.main.returncode = code  # so that Popen never waits for it
                self.status = code if code >= 0 else 128 - code

    def group_alive(self) -> bool:
        self.reap()
        try:
            os.killpg(self.main.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def main_alive(self) -> bool:
        self.reap()
        return self.main.returncode is None

    def signal_main(self, signum: int) -> None:
        if self.main_alive():
            try:
                os.kill(self.main.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.main.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_group(children: _Children, seconds: float, interrupts: list[int],
                stop_on_interrupt: bool, alive: Any = None) -> bool:
    """Waits up to ``seconds`` for the group (or what ``alive`` checks) to
    be gone; True if it is."""
    alive = alive or children.group_alive
    end = time.monotonic() + seconds
    seen = len(interrupts)
    while True:
        if not alive():
            return True
        if time.monotonic() >= end or (stop_on_interrupt and len(interrupts) > seen):
            return False
        time.sleep(POLL_SECONDS)


def _stop(children: _Children, grace: float, interrupts: list[int],
          out: Any, exited: bool) -> None:
    """Ends PROGRAM's group: SIGTERM to PROGRAM, then to what is left of
    the group once PROGRAM is gone, SIGKILL to the group ``grace`` seconds
    after the first SIGTERM (at once on a second Ctrl-C)."""
    if exited and _wait_group(children, min(grace, LINGER_SECONDS), interrupts, True):
        return
    if not children.group_alive():
        return
    end = time.monotonic() + grace
    seen = len(interrupts)
    if children.main_alive():
        # PROGRAM alone first: signalled with its workers, a Celery prefork
        # child can die holding the pool's lock, and the worker then waits
        # for it until SIGKILL (seen in the demo, 2 runs of 2).
        children.signal_main(signal.SIGTERM)
        children.signal_main(signal.SIGCONT)  # a stopped process (SIGTTIN, ^Z) gets it now
        _wait_group(children, grace, interrupts, True, alive=children.main_alive)
    if len(interrupts) == seen and children.group_alive():
        children.signal_group(signal.SIGTERM)
        children.signal_group(signal.SIGCONT)
        if _wait_group(children, max(0.0, end - time.monotonic()), interrupts, True):
            return
    elif not children.group_alive():
        return
    out.print(f"leakprobe run: PROGRAM's process group {children.main.pid} still running "
              f"{grace:g} s after SIGTERM: SIGKILL", highlight=False)
    children.signal_group(signal.SIGKILL)
    _wait_group(children, KILL_WAIT_SECONDS, interrupts, False)


def _environment(run_dir: str, site_dir: str, args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = site_dir + (os.pathsep + path if path else "")
    env["LEAKPROBE_RUN_DIR"] = run_dir
    env["LEAKPROBE_TREND_INTERVAL"] = repr(args.interval)
    env["LEAKPROBE_TREND_WARMUP"] = repr(args.warmup)
    env.setdefault("LEAKPROBE_PORT", "0")  # one exporter per process: any free port
    return env


def run(args: argparse.Namespace, program: str, command: list[str]) -> int:
    """Runs ``command`` (its executable resolved to ``program``); returns
    the exit status."""
    run_dir = tempfile.mkdtemp(prefix="leakprobe-run-")
    try:
        return _run(args, program, command, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run(args: argparse.Namespace, program: str, command: list[str], run_dir: str) -> int:
    out = _terminal.console()
    site_dir = os.path.join(run_dir, _runfile.SITE_DIR)
    os.mkdir(site_dir)
    _bootstrap.write(site_dir)
    with open(os.path.join(run_dir, _runfile.CLI_PID_FILE), "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    _become_subreaper()

    interrupts: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        interrupts.append(signum)

    handlers = {signum: signal.signal(signum, on_signal)
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        started_at = time.time()
        started = time.monotonic()
        try:
            main = subprocess.Popen(command, executable=program, process_group=0,
                                    env=_environment(run_dir, site_dir, args))
        except FileNotFoundError:
            sys.stderr.write(f"leakprobe run: PROGRAM not found: {program!r} "
                             "(exit status 127)\n")
            return 127
        except OSError as exc:
            sys.stderr.write(f"leakprobe run: PROGRAM cannot be executed: {program!r}: "
                             f"{exc.strerror or exc} (exit status 126)\n")
            return 126
        children = _Children(main)
        try:
            return _supervise(args, command, run_dir, out, children, interrupts,
                              started_at, started)
        except BaseException:
            children.signal_group(signal.SIGKILL)  # never leave PROGRAM behind
            raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _supervise(args: argparse.Namespace, command: list[str], run_dir: str, out: Any,
               children: _Children, interrupts: list[int], started_at: float,
               started: float) -> int:
    """From PROGRAM's start to the summary; returns the exit status."""
    main = children.main
    until = f", stopping it after {args.duration:g} s" if args.duration else ""
    out.print(f"leakprobe run: started {command[0]} (pid {main.pid}), sampling every "
              f"{args.interval:g} s after a {args.warmup:g} s warm-up{until}",
              highlight=False, markup=False)
    progress = _terminal.Progress(out)
    stopped_by = _watch(children, args, started, interrupts, progress, run_dir)
    progress.stop()
    if stopped_by != "exited":
        reason = "--duration reached" if stopped_by == "duration" else "interrupted"
        out.print(f"leakprobe run: {reason}: stopping PROGRAM (SIGTERM to it, then to "
                  f"its process group, SIGKILL after {args.grace:g} s)", highlight=False)
    _stop(children, args.grace, interrupts, out, stopped_by == "exited")
    children.reap()
    ended_at = started_at + (time.monotonic() - started)
    report = _report.build(
        _report.read_run_files(run_dir), main_pid=main.pid, command=command,
        started_at=started_at, ended_at=ended_at,
        settings={"interval": args.interval, "warmup": args.warmup,
                  "duration": args.duration, "fail_on_leak": args.fail_on_leak,
                  "grace": args.grace},
        program_status=children.status, stopped_by=stopped_by,
        fail_on_leak=args.fail_on_leak)
    written, failed = _write_reports(report, args, out)
    _terminal.summary(out, report, written.get("json"), written.get("html"))
    return 1 if failed else report["exit"]["status"]


def _watch(children: _Children, args: argparse.Namespace, started: float,
           interrupts: list[int], progress: _terminal.Progress, run_dir: str) -> str:
    """Until PROGRAM exits, --duration passes or the CLI is interrupted;
    returns which ("exited", "duration", "interrupted")."""
    deadline = started + args.duration if args.duration else None
    next_progress = started
    while True:
        children.reap()
        now = time.monotonic()
        if children.status is not None:
            return "exited"
        if interrupts:
            return "interrupted"
        if deadline is not None and now >= deadline:
            return "duration"
        if progress.shown and now >= next_progress:
            progress.update(now - started, _report.read_run_files(run_dir), args.duration)
            next_progress = now + PROGRESS_SECONDS
        time.sleep(POLL_SECONDS)


def _write_reports(report: dict[str, Any], args: argparse.Namespace,
                   out: Any) -> tuple[dict[str, str], bool]:
    """Writes the reports asked for: returns the paths written, by format,
    and whether one failed (after saying why)."""
    written: dict[str, str] = {}
    failed = False
    if args.json:
        try:
            _report.write_json(report, args.json)
            written["json"] = args.json
        except OSError as exc:
            out.print(f"leakprobe run: the JSON report could not be written to {args.json}: "
                      f"{exc}", highlight=False, markup=False)
            failed = True
    if args.html:
        try:
            from ..report import html

            html.write(report, args.html)
            written["html"] = args.html
        except Exception as exc:
            out.print(f"leakprobe run: the HTML report could not be written to {args.html}: "
                      f"{exc!r}", highlight=False, markup=False)
            failed = True
    return written, failed
