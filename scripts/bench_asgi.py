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

Then, in one child process with leakprobe running, the same app is called
directly (a prepared ``http`` scope, no server, no socket), alternately
bare and wrapped in ``LeakprobeMiddleware``, in batches of ``--requests``
calls: the thread's CPU time per call (``time.thread_time``) of each, so
that other processes' load weighs less than in wall-clock figures.
Benchmarks are not tests: nothing here asserts.

``--instructions`` instead counts user-space instructions per request
(callgrind) of ``scripts/bench.py``'s ``fastapi-async`` server under
uvicorn, in several arms (no leakprobe, every default, without async
attribution, without the middleware, without the middleware and heap
sampling): after 100 warm-up requests the server is sent SIGUSR1, whose
handler calls ``os.getppid()``, at which callgrind dumps its counts
(``--dump-before=os_getppid``); then ``--requests`` requests; then SIGUSR1
again. The count between the two dumps divided by the requests is the
figure: start-up and exit are not in it. Background periods are
stretched (callgrind runs code ~50x slower). About 4 minutes an arm.

Usage::

    .venv/bin/python scripts/bench_asgi.py                   # 15 rounds of 500 requests
    .venv/bin/python scripts/bench_asgi.py --rounds 31 --requests 1000
    .venv/bin/python scripts/bench_asgi.py --instructions --requests 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
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


IN_PROCESS = '''\
import asyncio, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import leakprobe
from app import app
from leakprobe.integrations.asgi import LeakprobeMiddleware

rounds, requests = int(sys.argv[2]), int(sys.argv[3])
wrapped = LeakprobeMiddleware(app)


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message):
    pass


def scope(i):
    path = f"/items/{i}"
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": [],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


async def batch(target):
    started = time.thread_time()
    for i in range(requests):
        await target(scope(i), receive, send)
    return (time.thread_time() - started) / requests


async def main():
    await batch(app)
    await batch(wrapped)
    added = []
    for r in range(rounds):
        first, second = (app, wrapped) if r % 2 == 0 else (wrapped, app)
        a, b = await batch(first), await batch(second)
        bare, on = (a, b) if first is app else (b, a)
        added.append((on - bare) * 1e6)
    print(f"in process, CPU time per call added by the middleware: median "
          f"{statistics.median(added):.0f} us (min {min(added):.0f}, max {max(added):.0f}; "
          f"{rounds} rounds of {requests} calls)")


asyncio.run(main())
'''


OTHER_ADAPTERS = "httpx,requests,urllib,sqlalchemy,sqlite3,threading,subprocess,celery"
INSTRUCTION_ARMS = {  # name: (code run before the server, LEAKPROBE_* settings)
    "no leakprobe": ("pass", {}),
    "every default": ("import leakprobe", {}),
    "no async attribution": (
        "import leakprobe\nfrom leakprobe import _tasks\n_tasks.uninstall()\n"
        "_tasks.install = lambda *args, **kwargs: None", {}),
    "no middleware": ("import leakprobe", {"LEAKPROBE_ADAPTERS": OTHER_ADAPTERS}),
    "no middleware, no heap": ("import leakprobe", {"LEAKPROBE_ADAPTERS": OTHER_ADAPTERS,
                                                    "LEAKPROBE_HEAP": "0"}),
}
CALLGRIND_PERIODS = {"LEAKPROBE_SAMPLE_INTERVAL": "50", "LEAKPROBE_FD_RECONCILE_INTERVAL": "250",
                     "LEAKPROBE_TREND_INTERVAL": "500",
                     "LEAKPROBE_CONTAINER_DISCOVER_INTERVAL": "1500"}


def request_instructions(arm: str, requests: int) -> float:
    """User-space instructions per request of the fastapi-async server."""
    setup, settings = INSTRUCTION_ARMS[arm]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    env.update(LEAKPROBE_PORT="0", LEAKPROBE_LOG_LEVEL="off", PYTHONHASHSEED="0",
               **CALLGRIND_PERIODS, **settings)
    scripts = str(Path(__file__).resolve().parent)
    code = (f"import os, signal, sys\nsys.path.insert(0, {scripts!r})\n{setup}\n"
            "signal.signal(signal.SIGUSR1, lambda signum, frame: os.getppid())\n"
            "import bench\nbench.run_fastapi_server()\n")
    with tempfile.TemporaryDirectory(prefix="leakprobe-bench-asgi-") as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--dump-before=os_getppid",
             f"--callgrind-out-file={out}", sys.executable, "-c", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)

        def dumps() -> list[Path]:
            return sorted(Path(tmp).glob("callgrind.out.*"),
                          key=lambda p: int(p.suffix[1:]))

        def mark() -> None:
            before = len(dumps())
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 120
            while len(dumps()) == before:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"{arm}: no callgrind dump after SIGUSR1")
                time.sleep(0.1)
            time.sleep(0.5)  # the dump file is complete

        try:
            assert proc.stdout is not None
            port = None
            while port is None:
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit(f"{arm}: the server exited: {proc.stderr.read()[-2000:]}")
                if '"port"' in line:
                    port = json.loads(line[line.index("{"):])["port"]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                for i in range(100):
                    client.get(f"/async/{i}").raise_for_status()
                mark()
                for i in range(requests):
                    client.get(f"/async/{100 + i}").raise_for_status()
                mark()
        finally:
            proc.terminate()
            proc.communicate(timeout=600)
        text = dumps()[-1].read_text()
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"{arm}: no total in the callgrind dump")
    return int(found.group(1)) / requests


def instructions(requests: int) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    base = None
    print(f"instructions per request of the fastapi-async server (callgrind, {requests} "
          "requests after 100 untimed ones):")
    for arm in INSTRUCTION_ARMS:
        count = request_instructions(arm, requests)
        base = base or count
        print(f"  {arm:24s} {count:12,.0f}  x{count / base:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per request with callgrind instead")
    args = parser.parse_args()
    if args.instructions:
        instructions(args.requests)
        return
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
        # the adapter off: `app` stays bare, `wrapped` is the only middleware
        env.update(LEAKPROBE_PORT="0", LEAKPROBE_LOG_LEVEL="off", **ARMS["off"])
        in_process = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, tmp, str(args.rounds), str(args.requests)],
            env=env, capture_output=True, text=True, timeout=1800)
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
    print(in_process.stdout.strip() or f"in-process measure failed: {in_process.stderr}")


if __name__ == "__main__":
    main()
