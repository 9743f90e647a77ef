#!/usr/bin/env python3
"""Scrape latency of one target serving a group of processes
(docs/multiprocess.md): a holder with leakprobe's defaults forks N-1
children (each keeping some heap, fds and tracked objects of its own, so
every process has full families), then one client scrapes the holder's port
every --interval seconds; latency is the client's, from request to the last
byte. The exporter's CPU budget (LEAKPROBE_EXPORTER_CPU_SHARE, default 2 %
of a CPU) makes scrapes wait once they ask for more than that share: the
pace keeps a scrape's own cost apart from that wait, and the time the
holder's renders waited for the budget is printed (`throttled_s`).

    .venv/bin/python scripts/bench_group.py                 # 1, 4 and 16 processes
    .venv/bin/python scripts/bench_group.py --processes 1 4 16 --scrapes 100 --markdown
    .venv/bin/python scripts/bench_group.py --interval 0    # back to back: the budget's waits
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time

import httpx

HOLDER = textwrap.dedent(
    """
    import json, os, socket, sys, tempfile, time
    import leakprobe

    def keep_busy():
        # State of its own: heap, sockets and files, so its families are full.
        keep = [bytearray(4096) for _ in range(2000)]
        socks = [socket.socket() for _ in range(20)]
        files = [tempfile.TemporaryFile() for _ in range(20)]
        return keep, socks, files

    state = keep_busy()
    kids = []
    for _ in range(int(sys.argv[1]) - 1):
        pid = os.fork()
        if pid == 0:
            state = keep_busy()
            time.sleep(3600)
            os._exit(0)
        kids.append(pid)
    print(json.dumps(kids), flush=True)
    sys.stdin.read()
    for pid in kids:
        os.kill(pid, 9)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throttled_seconds(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("exposer_throttled_seconds_total"):
            return float(line.rsplit(" ", 1)[-1])
    return 0.0


def measure(processes: int, scrapes: int, interval: float) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    env.update(LEAKPROBE_PORT=str(port), LEAKPROBE_LOG_LEVEL="warning")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(processes)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        json.loads(holder.stdout.readline())
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # until every process is served
            text = httpx.get(url, timeout=10).text
            line = next((x for x in text.splitlines()
                         if x.startswith("leakprobe_group_processes")), "")
            if line.endswith(f" {processes}") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        latencies, size = [], 0
        throttled_before = throttled_seconds(httpx.get(url, timeout=10).text)
        with httpx.Client(timeout=10) as client:  # one client: no TLS set-up per scrape
            for _ in range(scrapes):
                time.sleep(interval)
                start = time.perf_counter()
                response = client.get(url)
                latencies.append((time.perf_counter() - start) * 1e3)
                size = len(response.content)
        throttled = throttled_seconds(httpx.get(url, timeout=10).text) - throttled_before
        served = line.rsplit(" ", 1)[-1]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    return {"processes": processes, "served": served, "scrapes": scrapes,
            "bytes": size, "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies),
            "throttled_s": throttled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--scrapes", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.25,
                        help="seconds between scrapes (default 0.25; 0: back to back)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = [measure(n, args.scrapes, args.interval) for n in args.processes]
    if args.markdown:
        print("| processes | served | scrapes | body bytes | p50 ms | p99 ms | max ms "
              "| throttled s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['processes']} | {r['served']} | {r['scrapes']} | {r['bytes']} | "
                  f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} "
                  f"| {r['throttled_s']:.2f} |")
    else:
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
