#!/usr/bin/env python3
"""What the ASGI middleware (leakprobe.integrations.asgi; issue 11, point 6)
costs per request, measured side by side on real servers (docs/benchmarks.md,
"ASGI middleware").

Three uvicorn servers on 127.0.0.1 run the same FastAPI app (one route,
``GET /items/{item_id}``, returning a small JSON body), all alive at once:

- ``disabled``: ``LEAKPROBE_DISABLE=1`` (leakprobe imported, not running);
- ``off``: leakprobe running with every adapter but ``asgi``
  (``LEAKPROBE_ADAPTERS`` lists the others): no middleware;
- ``on``: leakprobe running with the defaults: the middleware wraps the app.

One httpx client per server (a kept-alive connection) sends batches of
``--requests`` sequential requests, rotating the order of the servers for
each round, so that every arm sees the same drift of the shared machine.
Per arm: the median over rounds of the per-request time of a batch; and
per round the difference on - off (the middleware's cost) and the ratio.
Benchmarks are not tests: nothing here asserts.

Usage::

    .venv/bin/python scripts/bench_asgi.py                   # 15 rounds of 500 requests
    .venv/bin/python scripts/bench_asgi.py --rounds 31 --requests 1000
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

APP = '''\
import leakprobe
from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int):
    return {"item": item_id}
'''

ARMS = {
    "disabled": {"LEAKPROBE_DISABLE": "1"},
    "off": {"LEAKPROBE_ADAPTERS": "httpx,requests,urllib,sqlalchemy,sqlite3,threading,"
                                  "subprocess,celery"},
    "on": {},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(directory: Path, env_overrides: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    env.update(LEAKPROBE_PORT="0", LEAKPROBE_LOG_LEVEL="off", **env_overrides)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(directory), "--host",
         "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"uvicorn did not start ({env_overrides})") from None
            time.sleep(0.1)


def batch(client: httpx.Client, requests: int, offset: int) -> float:
    """Seconds per request of `requests` sequential requests."""
    started = time.perf_counter()
    for i in range(requests):
        response = client.get(f"/items/{offset + i}")
        if response.status_code != 200:
            raise SystemExit(f"unexpected status {response.status_code}")
    return (time.perf_counter() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leakprobe-bench-asgi-") as tmp:
        (Path(tmp) / "app.py").write_text(APP)
        servers = {name: start(Path(tmp), env) for name, env in ARMS.items()}
        clients = {name: httpx.Client(base_url=url, timeout=30)
                   for name, (_, url) in servers.items()}
        try:
            names = list(ARMS)
            for name in names:  # warm-up, discarded
                batch(clients[name], args.requests, 0)
            times: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    times[name].append(batch(clients[name], args.requests, r * args.requests))
                print(f"round {r + 1}: " + ", ".join(
                    f"{n} {times[n][-1] * 1e6:.0f} us" for n in names), file=sys.stderr)
        finally:
            for client in clients.values():
                client.close()
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    added = [(on - off) * 1e6 for on, off in zip(times["on"], times["off"])]
    ratios = [on / off for on, off in zip(times["on"], times["off"])]
    print(f"{args.rounds} rounds of {args.requests} sequential requests per arm "
          f"(Python {sys.version.split()[0]})")
    print("| arm | median per request | min | max |")
    print("| --- | --- | --- | --- |")
    for name in names:
        print(f"| {name} | {statistics.median(times[name]) * 1e6:.0f} us | "
              f"{min(times[name]) * 1e6:.0f} us | {max(times[name]) * 1e6:.0f} us |")
    quartiles = statistics.quantiles(added, n=4)
    print(f"middleware (on - off), per request: median {statistics.median(added):.0f} us, "
          f"IQR {quartiles[0]:.0f}..{quartiles[2]:.0f} us; on/off ratio median "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
