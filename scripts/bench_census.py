#!/usr/bin/env python3
"""The object census's pause (docs/containers.md, docs/benchmarks.md): how
long one census holds the GIL at 1 and 5 million live gc-tracked objects,
and how late a thread that wants to run every millisecond gets meanwhile.
Not a test.

    .venv/bin/python scripts/bench_census.py                 # 1M and 5M objects
    .venv/bin/python scripts/bench_census.py --millions 1 --repeat 5 --markdown

Each size runs in a fresh child process, which builds the objects (empty
lists, gc-tracked like most application objects) and runs `--repeat`
censuses (the first is the growth baseline; all are measured). Reported per
size, as the median over the censuses: the census's own figures
(``leakprobe_census_pause_seconds``: the longest GIL hold, which is
``gc.get_objects()`` or one chunk of counting, whichever is longer, and
``leakprobe_census_duration_seconds``), the time of the ``gc.get_objects()``
call alone, and the largest lateness of a 1 ms ticker thread during the
census: the stall other threads see.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import gc, json, sys, threading, time
    from leakprobe import _containers

    millions, repeat = float(sys.argv[1]), int(sys.argv[2])
    held = [[] for _ in range(int(millions * 1_000_000))]
    gc.collect()
    # No automatic collection during the measurement (it would walk the
    # millions of objects and be counted as the census's). Not gc.freeze():
    # frozen objects are invisible to gc.get_objects(), hence to the census.
    gc.disable()

    lateness = [0.0]
    stop = threading.Event()
    running = threading.Event()

    def ticker():
        while not stop.is_set():
            before = time.perf_counter()
            time.sleep(0.001)
            if running.is_set():
                lateness[0] = max(lateness[0], time.perf_counter() - before - 0.001)

    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    rows = []
    for _ in range(repeat):
        time.sleep(0.05)
        started = time.perf_counter()
        objects = gc.get_objects()
        listing = time.perf_counter() - started
        del objects
        lateness[0] = 0.0
        running.set()
        _containers.census_once(None, top=20)
        running.clear()
        runs, total, pause, duration = _containers._census_figures
        rows.append({"objects": total, "pause": pause, "duration": duration,
                     "get_objects": listing, "ticker_late": lateness[0]})
    stop.set()
    print(json.dumps(rows))
""")


# One discovery pass (docs/containers.md#discovery) in a process with a web
# stack imported (library modules: skipped by path) and `modules` generated
# application modules of 50 functions (5 of them unbounded lru_caches) and 5
# classes of 10 methods each.
DISCOVERY_CHILD = textwrap.dedent("""
    import json, os, statistics, sys, tempfile, time
    import fastapi, httpx, uvicorn  # noqa: F401  (a realistic sys.modules)
    from leakprobe import _containers

    modules = int(sys.argv[1])
    root = tempfile.mkdtemp()
    sys.path.insert(0, root)
    body = ["import functools"]
    body += [f"@functools.cache\\ndef cached{i}(x): return x" for i in range(5)]
    body += [f"def f{i}(x): return x" for i in range(45)]
    for c in range(5):
        body.append(f"class C{c}:")
        body += [f"    def m{i}(self): return {i}" for i in range(10)]
    text = "\\n".join(body) + "\\n"
    for m in range(modules):
        with open(os.path.join(root, f"appmod{m}.py"), "w") as f:
            f.write(text)
        __import__(f"appmod{m}")
    import threading
    late = [0.0]
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            before = time.perf_counter()
            time.sleep(0.001)
            late[0] = max(late[0], time.perf_counter() - before - 0.001)

    times = []
    lateness = []
    threading.Thread(target=ticker, daemon=True).start()
    for _ in range(7):
        time.sleep(0.05)
        late[0] = 0.0
        started = time.perf_counter()
        _containers.discover(None)
        times.append(time.perf_counter() - started)
        lateness.append(late[0])
    stop.set()
    found = sum(1 for s in _containers.containers() if s.origin == "lru_cache")
    print(json.dumps({"modules": len(sys.modules), "found": found,
                      "median": statistics.median(times), "max": max(times),
                      "late": max(lateness)}))
""")


def discovery(modules: int, markdown: bool) -> int:
    out = subprocess.run([sys.executable, "-c", DISCOVERY_CHILD, str(modules)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    r = json.loads(out.stdout)
    if markdown:
        print("\n| modules in sys.modules (application) | caches found | discovery pass, median "
              "| worst of 7 | 1 ms ticker late by, worst |\n|---|---|---|---|---|")
        print(f"| {r['modules']} ({modules}) | {r['found']} | {r['median'] * 1e3:.1f} ms "
              f"| {r['max'] * 1e3:.1f} ms | {r['late'] * 1e3:.1f} ms |")
    else:
        print(r)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", type=float, nargs="+", default=[1, 5])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--discovery-modules", type=int, default=200,
                        help="application modules for the discovery row (0: no row)")
    args = parser.parse_args()
    table = []
    for millions in args.millions:
        out = subprocess.run([sys.executable, "-c", CHILD, str(millions), str(args.repeat)],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        rows = json.loads(out.stdout)
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        worst = {key: max(r[key] for r in rows) for key in rows[0]}
        table.append((millions, median, worst))
        print(f"{millions:g}M: {json.dumps(rows)}", file=sys.stderr)
    if args.markdown:
        print("| live objects (gc-tracked, total) | census pause (longest GIL hold) "
              "| of which gc.get_objects() | census duration | 1 ms ticker late by, worst |")
        print("|---|---|---|---|---|")
    for millions, median, worst in table:
        cells = (f"{millions:g} M ({median['objects']:,.0f})",
                 f"{median['pause'] * 1e3:.1f} ms (worst {worst['pause'] * 1e3:.1f})",
                 f"{median['get_objects'] * 1e3:.1f} ms",
                 f"{median['duration'] * 1e3:.0f} ms",
                 f"{worst['ticker_late'] * 1e3:.1f} ms")
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(cells))
    if args.discovery_modules:
        return discovery(args.discovery_modules, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
