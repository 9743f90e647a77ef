#!/usr/bin/env python3
"""Detection latency at default production settings (issue 10, point 8;
docs/trends.md, docs/benchmarks.md): how long after a process starts
leaking until ``leakprobe_leak_suspected`` says so, and how often an
honest process is flagged.

Four programs run side by side, each under ``import leakprobe`` with the
defaults (no ``LEAKPROBE_TREND_*`` variable set: 10 s trend interval, 300 s
warm-up), each also doing honest background work so the series are not
flat lines:

- ``socket``: one TCP connection per minute that the peer closes and the
  program never does (CLOSE_WAIT), beside a steady connect/close churn;
- ``object``: one tracked object per minute kept alive, beside tracked
  objects created and closed at 10 per second;
- ``heap``: 1 MiB of heap per minute kept (64 KiB blocks), beside an
  allocation sawtooth of ~8 MiB;
- ``honest``: the same background work with no leak, plus a bounded cache
  filling up then staying: every series it flags is a false alarm.

The script scrapes each program's real exporter every ``--poll`` seconds
for ``--minutes`` minutes, and prints when
each leak was first flagged (seconds since the program started) and every
(resource, key) the honest program ever had flagged. Benchmarks are not
tests: nothing here asserts.

Usage::

    .venv/bin/python scripts/bench_latency.py                 # up to 40 minutes
    .venv/bin/python scripts/bench_latency.py --minutes 60 --poll 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

COMMON = """
import gc, os, socket, threading, time, sys
import leakprobe

def background(stop_at):
    # Honest churn: fds opened and closed, tracked objects made and closed,
    # an allocation sawtooth. Runs until stop_at.
    @leakprobe.track_type
    class Churn:
        def close(self):
            pass
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    saw = []
    tick = 0
    while time.monotonic() < stop_at:
        tick += 1
        c = Churn(); c.close()
        with open(os.devnull, "rb"):
            pass
        if tick % 20 == 0:
            s = socket.create_connection(("127.0.0.1", port)); s.close()
        saw.append(bytearray(64 * 1024))
        if len(saw) >= 128:   # ~8 MiB, then dropped: the sawtooth
            saw.clear()
        time.sleep(0.1)
"""

PROGRAMS = {
    "socket": COMMON + """
peer = socket.socket(); peer.bind(("127.0.0.1", 0)); peer.listen(64)
def close_at_once():
    while True:
        conn, _ = peer.accept()
        conn.close()          # the peer closes; the program never does
threading.Thread(target=close_at_once, daemon=True).start()
kept = []
def leak(stop_at):
    while time.monotonic() < stop_at:
        kept.append(socket.create_connection(peer.getsockname()))  # leak-site
        time.sleep(60)
""",
    "object": COMMON + """
@leakprobe.track_type
class Resource:
    def close(self):
        pass
kept = []
def leak(stop_at):
    while time.monotonic() < stop_at:
        kept.append(Resource())  # leak-site
        time.sleep(60)
""",
    "heap": COMMON + """
kept = []
def leak(stop_at):
    while time.monotonic() < stop_at:
        kept.append(bytes(64 * 1024))  # leak-site: 16 per minute, 1 MiB
        time.sleep(60 / 16)
""",
    "honest": COMMON + """
import functools
@functools.lru_cache(maxsize=200)
def cached(n):
    return bytes(4096) + str(n).encode()
def leak(stop_at):
    n = 0
    while time.monotonic() < stop_at:
        cached(n % 400 if n < 200 else n % 200)   # fills to 200, then stays
        n += 1
        time.sleep(0.5)
""",
}

MAIN = """
stop_at = time.monotonic() + float(sys.argv[1])
print(json.dumps({"port": leakprobe.status()["port"]}), flush=True)
threading.Thread(target=background, args=(stop_at,), daemon=True).start()
leak(stop_at)
"""


def suspected(client: httpx.Client, port: int) -> set[tuple[str, str]]:
    text = client.get(f"http://127.0.0.1:{port}/metrics").text
    out = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "leakprobe_leak_suspected" and sample.value == 1:
                out.add((sample.labels["resource"], sample.labels["key"]))
    return out


# What each leaking program must be flagged for: (resource, key) pairs, any.
EXPECTED = {
    "socket": {("fd", "tcp")},
    "object": {("object", "__main__.Resource")},
    "heap": {("heap", "total")},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0,
                        help="how long the programs run (default 40)")
    parser.add_argument("--poll", type=float, default=10.0,
                        help="seconds between scrapes (default 10)")
    args = parser.parse_args()
    seconds = args.minutes * 60
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    env.update(LEAKPROBE_PORT="0", LEAKPROBE_LOG_LEVEL="warning")
    procs: dict[str, tuple[subprocess.Popen[str], int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in PROGRAMS.items():
            path = os.path.join(tmp, f"latency_{name}.py")  # not socket.py: it would shadow the module
            with open(path, "w") as f:
                f.write("import json\n" + textwrap.dedent(body) + MAIN)
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, path, str(seconds + 30)], env=env,
                                    stdout=subprocess.PIPE, text=True)
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                for other, _, _ in procs.values():
                    other.kill()
                proc.kill()
                raise SystemExit(f"the {name} program did not start (see its stderr above)")
            procs[name] = (proc, json.loads(line)["port"], started)
        first: dict[str, float | None] = {name: None for name in EXPECTED}
        false_alarms: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + seconds
        try:
            with httpx.Client(timeout=10) as client:
                while time.monotonic() < deadline:
                    for name, (_, port, started) in procs.items():
                        flagged = suspected(client, port)
                        at = time.monotonic() - started
                        if name == "honest":
                            for key in flagged:
                                false_alarms.setdefault(key, at)
                        elif first[name] is None and flagged & EXPECTED[name]:
                            first[name] = at
                            print(f"{name}: flagged after {at:.0f} s "
                                  f"({sorted(flagged)})", flush=True)
                    # On until the deadline even when every leak is
                    # flagged: the honest program's run is the false-alarm
                    # figure.
                    time.sleep(args.poll)
        finally:
            for proc, _, _ in procs.values():
                proc.kill()
                proc.wait()
    honest_seconds = time.monotonic() - procs["honest"][2]
    print(json.dumps({
        "first_flagged_seconds": first,
        "honest_run_seconds": round(honest_seconds),
        "honest_false_alarms": {f"{r}/{k}": round(t) for (r, k), t in false_alarms.items()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
