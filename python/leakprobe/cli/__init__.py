"""The ``leakprobe`` command (also ``python -m leakprobe``): docs/cli.md.

    leakprobe run [--interval SEC] [--warmup SEC] [--duration SEC] [--grace SEC]
                  [--json PATH] [--html PATH] [--fail-on-leak] -- PROGRAM [ARGS...]

Exit statuses: 0 no leak found; 3 a leak found with --fail-on-leak;
PROGRAM's own non-zero status when it failed by itself (before 3); 2 usage
errors; 126/127 PROGRAM not executable / not found; 1 a report could not be
written.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence

# The trend options' accepted ranges (LEAKPROBE_TREND_INTERVAL, _WARMUP).
INTERVAL_RANGE = (0.05, 3600.0)
WARMUP_RANGE = (0.0, 86400.0)
DEFAULT_INTERVAL = 1.0
DEFAULT_WARMUP = 10.0
DEFAULT_GRACE = 5.0

EXIT_USAGE = 2
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def _seconds(low: float, high: float | None,
             low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bound = f"greater than {low:g}" if low_open else f"from {low:g}"
            upper = f" to {high:g}" if high is not None else ""
            raise argparse.ArgumentTypeError(
                f"{text!r} is not valid; accepted: a number of seconds {bound}{upper}")
        return value

    return parse


def _writable_file() -> Callable[[str], str]:
    """A report path, tried now (created and removed if it did not exist,
    opened for appending if it did), so that a path that cannot be written
    is a usage error before PROGRAM runs, not a lost report after."""
    def parse(text: str) -> str:
        path = os.path.abspath(text)
        directory = os.path.dirname(path)
        if os.path.isdir(path):
            raise argparse.ArgumentTypeError(f"{text!r} is a directory; accepted: "
                                             "the path of a file to write")
        if not os.path.isdir(directory):
            raise argparse.ArgumentTypeError(f"{text!r}: directory {directory!r} "
                                             "does not exist")
        try:
            if os.path.exists(path):
                with open(path, "a", encoding="utf-8"):
                    pass
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                os.unlink(path)
        except OSError as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r} cannot be written ({exc.strerror or exc})") from None
        return path

    return parse


def parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``leakprobe`` parser and its ``run`` sub-parser."""
    top = argparse.ArgumentParser(
        prog="leakprobe", description="leakprobe: an in-process resource-leak profiler "
        "for Python programs. See docs/cli.md.")
    commands = top.add_subparsers(dest="subcommand", metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run PROGRAM under leakprobe and report its leaks",
        description="Runs PROGRAM with leakprobe active in it and in every Python process "
        "it starts (fork, spawn, subprocesses), samples every --interval seconds, stops it "
        "after --duration (SIGTERM to its process group, SIGKILL after --grace) or when it "
        "exits, and prints the verdicts. Exit status: 0 no leak found; 3 a leak found "
        "with --fail-on-leak; PROGRAM's own non-zero status when it failed by itself "
        "(before 3); 2 usage errors; 126/127 PROGRAM not executable/not found.",
        usage="leakprobe run [options] -- PROGRAM [ARGS...]")
    run.add_argument("--interval", metavar="SEC", default=DEFAULT_INTERVAL,
                     type=_seconds(*INTERVAL_RANGE),
                     help="trend sampling period in every process (LEAKPROBE_TREND_INTERVAL), "
                     f"{INTERVAL_RANGE[0]:g} to {INTERVAL_RANGE[1]:g}; "
                     f"default {DEFAULT_INTERVAL:g}")
    run.add_argument("--warmup", metavar="SEC", default=DEFAULT_WARMUP,
                     type=_seconds(*WARMUP_RANGE),
                     help="start-up time left out of the trends (LEAKPROBE_TREND_WARMUP), "
                     f"{WARMUP_RANGE[0]:g} to {WARMUP_RANGE[1]:g}; default {DEFAULT_WARMUP:g}")
    run.add_argument("--duration", metavar="SEC", default=None,
                     type=_seconds(0.0, None, low_open=True),
                     help="stop PROGRAM after this long; default: run until it exits")
    run.add_argument("--grace", metavar="SEC", default=DEFAULT_GRACE,
                     type=_seconds(0.0, 3600.0),
                     help="how long PROGRAM has to exit after SIGTERM before SIGKILL; "
                     f"default {DEFAULT_GRACE:g}")
    run.add_argument("--json", metavar="PATH", type=_writable_file(),
                     help="write the JSON report (docs/report-schema.md) to PATH")
    run.add_argument("--html", metavar="PATH", type=_writable_file(),
                     help="write the HTML report to PATH")
    run.add_argument("--fail-on-leak", action="store_true",
                     help="exit with status 3 when a leak is suspected")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]",
                     help="the program to run, after --")
    return top, run


def main(argv: Sequence[str] | None = None) -> int:
    top, run_parser = parser()
    args = top.parse_args(argv)
    if args.subcommand is None:
        top.print_help(sys.stderr)
        return EXIT_USAGE
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        run_parser.error("missing PROGRAM: give the program to run after --, "
                         "e.g. leakprobe run -- python app.py")
    if args.html is not None:
        _check_html(run_parser)
    _check_environment(run_parser, args)
    program = _resolve(command[0])
    if isinstance(program, int):
        return program
    from . import _run

    return _run.run(args, program, command)


def _check_html(run_parser: argparse.ArgumentParser) -> None:
    """--html needs leakprobe.report.html and matplotlib (the `report`
    extra): said before PROGRAM runs, not after."""
    import importlib.util

    try:
        from ..report import html
    except ImportError as exc:
        run_parser.error(f"--html is not available in this build of leakprobe "
                         f"(leakprobe.report.html: {exc})")
    if importlib.util.find_spec("matplotlib") is None:
        run_parser.error("--html needs matplotlib, which is not installed: "
                         f"{html.INSTALL_HINT}")


def _check_environment(run_parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A LEAKPROBE_* variable that every profiled process would reject
    (each would log it and run unprofiled) is a usage error, said now."""
    from .. import _config

    environ = {**os.environ, "LEAKPROBE_TREND_INTERVAL": repr(args.interval),
               "LEAKPROBE_TREND_WARMUP": repr(args.warmup)}
    environ.setdefault("LEAKPROBE_PORT", "0")
    environ.pop("LEAKPROBE_RUN_DIR", None)  # the run's own, set later
    _, problems = _config.resolve(environ)
    if problems:
        run_parser.error("PROGRAM's leakprobe would not start: " + "; ".join(problems))


def _resolve(name: str) -> str | int:
    """PROGRAM's path, as a shell finds it; or the shell's status when it
    cannot be run (127 not found, 126 not executable), with a message."""
    if "/" in name:
        path = name
        if not os.path.exists(path):
            return _cannot(EXIT_NOT_FOUND, f"PROGRAM not found: {name!r} does not exist")
    else:
        found = shutil.which(name)
        if found is None:
            return _cannot(EXIT_NOT_FOUND, f"PROGRAM not found: {name!r} is not on PATH")
        path = found
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return _cannot(EXIT_NOT_EXECUTABLE, f"PROGRAM cannot be executed: {path!r} is "
                       + ("a directory" if os.path.isdir(path) else "not executable"))
    return name if "/" in name else path


def _cannot(status: int, message: str) -> int:
    sys.stderr.write(f"leakprobe run: {message} (exit status {status})\n")
    return status
