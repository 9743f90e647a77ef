#!/usr/bin/env python3
"""Heap profilers side by side: no profiler, leakprobe, tracemalloc, memray.

``scripts/bench.py`` compares leakprobe with no profiler on service-shaped
rows. This script answers the heap question of issue 3: what does
leakprobe's sampled heap tracking cost next to the tools a Python team
already knows, on allocation-heavy work? It also measures what the sample
interval buys: the error of leakprobe's live-bytes estimate for one site.

Arms (``--arms``; ``--list`` prints them):

* ``baseline``: no profiler.
* ``leakprobe``: ``import leakprobe`` first thing, default settings.
* ``leakprobe-<N>k``: the same with ``LEAKPROBE_HEAP_SAMPLE_BYTES=N*1024``.
* ``tracemalloc-1``/``tracemalloc-25``: ``python -X tracemalloc=N``.
* ``memray``/``memray-pyalloc``: ``python -m memray run`` without and with
  ``--trace-python-allocators`` (output to a temporary file, deleted).
* ``leakprobe-native``: ``leakprobe`` with ``LEAKPROBE_NATIVE=1`` (the malloc
  hooks, docs/native.md); ``memray-native``: ``memray run --native``.

Workloads: this repository's ``alloc-json`` and ``alloc-graphs`` (from
``bench.py``), and pyperformance benchmarks run in pyperf's worker mode, all
timed inside the child, so start-up and the profilers' exit work (memray
writing its file) are not part of the figure. Every arm of a workload runs
in a fresh process; the arms of one round run back to back in an order that
rotates from round to round. tracemalloc with 25 frames is so slow (up to
~100x) that it runs one value, without warm-up, in the first round only.

Figures are **fastest times**: a child reports the fastest of its values,
and a row's ratio is the fastest time of the arm over all rounds divided by
the fastest time of the baseline. On a small shared machine other processes
only ever add time to a CPU-bound run, by anything from nothing to +50 %;
the fastest run is the one they disturbed least, and is far steadier than a
median (the median of per-round ratios moved by ±10 % between identical runs
here). The summary line is the geometric mean of the ratios over workloads.

``--callgrind`` adds a noise-free check of the same question: it runs each
workload under ``valgrind --tool=callgrind`` without a profiler and with
leakprobe, with one and with two values, and reports the ratio of the
instructions the second value cost. Instructions are not time (cache
misses and pipeline effects are not counted) but they do not depend on the
neighbours. Valgrind runs the workload ~50x slower while leakprobe's sampler
thread keeps its wall-clock period, so that arm runs with
``LEAKPROBE_SAMPLE_INTERVAL`` 50x longer to keep its share honest.

``--accuracy`` adds the estimate-error row: a child retains 16 MiB in blocks
of mixed size from one line and compares ``leakprobe.heap_snapshot()``'s
estimate for that line with the truth (``sys.getsizeof`` of what it keeps).

Needs ``pip install '.[bench]'`` (memray, pyperformance). Benchmarks are not
tests: nothing here asserts on time.

Usage::

    .venv/bin/python scripts/bench_heap.py --rounds 7 --markdown
    .venv/bin/python scripts/bench_heap.py --arms baseline,leakprobe,leakprobe-128k \
        --only alloc-json,deepcopy --accuracy
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the shared child protocol and table helpers)


class Arm(NamedTuple):
    python_args: tuple[str, ...] = ()  # before the script: -X ..., -m memray run ...
    setup: str = "none"                # "leakprobe": import it before the workload
    env: tuple[tuple[str, str], ...] = ()
    writes_capture: bool = False       # memray: gets its own output file
    # 5-100x slower than baseline: one value, no warm-up, first round only
    # (tracemalloc with 25 frames took over 5 minutes per json_loads child).
    slow: bool = False


LEAKPROBE_ENV = (("LEAKPROBE_PORT", "0"), ("LEAKPROBE_LOG_LEVEL", "off"))
MEMRAY_RUN = ("-m", "memray", "run", "--quiet", "--force", "--no-compress")

ARMS: dict[str, Arm] = {
    "baseline": Arm(),
    "leakprobe": Arm(setup="leakprobe", env=LEAKPROBE_ENV),
    "tracemalloc-1": Arm(python_args=("-X", "tracemalloc=1")),
    "tracemalloc-25": Arm(python_args=("-X", "tracemalloc=25"), slow=True),
    "memray": Arm(python_args=MEMRAY_RUN, writes_capture=True),
    "memray-pyalloc": Arm(python_args=(*MEMRAY_RUN, "--trace-python-allocators"),
                          writes_capture=True),
    # Native memory (issue 12): leakprobe's malloc hooks on top of its
    # defaults, next to memray's own native mode (native stacks on every
    # allocation it records).
    "leakprobe-native": Arm(setup="leakprobe", env=(*LEAKPROBE_ENV, ("LEAKPROBE_NATIVE", "1"))),
    "memray-native": Arm(python_args=(*MEMRAY_RUN, "--native"), writes_capture=True),
}
DEFAULT_ARMS = tuple(ARMS)
SWEEP_KIB = (64, 128, 256, 512, 1024, 2048)


def arm_by_name(name: str) -> Arm:
    """An arm of ARMS, or ``leakprobe-<N>k`` for any N."""
    if name in ARMS:
        return ARMS[name]
    prefix, _, size = name.partition("-")
    if prefix == "leakprobe" and size.endswith("k") and size[:-1].isdigit() \
            and int(size[:-1]) > 0:
        return Arm(setup="leakprobe", env=(
            *LEAKPROBE_ENV,
            ("LEAKPROBE_HEAP_SAMPLE_BYTES", str(int(size[:-1]) * 1024))))
    raise argparse.ArgumentTypeError(
        f"unknown arm {name!r}: expected one of {', '.join(ARMS)} "
        f"or leakprobe-<N>k (e.g. leakprobe-128k)")


# --------------------------------------------------------------------------
# Workloads

OWN_WORKLOADS = ("alloc-json", "alloc-graphs")
"""Rows of bench.py's CHILD_WORKLOADS that are about the heap."""

PYPERFORMANCE = ("deepcopy", "json_dumps", "json_loads", "xml_etree", "float",
                 "nqueens", "raytrace", "deltablue")
"""pyperformance benchmarks with no dependencies beyond pyperf, chosen for
allocation churn (deepcopy, json, xml_etree, float, raytrace) and for plain
interpreter work with steady small allocations (nqueens, deltablue)."""

TARGET_VALUE_S = 0.25
"""pyperf loops are calibrated so that one value takes about this long."""


@functools.cache
def pyperformance_script(name: str) -> str:
    try:
        import pyperformance
    except ImportError:
        raise SystemExit("pyperformance is not installed: "
                         "pip install '.[bench]'") from None
    path = os.path.join(os.path.dirname(pyperformance.__file__), "data-files",
                        "benchmarks", f"bm_{name}", "run_benchmark.py")
    if not os.path.exists(path):
        raise SystemExit(f"pyperformance has no benchmark {name!r} ({path})")
    return path


def child_pyperf(script: str, loops: int, values: int, warmups: int) -> None:
    """Child mode: one pyperf worker run in this process; reports the time of
    one value (all sub-benchmarks of the script, `loops` iterations each)."""
    import runpy

    import pyperf

    with tempfile.TemporaryDirectory(prefix="leakprobe-bench-heap-") as tmp:
        out = os.path.join(tmp, "pyperf.json")
        sys.argv = [script, "--worker", "--quiet", "--loops", str(loops),
                    "--values", str(values), "--warmups", str(warmups),
                    "--output", out]
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise
        suite = pyperf.BenchmarkSuite.load(out)
    # Values are per loop iteration: scale back to the time of one value.
    seconds = sum(min(b.get_values()) * loops for b in suite.get_benchmarks())
    bench.emit(ms_min=seconds * 1e3, threads=bench.os_thread_count())


ACCURACY_BYTES = 16 << 20


def accuracy_block(size: int) -> bytes:
    """The one site whose estimate the accuracy row checks."""
    return bytes(size)


def child_accuracy() -> None:
    """Child mode: keep ~16 MiB from one site, report leakprobe's estimate
    for that site and the truth."""
    import leakprobe

    rng = random.Random()
    kept: list[bytes] = []
    truth = 0
    while truth < ACCURACY_BYTES:
        block = accuracy_block(rng.randint(16, 4096))
        kept.append(block)
        truth += sys.getsizeof(block)
    estimate = sum(stat.size for stat in leakprobe.heap_snapshot().statistics("site")
                   if stat.site is not None and stat.site.function == "accuracy_block")
    bench.emit(truth=truth, estimate=estimate, threads=bench.os_thread_count())


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--setup", choices=("none", "leakprobe"), default="none")
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--values", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=1)
    args = parser.parse_args(argv)
    if args.setup == "leakprobe":
        import leakprobe  # noqa: F401  (starts profiling)
    if args.child == "accuracy":
        child_accuracy()
    elif args.child in bench.CHILD_WORKLOADS:
        bench.run_child_workload(args.child, rounds=args.warmups + args.values)
    else:
        child_pyperf(pyperformance_script(args.child), args.loops, args.values,
                     args.warmups)
    return 0


# --------------------------------------------------------------------------
# Parent


def arm_argv(arm_name: str, workload: str, extra: list[str], tmp: str) -> list[str]:
    arm = arm_by_name(arm_name)
    python_args = list(arm.python_args)
    if arm.writes_capture:
        python_args += ["--output", os.path.join(tmp, "capture.bin")]
    return [sys.executable, *python_args, os.path.abspath(__file__),
            "--child", workload, "--setup", arm.setup, *extra]


CHILD_TIMEOUT_S = 900.0
"""tracemalloc with 25 frames runs alloc-json ~50x slower than baseline."""


SLOW_ARM_TIMEOUT_S = 60.0
"""A slow arm that cannot finish one value in this long is reported as at
least this slow (tracemalloc-25 on json_loads ran for minutes)."""


def run_arm(arm_name: str, workload: str, extra: list[str],
            timeout: float = CHILD_TIMEOUT_S) -> dict:
    with tempfile.TemporaryDirectory(prefix="leakprobe-bench-heap-") as tmp:
        try:
            payload, _, _ = bench.run_child(
                arm_argv(arm_name, workload, extra, tmp), bench.BASELINE,
                timeout=timeout, extra_env=dict(arm_by_name(arm_name).env))
        except bench.BenchError as error:
            raise bench.BenchError(f"{workload}, arm {arm_name}: {error}") from None
    return payload


def calibrate(workload: str, target_s: float) -> list[str]:
    """Extra child arguments for `workload`: pyperf loops for about
    `target_s` per value, measured once without a profiler."""
    if workload in bench.CHILD_WORKLOADS:
        return []
    probe = run_arm("baseline", workload,
                    ["--loops", "1", "--values", "1", "--warmups", "0"])
    loops = max(1, round(target_s / max(probe["ms_min"] / 1e3, 1e-6)))
    return ["--loops", str(loops)]


class Row(NamedTuple):
    workload: str
    ms: dict[str, list[float]]  # arm -> fastest time of each round

    def fastest(self, arm: str) -> float:
        return min(self.ms[arm])

    def ratio(self, arm: str) -> float:
        """arm / baseline; for a slow arm that timed out, the lower bound
        the timeout gives, as a negative number (rendered "> x")."""
        if math.isinf(self.fastest(arm)):
            return -SLOW_ARM_TIMEOUT_S * 1e3 / self.fastest("baseline")
        return self.fastest(arm) / self.fastest("baseline")


def run_workload(workload: str, arms: list[str], rounds: int, value_s: float) -> Row:
    extra = calibrate(workload, value_s)
    ms: dict[str, list[float]] = {arm: [] for arm in arms}
    for index in range(rounds):
        order = arms[index % len(arms):] + arms[:index % len(arms)]
        got = {}
        for arm in order:
            if not arm_by_name(arm).slow:
                got[arm] = run_arm(arm, workload, extra)["ms_min"]
            elif index == 0:
                try:
                    got[arm] = run_arm(arm, workload,
                                       [*extra, "--values", "1", "--warmups", "0"],
                                       timeout=SLOW_ARM_TIMEOUT_S)["ms_min"]
                except bench.BenchError as error:
                    if "did not finish" not in str(error):
                        raise
                    got[arm] = math.inf  # shown as "> SLOW_ARM_TIMEOUT_S / baseline"
        for arm, value in got.items():
            ms[arm].append(value)
        bench.log(f"{workload} round {index + 1}/{rounds}: " + ", ".join(
            f"{arm} {got[arm]:.1f} ms" for arm in arms if arm in got))
    return Row(workload, ms)


CALLGRIND_SLOWDOWN = 50
"""Roughly how much slower code runs under callgrind (see the docstring)."""


def callgrind_instructions(arm: str, workload: str, extra: list[str],
                           values: int) -> int:
    with tempfile.TemporaryDirectory(prefix="leakprobe-bench-heap-") as tmp:
        argv = ["valgrind", "--tool=callgrind",
                f"--callgrind-out-file={os.path.join(tmp, 'callgrind.out')}",
                *arm_argv(arm, workload, [*extra, "--values", str(values),
                                          "--warmups", "0"], tmp)]
        env = bench.child_env(bench.BASELINE) | dict(arm_by_name(arm).env)
        # One string-hash seed for every arm: a process's seed moves its
        # dictionaries' probe chains, and so its count, by a few per cent.
        env["PYTHONHASHSEED"] = "0"
        if arm_by_name(arm).setup == "leakprobe":
            # Background periods stretched like the run: their work keeps its
            # real-time share instead of counting ~50 times against a value.
            for name, seconds in (("SAMPLE_INTERVAL", 1), ("FD_RECONCILE_INTERVAL", 5),
                                  ("TREND_INTERVAL", 10),
                                  ("CONTAINER_DISCOVER_INTERVAL", 30)):
                env[f"LEAKPROBE_{name}"] = str(seconds * CALLGRIND_SLOWDOWN)
        proc = subprocess.run(argv, env=env, cwd=bench.child_cwd(), text=True,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=3600, check=False)
    found = re.search(r"==\d+== Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise bench.BenchError(f"callgrind {arm} {workload}: exit status "
                               f"{proc.returncode}\n{proc.stderr[-1500:]}")
    return int(found.group(1))


def callgrind_ratio(workload: str, value_s: float = TARGET_VALUE_S,
                    arm: str = "leakprobe") -> float:
    """Instructions of one value with leakprobe / without, by difference
    (2 values minus 1 value), so start-up and exit cancel out."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    extra = calibrate(workload, value_s / 5)
    runs = [(a, values) for a in ("baseline", arm) for values in (1, 2)]
    # Counts do not depend on neighbours: use every CPU.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(
            lambda run: callgrind_instructions(run[0], workload, extra, run[1]),
            runs)))
    cost = {a: counts[a, 2] - counts[a, 1] for a in ("baseline", arm)}
    ratio = cost[arm] / cost["baseline"]
    bench.log(f"callgrind {workload}: {cost['baseline']:,} vs "
              f"{cost[arm]:,} instructions for one value with {arm}: {ratio:.4f}")
    return ratio


def accuracy(arms: list[str], runs: int) -> dict[str, float]:
    """RMS relative error of the 16 MiB site's estimate, per leakprobe arm."""
    errors: dict[str, float] = {}
    for arm in arms:
        if arm_by_name(arm).setup != "leakprobe":
            continue
        squares = []
        for _ in range(runs):
            got = run_arm(arm, "accuracy", [])
            squares.append(((got["estimate"] - got["truth"]) / got["truth"]) ** 2)
        errors[arm] = math.sqrt(statistics.fmean(squares))
        bench.log(f"accuracy {arm}: RMS error {errors[arm]:.1%} over {runs} runs")
    return errors


def geometric_mean(values: list[float]) -> float:
    """Of ratios; negative ones are lower bounds (see Row.ratio), and make
    the mean one too."""
    mean = math.exp(statistics.fmean(math.log(abs(v)) for v in values))
    return -mean if any(v < 0 for v in values) else mean


def fmt_ratio(ratio: float) -> str:
    return f"> {-ratio:.0f}" if ratio < 0 else f"{ratio:.3f}"


def render(rows: list[Row], arms: list[str], errors: dict[str, float],
           instructions: dict[str, float], markdown: bool) -> str:
    probes = [arm for arm in arms if arm != "baseline"]
    header = ("workload", "baseline ms", *probes)
    if instructions:
        header += ("leakprobe instructions",)

    def cells(name: str, baseline: str, ratios: list[float],
              instr: float | None) -> tuple[str, ...]:
        row = (name, baseline, *(fmt_ratio(r) for r in ratios))
        if instructions:
            row += ("" if instr is None else f"{instr:.3f}",)
        return row

    table = [cells(row.workload, bench.fmt(row.fastest("baseline")),
                   [row.ratio(arm) for arm in probes],
                   instructions.get(row.workload)) for row in rows]
    if rows:
        table.append(cells(
            "geometric mean", "",
            [geometric_mean([r.ratio(arm) for r in rows]) for arm in probes],
            geometric_mean(list(instructions.values())) if instructions else None))
    if errors:
        error_cells = (f"site error, {ACCURACY_BYTES >> 20} MiB (RMS)", "",
                       *(f"{errors[arm]:.1%}" if arm in errors else "" for arm in probes))
        table.append(error_cells + (("",) if instructions else ()))
    render_table = bench.render_markdown if markdown else bench.render_text
    return render_table(table, header)


def parse_args(argv: list[str]) -> argparse.Namespace:
    workloads = [*OWN_WORKLOADS, *PYPERFORMANCE]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of every arm per workload (default 5)")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help="comma-separated arms; baseline is always added")
    parser.add_argument("--sweep", action="store_true",
                        help=f"add leakprobe at {', '.join(f'{k}k' for k in SWEEP_KIB)}")
    parser.add_argument("--only", default=",".join(workloads),
                        help=f"comma-separated workloads (default: {', '.join(workloads)})")
    parser.add_argument("--value-seconds", type=float, default=TARGET_VALUE_S,
                        help="pyperf loops are calibrated for about this long a "
                             f"value without a profiler (default {TARGET_VALUE_S})")
    parser.add_argument("--accuracy", action="store_true",
                        help="add the estimate-error row for leakprobe arms")
    parser.add_argument("--callgrind-arm", default="leakprobe", type=str,
                        help="the arm --callgrind compares with baseline (e.g. leakprobe-native)")
    parser.add_argument("--callgrind", action="store_true",
                        help="add instruction-count ratios for leakprobe (valgrind)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--list", action="store_true", help="print arms and workloads")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if args.sweep:
        arms += [f"leakprobe-{k}k" for k in SWEEP_KIB]
    arms = ["baseline", *dict.fromkeys(a for a in arms if a != "baseline")]
    for arm in arms:
        try:
            arm_by_name(arm)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    args.arm_list = arms
    # --only '' with --accuracy: the error row alone.
    args.workloads = [w for w in args.only.split(",") if w]
    for workload in args.workloads:
        if workload not in workloads:
            parser.error(f"unknown workload {workload!r}: expected some of "
                         f"{', '.join(workloads)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv: list[str]) -> int:
    if "--child" in argv:
        return child_main(argv)
    args = parse_args(argv)
    if args.list:
        print("arms:", ", ".join(args.arm_list), "(or leakprobe-<N>k)")
        print("workloads:", ", ".join(args.workloads))
        return 0
    bench.log(bench.machine_description())
    before = bench.CpuSnapshot.take()
    rows = [run_workload(w, args.arm_list, args.rounds, args.value_seconds)
            for w in args.workloads]
    instructions = ({w: callgrind_ratio(w, args.value_seconds, args.callgrind_arm)
                     for w in args.workloads}
                    if args.callgrind else {})
    errors = accuracy(args.arm_list, max(args.rounds, 10)) if args.accuracy else {}
    other, steal = bench.machine_noise(before, bench.CpuSnapshot.take())
    print(render(rows, args.arm_list, errors, instructions, args.markdown))
    print(f"\nother processes used {other:.0%} of the CPUs during the run; "
          f"hypervisor steal {steal:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
