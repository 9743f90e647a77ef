#!/usr/bin/env python3
"""Cost of tracked objects (docs/objects.md, docs/benchmarks.md): the time
of one create/close pair of a class tracked with ``leakprobe.track_type``,
side by side with the same class untracked, and the registry's memory at
one million live tracked objects.

Every figure comes from fresh subprocesses of ``sys.executable``; the arms
of the pair-cost row alternate (A/B, B/A, ...) and the row reports the
median of the per-round figures, because this machine's two cores are
shared and absolute times drift. Benchmarks are not tests: nothing here
asserts on time.

Usage::

    .venv/bin/python scripts/bench_objects.py              # both rows
    .venv/bin/python scripts/bench_objects.py --rounds 9 --pairs 200000
    .venv/bin/python scripts/bench_objects.py --only memory --objects 1000000
    .venv/bin/python scripts/bench_objects.py --only instructions --seeds 5

``--only instructions`` (not part of the default run: it takes about 12
minutes on 2 cores) counts user-space instructions with callgrind for the
two object-churn units of scripts/bench.py (an ``httpx.Client`` made and
closed, an ORM ``Session``), N units between two markers after 200
untimed ones (start-up, imports and exit are not counted), in four arms:
no leakprobe, leakprobe with ``LEAKPROBE_ADAPTERS=none``, leakprobe with
``LEAKPROBE_OBJECTS=0``, leakprobe with every default; the last two give
what object tracking alone adds. Each arm runs under several string-hash
seeds (``PYTHONHASHSEED``), and the median is reported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import re
import shutil
import tempfile
import json
import os
import statistics
import subprocess
import sys
import textwrap

MARKER = "LEAKPROBE-BENCH"

# One child: define a plain class and the same class tracked, then time
# `pairs` create/close pairs of the arm's class (best of 5 timeit repeats).
PAIR_CHILD = """
import timeit, leakprobe

class Plain:
    def __init__(self, tag=None):
        self.tag = tag
    def close(self):
        self.tag = None

@leakprobe.track_type
class Tracked:
    def __init__(self, tag=None):
        self.tag = tag
    def close(self):
        self.tag = None

if {arm!r} == "stopped":
    leakprobe.stop()
cls = Plain if {arm!r} == "plain" else Tracked
if {arm!r} == "wrapt":  # the same tracking through wrapt's FunctionWrapper
    import wrapt
    from leakprobe import _objects
    t = _objects.register_type("bench.WraptTracked")

    class WraptTracked:
        def __init__(self, tag=None):
            self.tag = tag
        def close(self):
            self.tag = None

    def init_wrapper(wrapped, instance, args, kwargs):
        wrapped(*args, **kwargs)
        t.created(instance)

    def close_wrapper(wrapped, instance, args, kwargs):
        result = wrapped(*args, **kwargs)
        t.closed(instance)
        return result

    wrapt.wrap_function_wrapper(WraptTracked, "__init__", init_wrapper)
    wrapt.wrap_function_wrapper(WraptTracked, "close", close_wrapper)
    cls = WraptTracked

def pair():
    obj = cls(1)
    obj.close()

best = min(timeit.repeat(pair, number={pairs}, repeat=5)) / {pairs}
print({marker!r}, json.dumps({{"ns": best * 1e9}}))
"""

# One child: `n` live objects of a weakly referenceable class; RSS before
# and after tracking all of them (the objects themselves exist before), the
# registry's own tables, and the time of one scrape and one summary then.
MEMORY_CHILD = """
import gc, time, leakprobe
from leakprobe import _native, _objects

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

class Conn:
    pass

objs = [Conn() for _ in range({n})]
gc.collect()
before = rss()
t = _objects.register_type("bench.Conn")
start = time.perf_counter()
for o in objs:
    t.created(o)
track_s = time.perf_counter() - start
gc.collect()
after = rss()
summary = _native.object_summary()
start = time.perf_counter()
text = _native.collect_text()
scrape_s = time.perf_counter() - start
start = time.perf_counter()
for o in objs:
    t.closed(o)
close_s = time.perf_counter() - start
print({marker!r}, json.dumps({{
    "records": summary["records"], "rss_delta": after - before,
    "registry_bytes": summary["memory_bytes"], "track_s": track_s, "close_s": close_s,
    "scrape_s": scrape_s, "live": [x["live"] for x in summary["types"]
                                   if x["name"] == "bench.Conn"][0]}}))
"""


def run_child(code: str, env: dict[str, str]) -> dict:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    full_env.update({"LEAKPROBE_PORT": "0", "LEAKPROBE_LOG_LEVEL": "off"}, **env)
    # The wrapt arm finds wrapt where this interpreter does.
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", "import json\n" + textwrap.dedent(code)],
                          env=full_env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    line = next(line for line in proc.stdout.splitlines() if line.startswith(MARKER))
    return json.loads(line[len(MARKER):])


def pair_cost(rounds: int, pairs: int) -> None:
    arms: tuple[str, ...] = ("plain", "tracked", "stopped")
    if importlib.util.find_spec("wrapt") is not None:
        arms += ("wrapt",)
    figures: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(rounds):
        order = arms if r % 2 == 0 else arms[::-1]
        for arm in order:
            figures[arm].append(run_child(PAIR_CHILD.format(arm=arm, pairs=pairs,
                                                            marker=MARKER), {})["ns"])
    plain = statistics.median(figures["plain"])
    tracked = statistics.median(figures["tracked"])
    stopped = statistics.median(figures["stopped"])
    extra = statistics.median(t - p for t, p in zip(figures["tracked"], figures["plain"]))
    extra_stopped = statistics.median(s - p for s, p in zip(figures["stopped"],
                                                            figures["plain"]))
    print(f"create/close pair ({rounds} rounds x {pairs} pairs, median of rounds):")
    print(f"  untracked class            {plain:7.0f} ns")
    print(f"  tracked, leakprobe running {tracked:7.0f} ns  "
          f"(+{extra:.0f} ns a pair, x{tracked / plain:.2f})")
    print(f"  tracked, leakprobe stopped {stopped:7.0f} ns  (+{extra_stopped:.0f} ns a pair)")
    if "wrapt" in figures:
        wrapt_ns = statistics.median(figures["wrapt"])
        print(f"  tracked through wrapt      {wrapt_ns:7.0f} ns  (+{wrapt_ns - plain:.0f} ns a pair; "
              "FunctionWrapper on __init__ and close, for comparison)")


def memory(n: int) -> None:
    m = run_child(MEMORY_CHILD.format(n=n, marker=MARKER),
                  {"LEAKPROBE_OBJECT_RECORDS": str(n), "LEAKPROBE_HEAP": "0",
                   "LEAKPROBE_FDS": "0"})
    assert m["records"] == n and m["live"] == n, m
    print(f"registry at {n} live tracked objects:")
    print(f"  RSS growth from tracking them  {m['rss_delta'] / 2**20:7.1f} MiB "
          f"({m['rss_delta'] / n:.0f} bytes an object: registry tables + weak reference)")
    print(f"  the registry's own tables      {m['registry_bytes'] / 2**20:7.1f} MiB "
          f"({m['registry_bytes'] / n:.0f} bytes an object; leakprobe_object_registry_memory_bytes)")
    print(f"  created() of all {n}: {m['track_s']:.2f} s ({m['track_s'] / n * 1e9:.0f} ns each); "
          f"closed(): {m['close_s']:.2f} s ({m['close_s'] / n * 1e9:.0f} ns each)")
    print(f"  one scrape (collect_text) then: {m['scrape_s'] * 1e3:.2f} ms")


# One unit of each object-churn row of scripts/bench.py, repeated `n` times
# after 50 untimed ones (imports, first connection, caches).
CHURN_UNITS = {
    "httpx-client": ("""
import ssl, httpx
ctx = ssl.create_default_context()
def unit():
    httpx.Client(verify=ctx).close()
""", 400),
    "sqlalchemy-session": ("""
import os, tempfile
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
engine = create_engine("sqlite:///" + os.path.join(tempfile.mkdtemp(), "bench.db"))
def unit():
    Session(engine).close()
""", 3000),
}
# Every arm sets the same variables (see callgrind_count): one more in one
# arm would pass for overhead in the httpx unit.
CHURN_ARMS = {
    "no leakprobe": None,
    "leakprobe, adapters off": {"LEAKPROBE_ADAPTERS": "none", "LEAKPROBE_OBJECTS": "1"},
    "leakprobe, objects off": {"LEAKPROBE_ADAPTERS": "all", "LEAKPROBE_OBJECTS": "0"},
    "leakprobe, every default": {"LEAKPROBE_ADAPTERS": "all", "LEAKPROBE_OBJECTS": "1"},
}
TRACKING_ARMS = ("leakprobe, objects off", "leakprobe, every default")
"""Without and with object tracking, the rest of leakprobe on in both: what
tracking itself adds (the issue's "with and without tracking")."""


CALLGRIND_PERIODS = {"LEAKPROBE_SAMPLE_INTERVAL": "50", "LEAKPROBE_FD_RECONCILE_INTERVAL": "250",
                     "LEAKPROBE_TREND_INTERVAL": "500",
                     "LEAKPROBE_CONTAINER_DISCOVER_INTERVAL": "1500"}


def callgrind_count(unit: str, n: int, env: dict[str, str] | None, seed: int) -> int:
    """User-space instructions of `n` units (callgrind), counted between two
    markers (calls of os.getppid, at which callgrind dumps its counts) after
    200 untimed units: start-up, imports and exit are not in the count. (A
    difference of two runs, 2N minus N units, was used before; the
    interpreter's exit, a full collection of a different heap in each run,
    could move it by 5,000 instructions a unit.)"""
    setup, _ = CHURN_UNITS[unit]
    # The warm-up covers what settles in the first units: imports, the
    # first connection, and the stack table learning the positions that
    # heap samples land on (a new one costs a line-table lookup).
    code = ("import leakprobe\n" if env is not None else "") + "import os\n" + setup + (
        f"for _ in range(200): unit()\nos.getppid()\nfor _ in range({n}): unit()\n"
        "os.getppid()\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    full_env["PYTHONHASHSEED"] = str(seed)
    # The periods of the background work stretched like the run (callgrind
    # runs code ~50x slower): its share stays what it is in real time,
    # instead of 50 times that counted against each unit. Every arm gets the
    # same variables (unread without leakprobe): httpx.Client() scans the
    # whole environment for proxy settings, ~14,000 instructions a variable,
    # so one more variable in one arm would pass for its overhead.
    full_env.update({"LEAKPROBE_PORT": "0", "LEAKPROBE_LOG_LEVEL": "off"},
                    **CALLGRIND_PERIODS,
                    **(env or {"LEAKPROBE_ADAPTERS": "all", "LEAKPROBE_OBJECTS": "1"}))
    with tempfile.TemporaryDirectory(prefix="leakprobe-bench-objects-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-before=os_getppid",
             f"--callgrind-out-file={out}", sys.executable, "-c", code],
            env=full_env, capture_output=True, text=True, timeout=3600, check=False)
        # One dump file per marker (out.1, out.2, ...; anything else calling
        # getppid adds one before them): the loop's is the last numbered one.
        parts = sorted((p for p in os.listdir(tmp) if re.fullmatch(r"callgrind\.out\.\d+", p)),
                       key=lambda p: int(p.rsplit(".", 1)[1]))
        found = None
        if proc.returncode == 0 and len(parts) >= 2:
            with open(os.path.join(tmp, parts[-1]), encoding="utf-8") as f:
                found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"callgrind {unit}: exit status {proc.returncode}, dumps {parts}\n"
                           f"{proc.stderr[-1500:]}")
    return int(found.group(1))


def churn_instructions(seeds: int) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--only instructions needs valgrind (apt-get install valgrind)")
    runs = [(unit, arm, seed, n) for unit, (_, n) in CHURN_UNITS.items()
            for arm in CHURN_ARMS for seed in range(seeds)]
    # Counts do not depend on neighbours: use every CPU.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(
            lambda r: callgrind_count(r[0], r[3], CHURN_ARMS[r[1]], r[2]), runs)))
    print(f"instructions per unit (callgrind, N units after 200 untimed ones, median over "
          f"{seeds} hash seeds; min-max in brackets):")
    for unit, (_, n) in CHURN_UNITS.items():
        per_arm = {arm: [counts[unit, arm, seed, n] / n for seed in range(seeds)]
                   for arm in CHURN_ARMS}
        base_values = per_arm["no leakprobe"]
        base = statistics.median(base_values)
        print(f"  {unit} (N = {n}):")
        for arm, values in per_arm.items():
            median = statistics.median(values)
            # A target is met by its worst case: each seed's ratio to the
            # baseline run under the same seed.
            paired = [v / b for v, b in zip(values, base_values)]
            print(f"    {arm:26s} {median:10,.0f}  [{min(values):,.0f}-{max(values):,.0f}]"
                  f"  x{median / base:.3f}  (per seed x{min(paired):.3f}-x{max(paired):.3f})")
        without, with_ = (per_arm[arm] for arm in TRACKING_ARMS)
        paired = [w / o for w, o in zip(with_, without)]
        print(f"    object tracking alone: x{statistics.median(with_) / statistics.median(without):.3f}"
              f"  (per seed x{min(paired):.3f}-x{max(paired):.3f}; every default against "
              "objects off)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("pairs", "memory", "instructions"))
    parser.add_argument("--seeds", type=int, default=5,
                        help="hash seeds per arm for --only instructions (default 5)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=100000)
    parser.add_argument("--objects", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.only in (None, "pairs"):
        pair_cost(args.rounds, args.pairs)
    if args.only in (None, "memory"):
        memory(args.objects)
    if args.only == "instructions":
        churn_instructions(args.seeds)


if __name__ == "__main__":
    main()
