#!/usr/bin/env python3
"""Side-by-side benchmarks: every workload with and without leakprobe.

Why this shape: the machines this runs on are small and shared (two noisy
cores), so absolute times drift from one minute to the next by more than
leakprobe's overhead. So every measurement runs in a fresh subprocess of
``sys.executable``, the two arms (``baseline`` without leakprobe,
``leakprobe`` with ``import leakprobe`` first thing) alternate within one run
(A/B, B/A, A/B, ... so neither arm always goes first), and the result of a row
is the median of the per-pair ratios ``leakprobe / baseline``. Absolute times
are printed for orientation only. A ratio above 1.0 means slower with
leakprobe.

Usage::

    .venv/bin/python scripts/bench.py                 # every row, 7 pairs
    .venv/bin/python scripts/bench.py --quick         # 3 pairs, fewer requests
    .venv/bin/python scripts/bench.py --only exit --repeat 15
    .venv/bin/python scripts/bench.py --markdown      # also a Markdown table
    .venv/bin/python scripts/bench.py --list          # what each row measures
    .venv/bin/python scripts/bench.py --scrape-load   # host loop under a scrape storm

Adding a row: write a function ``measure_<name>(arm, options) -> Sample`` that
runs one measurement in a fresh subprocess for the given arm, and register it
in ``WORKLOADS``. A workload that is plain Python code in the child only needs
a function in ``CHILD_WORKLOADS`` and a ``Workload`` entry using
``measure_in_child`` (timed inside the child) or, for a row timed as a
whole process, an entry in ``PROCESS_UNITS`` and ``measure_process``. Children must not import httpx or other libraries that
leakprobe integrates with unless the workload is about them: leakprobe reacts
when the application imports them, which changes what is measured.

Benchmarks are not tests: this is run by hand (or by a dedicated job), never
from the test suite, and nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

MARKER = "LEAKPROBE-BENCH"
"""Prefix of the one stdout line a child reports its figures on, so that any
other output (a stray log line, a warning) cannot be mistaken for a result."""

BASELINE = "baseline"
PROBE = "leakprobe"
ARMS = (BASELINE, PROBE)

ARM_SETUP = {
    BASELINE: "pass",
    PROBE: "import leakprobe",
}
"""The statement a child runs before anything else, per arm."""

# Port 0: any free port, so runs never collide with each other or with a
# service on this machine. Logging off: the child's output is our protocol.
# The baseline gets the same variables (nothing reads them there): both arms'
# environments are then the same size, which some rows' code depends on
# (httpx.Client() scans every variable for proxy settings, ~14,000
# instructions a variable: two more in one arm cost objects-httpx 3.7 %).
ARM_ENV = {
    BASELINE: {"LEAKPROBE_PORT": "0", "LEAKPROBE_LOG_LEVEL": "off"},
    PROBE: {"LEAKPROBE_PORT": "0", "LEAKPROBE_LOG_LEVEL": "off"},
}

CHILD_TIMEOUT_S = 120.0
SHORT_CHILD_TIMEOUT_S = 30.0
"""For children that do next to nothing (the import and exit rows): a hang
there, say at exit, should cost half a minute, not two."""
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 15.0


class BenchError(Exception):
    """One measurement failed (child crashed, hung or answered wrongly)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """Knobs shared by all workloads, set from the command line."""

    requests: int
    warmup_requests: int


@dataclasses.dataclass(frozen=True)
class Sample:
    """One measurement of one arm.

    ``value`` is the row's metric (lower is better). ``extra`` holds secondary
    figures worth a line under the table, keyed by a human-readable label with
    its unit. ``threads`` is the child's OS thread count, a sanity check that
    the leakprobe arm really profiled (its exporter and sampler threads).
    """

    value: float
    extra: dict[str, float]
    threads: int


@dataclasses.dataclass(frozen=True)
class Workload:
    """One row of the table."""

    unit: str
    what: str
    measure: Callable[[str, Options], Sample]
    both_arms_profile: bool = False
    """Both arms import leakprobe (a row that compares two configurations of
    it): no extra thread is expected in the second arm."""


# --------------------------------------------------------------------------
# Helpers shared by parent and child


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: system-wide on Linux, so stamps taken in a child
    and in the parent can be subtracted from each other."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def os_thread_count() -> int:
    """Threads of this process as the kernel sees them: native threads (the
    exporter) count too, not only those the threading module knows."""
    return len(os.listdir("/proc/self/task"))


def emit(**fields: object) -> None:
    """Report a child's figures to the parent on one marked stdout line."""
    print(MARKER, json.dumps(fields), flush=True)


def parse_marker(line: str) -> dict | None:
    """The payload of a marked line, or None for any other line."""
    if not line.startswith(MARKER + " "):
        return None
    return json.loads(line[len(MARKER) + 1:])


# --------------------------------------------------------------------------
# Parent side: running children


def child_env(arm: str) -> dict[str, str]:
    """The environment for a child of ``arm``.

    Inherited ``LEAKPROBE_*`` variables are dropped from both arms so that a
    ``LEAKPROBE_DISABLE=1`` left in the shell cannot silently turn the
    leakprobe arm into a second baseline.
    """
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("LEAKPROBE_")}
    env.update(ARM_ENV[arm])
    return env


@functools.cache
def child_cwd() -> str:
    """An empty directory for children to run in, so that ``python -c``
    (which puts the current directory first on sys.path) imports the
    installed leakprobe, never a source tree it happens to be started in."""
    path = tempfile.mkdtemp(prefix="leakprobe-bench-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _stderr_tail(err_file, limit: int = 1500) -> str:
    err_file.seek(0)
    text = err_file.read().decode(errors="replace").strip()
    return ("\n    stderr: " + text[-limit:]) if text else ""


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def run_child(argv: list[str], arm: str,
              timeout: float = CHILD_TIMEOUT_S,
              extra_env: dict[str, str] | None = None) -> tuple[dict, int, int]:
    """Run one child to completion.

    Returns its reported payload, the moment just before it was spawned and
    the moment ``wait()`` returned (both ``now_ns()``). A child that hangs,
    crashes or exits non-zero raises BenchError: for leakprobe such a failure
    is itself a finding, so it is reported, not retried. ``extra_env`` is
    added to the arm's environment.
    """
    env = child_env(arm) | (extra_env or {})
    with tempfile.TemporaryFile() as err:
        spawned_ns = now_ns()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=err, env=env, cwd=child_cwd(), text=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(
                f"{arm}: child did not finish within {timeout:.0f} s"
                + _stderr_tail(err)) from None
        exited_ns = now_ns()
        if proc.returncode != 0:
            raise BenchError(
                f"{arm}: child failed ({_describe_exit(proc.returncode)})"
                + _stderr_tail(err))
        payloads = [payload for payload in map(parse_marker, out.splitlines())
                    if payload is not None]
        if len(payloads) != 1:
            raise BenchError(
                f"{arm}: expected one {MARKER} line, got {len(payloads)}"
                + _stderr_tail(err))
    return payloads[0], spawned_ns, exited_ns


def child_script_argv(workload: str, arm: str) -> list[str]:
    """Run this very file in child mode for one workload and arm."""
    return [sys.executable, os.path.abspath(__file__),
            "--child", workload, "--arm", arm]


# --------------------------------------------------------------------------
# Row: import time

IMPORT_SNIPPET = string.Template("""\
import os, time
before_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
$setup
ready_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
import json
print($marker, json.dumps({"before_ns": before_ns, "ready_ns": ready_ns,
                           "threads": len(os.listdir("/proc/self/task"))}),
      flush=True)
""")


def measure_import(arm: str, options: Options) -> Sample:
    """Start-up as a user sees it: from spawning ``python -c 'import
    leakprobe'`` (baseline: ``pass``) until the line after the import runs.

    The row's value is spawn-to-ready time, so the ratio compares against a
    whole interpreter start-up rather than against an empty import (which
    takes ~0 ms and would make any ratio meaningless). The import statement
    alone, timed inside the child, is reported under the table.
    """
    code = IMPORT_SNIPPET.substitute(setup=ARM_SETUP[arm], marker=repr(MARKER))
    payload, spawned_ns, _ = run_child([sys.executable, "-c", code], arm,
                                       timeout=SHORT_CHILD_TIMEOUT_S)
    return Sample(
        value=(payload["ready_ns"] - spawned_ns) / 1e6,
        extra={"import statement in the child (ms)":
               (payload["ready_ns"] - payload["before_ns"]) / 1e6},
        threads=payload["threads"])


# --------------------------------------------------------------------------
# Row: interpreter exit time

EXIT_SETTLE_S = 0.5
"""How long the exit child lets the profiler run before it exits: long enough
for the sampler to have ticked and for the exporter to be serving, as in any
real process. Its sampling phase at exit is then random across runs, which is
what we want: a shutdown that waits for the sampler's next tick shows up."""

EXIT_SNIPPET = string.Template("""\
import json, os, time
$setup
junk = [{"i": i, "s": str(i)} for i in range(100_000)]
del junk
time.sleep($settle)
threads = len(os.listdir("/proc/self/task"))
last_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
print($marker, json.dumps({"threads": threads, "last_ns": last_ns}),
      flush=True)
""")


def measure_exit(arm: str, options: Options) -> Sample:
    """Exit as a process manager sees it: from the child's last line of main
    code to the moment the parent's ``wait()`` returns.

    That span holds atexit handlers, thread shutdown, interpreter
    finalization and the kernel tearing the process down: all of what
    leakprobe adds to stopping a worker (target: at most 50 ms).
    """
    code = EXIT_SNIPPET.substitute(setup=ARM_SETUP[arm], marker=repr(MARKER),
                                   settle=EXIT_SETTLE_S)
    payload, _, exited_ns = run_child([sys.executable, "-c", code], arm,
                                      timeout=SHORT_CHILD_TIMEOUT_S)
    return Sample(value=(exited_ns - payload["last_ns"]) / 1e6, extra={},
                  threads=payload["threads"])


# --------------------------------------------------------------------------
# Rows: pure-Python allocation-heavy work, timed inside the child


class Node:
    """A tree node with a back reference: every tree is a web of reference
    cycles, so dropping it exercises the cyclic GC and mass deallocation as
    well as allocation."""

    def __init__(self, key: int, parent: Node | None) -> None:
        self.key = key
        self.parent = parent
        self.children: list[Node] = []
        self.attrs = {"key": key, "label": f"node-{key}",
                      "weights": [key, key + 1, key + 2]}


def child_object_graphs() -> None:
    """Build and drop object graphs: many small objects, dicts and lists of
    mixed lifetimes, the typical allocation pattern of service code."""
    for _ in range(4):
        nodes = [Node(0, None)]
        for i in range(1, 20_000):
            parent = nodes[i // 4]
            node = Node(i, parent)
            parent.children.append(node)
            nodes.append(node)
        del nodes, node, parent


def json_document() -> dict:
    """A response-sized document: 500 records of nested dicts and lists."""
    return {
        "users": [
            {"id": i, "name": f"user{i}", "email": f"user{i}@example.test",
             "tags": ["alpha", "beta", str(i % 7)], "score": i * 0.5,
             "active": i % 2 == 0,
             "address": {"city": "Springfield", "zip": f"{10000 + i}"}}
            for i in range(500)
        ],
    }


JSON_LOOP = 100
"""Iterations of one unit of the JSON workload: ~0.25 s of work."""


def child_json_roundtrip() -> None:
    """Build a response-sized document of dicts and lists, encode and decode
    it, in a loop: the allocation churn of an API building and serializing
    its payloads."""
    for _ in range(JSON_LOOP):
        document = json_document()
        decoded = json.loads(json.dumps(document))
    if decoded != document:
        raise AssertionError("JSON round trip changed the document")


FD_LOOP = 20_000
"""os.open/os.close pairs in one unit of the fd workload."""
SOCKET_LOOP = 5_000
"""socket()/close() pairs in one unit of the fd workload (~0.1 s in all)."""


def child_fd_open_close() -> None:
    """os.open/os.close of /dev/null, then socket.socket()/close(), in tight
    loops: nothing but the system calls and the fd hooks' creation (with its
    stack capture) and close paths."""
    import socket

    for _ in range(FD_LOOP):
        os.close(os.open(os.devnull, os.O_RDONLY))
    for _ in range(SOCKET_LOOP):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()


HTTP_REQUESTS = 500


def child_http_requests() -> None:
    """Real HTTP over 127.0.0.1, a new connection per request: a server
    thread in this process accepts, answers a small JSON body and closes;
    the client connects, reads and closes. Two fds are made and closed per
    request (the client's socket and the accepted one), amid the
    interpreter work of both sides: the fd hooks' share of real traffic."""
    import http.client
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(HTTP_REQUESTS):
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port)
            conn.request("GET", "/item")
            if conn.getresponse().read() != b'{"ok": true}':
                raise AssertionError("unexpected HTTP response")
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


HTTPX_CLIENTS = 10_000
"""httpx clients made and closed in one unit of the objects-httpx row."""
SQLALCHEMY_SESSIONS = 100_000
"""SQLAlchemy sessions made and closed in one unit of the objects-sqlalchemy row."""


def child_httpx_clients() -> None:
    """Create and close httpx.Client objects, no request: the churn of a
    tracked resource owner (track_type's wrappers on __init__ and close, and
    the registry's create/close with a stack capture). One SSL context is
    shared: httpx loads certifi's bundle into a new one per client (~50 ms
    here), which would hide everything else."""
    import ssl

    import httpx

    context = ssl.create_default_context()
    for _ in range(HTTPX_CLIENTS):
        httpx.Client(verify=context).close()


def child_sqlalchemy_sessions() -> None:
    """Create and close SQLAlchemy ORM sessions against a SQLite file, no
    query: the churn of the most frequently made tracked owner."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{directory}/bench.db")
        for _ in range(SQLALCHEMY_SESSIONS):
            Session(engine).close()
        engine.dispose()


CHILD_WORKLOADS: dict[str, Callable[[], None]] = {
    "alloc-graphs": child_object_graphs,
    "alloc-json": child_json_roundtrip,
    "fd-open-close": child_fd_open_close,
    "fd-http": child_http_requests,
    "objects-httpx": child_httpx_clients,
    "objects-sqlalchemy": child_sqlalchemy_sessions,
}
"""Python code run inside a child, after its arm's setup, by name."""


CHILD_ROUNDS = 3
"""Times a child runs its workload; it reports the median. On a shared
machine a single run now and then takes half as long again for no reason of
its own; the median of three in one process shrugs that off."""


def measure_in_child(name: str, arm: str, options: Options) -> Sample:
    """Time ``CHILD_WORKLOADS[name]`` inside a fresh child (after leakprobe
    is imported, so start-up is not part of the figure)."""
    payload, _, _ = run_child(child_script_argv(name, arm), arm)
    return Sample(value=payload["ms"], extra={}, threads=payload["threads"])


TRACKING_ROWS = {
    "objects-httpx-tracking": "objects-httpx",
    "objects-sqlalchemy-tracking": "objects-sqlalchemy",
}
"""The object-churn rows "with and without tracking": the workload of the
named row, both arms under leakprobe with every default, object tracking
off (``LEAKPROBE_OBJECTS=0``) in the baseline arm."""


def measure_tracking_in_child(name: str, arm: str, options: Options) -> Sample:
    """Time ``TRACKING_ROWS[name]``'s workload in a child under leakprobe,
    with object tracking off (baseline arm) or on: what tracking the owners
    adds to the rest of leakprobe (heap sampling, fd tracking), which the
    plain rows include. Both arms set the variable, so that their
    environments stay the same size (see ARM_ENV)."""
    tracking = {"LEAKPROBE_OBJECTS": "0" if arm == BASELINE else "1"}
    payload, _, _ = run_child(child_script_argv(TRACKING_ROWS[name], PROBE), PROBE,
                              extra_env=tracking)
    return Sample(value=payload["ms"], extra={}, threads=payload["threads"])


PROCESS_UNITS = {
    "alloc-json": 10,
    "fd-open-close": 100,
}
"""Rows timed as whole processes: how many units of the CHILD_WORKLOADS
function one child runs. Sized for >= 2 s of work without leakprobe, so that
start-up and exit (``import leakprobe`` adds ~40 ms) weigh under 2 %: the
figure is what a long-running worker pays."""


def measure_process(name: str, arm: str, options: Options) -> Sample:
    """Time a whole child process, spawn to ``wait()``, that runs
    ``PROCESS_UNITS[name]`` units of ``CHILD_WORKLOADS[name]``. Also reported:
    the loop alone, timed inside the child, and the child's CPU time (user +
    system, from the kernel's accounting of the waited-for child), which
    other processes on a busy machine disturb less than wall time."""
    argv = child_script_argv(name, arm) + ["--units", str(PROCESS_UNITS[name])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    payload, spawned_ns, exited_ns = run_child(argv, arm)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = ((after.ru_utime - before.ru_utime)
             + (after.ru_stime - before.ru_stime))
    return Sample(value=(exited_ns - spawned_ns) / 1e6,
                  extra={"loop in the child (ms)": payload["ms"],
                         "child CPU, user + system (ms)": cpu_s * 1e3},
                  threads=payload["threads"])


def run_child_units(name: str, units: int) -> None:
    """Child mode for PROCESS_UNITS rows: one timed loop of `units` units."""
    started = time.perf_counter()
    for _ in range(units):
        CHILD_WORKLOADS[name]()
    emit(ms=(time.perf_counter() - started) * 1e3, threads=os_thread_count())


def run_child_workload(name: str, rounds: int = CHILD_ROUNDS) -> None:
    """Child mode for CHILD_WORKLOADS: time the workload, report the median
    (``ms``) and the fastest (``ms_min``) of `rounds` runs."""
    times_ms = []
    for _ in range(rounds):
        started = time.perf_counter()
        CHILD_WORKLOADS[name]()
        times_ms.append((time.perf_counter() - started) * 1e3)
    emit(ms=statistics.median(times_ms), ms_min=min(times_ms),
         threads=os_thread_count())


# --------------------------------------------------------------------------
# Rows: FastAPI under uvicorn, driven over HTTP


def run_fastapi_server() -> None:
    """Child mode: serve a trivial FastAPI app on 127.0.0.1, any free port.

    The socket is bound and listening before it is handed to uvicorn, so the
    real port can be reported at once, with no race for a "free" port and
    none with the first connect (the kernel queues it until uvicorn
    accepts). The HTTP implementation and the event loop are pinned (h11,
    asyncio) so the figures do not depend on which optional speed-ups are
    installed.
    """
    import socket

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/async/{item_id}")
    async def read_item_async(item_id: int) -> dict:
        return {"id": item_id, "name": f"item-{item_id}", "tags": ["a", "b"]}

    @app.get("/sync/{item_id}")
    def read_item_sync(item_id: int) -> dict:
        return {"id": item_id, "name": f"item-{item_id}", "tags": ["a", "b"]}

    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted
    # connections only then, and without it every response waits ~40 ms for
    # a delayed ACK (Nagle), which would swamp everything we measure.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    config = uvicorn.Config(app, loop="asyncio", http="h11",
                            log_level="warning", access_log=False)
    emit(port=sock.getsockname()[1], threads=os_thread_count())
    uvicorn.Server(config).run(sockets=[sock])


def _read_marker(proc: subprocess.Popen, timeout: float) -> dict:
    """Wait for a running child's marked line, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                break
            line = proc.stdout.readline()
            if not line:
                raise BenchError(f"server exited before it was ready "
                                 f"({_describe_exit(proc.wait())})")
            payload = parse_marker(line)
            if payload is not None:
                return payload
    raise BenchError(f"server not ready within {timeout:.0f} s")


def _stop_server(proc: subprocess.Popen) -> float:
    """SIGTERM the server, as a process manager would; return ms until it
    exited. A server that will not exit is killed and reported, since a hang
    at shutdown is exactly what leakprobe must never cause."""
    started = now_ns()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError(f"server did not exit within "
                         f"{SERVER_STOP_TIMEOUT_S:.0f} s of SIGTERM") from None
    return (now_ns() - started) / 1e6


def measure_fastapi(route: str, arm: str, options: Options) -> Sample:
    """Sequential keep-alive requests from one httpx client to the server
    child; the value is the mean time per request in microseconds."""
    import httpx  # Parent only: the server child must not import it.

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            child_script_argv("fastapi-server", arm), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err, env=child_env(arm),
            cwd=child_cwd(), text=True)
        try:
            ready = _read_marker(proc, SERVER_START_TIMEOUT_S)
            base_url = f"http://127.0.0.1:{ready['port']}"
            with httpx.Client(base_url=base_url, timeout=10.0) as client:
                for i in range(options.warmup_requests):
                    client.get(f"/{route}/{i}").raise_for_status()
                started = time.perf_counter()
                for i in range(options.requests):
                    client.get(f"/{route}/{i}").raise_for_status()
                elapsed = time.perf_counter() - started
            stop_ms = _stop_server(proc)
        except (BenchError, httpx.HTTPError) as exc:
            raise BenchError(f"{arm}: {exc}" + _stderr_tail(err)) from None
        finally:
            # Whatever went wrong (even Ctrl-C), leave no server behind.
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            raise BenchError(
                f"{arm}: server failed ({_describe_exit(proc.returncode)})"
                + _stderr_tail(err))
    return Sample(
        value=elapsed / options.requests * 1e6,
        extra={"requests/s": options.requests / elapsed,
               "server exit after SIGTERM (ms)": stop_ms},
        threads=ready["threads"])


# --------------------------------------------------------------------------
# Mode --scrape-load: the host's loop with and without a scrape storm

SCRAPE_KEEP_ALIVE = 8
SCRAPE_FRESH = 8
"""Scrapers of the storm: clients that keep their connection (httpx.Client,
back to back) and clients that open a new connection for every scrape."""
SCRAPE_TIMEOUT_S = 10.0
"""Prometheus' default scrape timeout: a scrape slower than this failed."""
HOST_LOOP_ROUNDS = 15000
"""Rounds of the host loop; about 2 s unscraped on the reference machine."""


def child_scrape_host() -> None:
    """Child mode: report the exporter's URL, wait for "go" on stdin, then run
    the host loop (small allocations, files and sockets opened and closed)
    and report how long it took."""
    import socket

    import leakprobe

    import resource

    emit(url=leakprobe.status()["url"], threads=os_thread_count())
    sys.stdin.readline()
    usage_before = resource.getrusage(resource.RUSAGE_THREAD)
    process_before = os.times()
    started = time.perf_counter()
    for _ in range(HOST_LOOP_ROUNDS):
        held = [bytearray(512) for _ in range(200)]
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
        for fd in fds:
            os.close(fd)
        socket.socket().close()
        del held
    elapsed_ms = (time.perf_counter() - started) * 1e3
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    process = os.times()
    emit(ms=elapsed_ms, threads=os_thread_count(),
         # The loop's own thread: CPU it used, and how often it blocked (a
         # lock the scrape holds, say) or was preempted (CPU taken by others).
         loop_cpu_ms=(usage.ru_utime + usage.ru_stime - usage_before.ru_utime
                      - usage_before.ru_stime) * 1e3,
         loop_blocked=usage.ru_nvcsw - usage_before.ru_nvcsw,
         loop_preempted=usage.ru_nivcsw - usage_before.ru_nivcsw,
         # The whole process, the exporter's threads included.
         process_cpu_ms=(process.user + process.system - process_before.user
                         - process_before.system) * 1e3)
    # Serve until the parent has stopped its scrapers: a scrape that finds
    # the server gone would be counted as failed.
    sys.stdin.read()


@dataclasses.dataclass
class ScrapeRun:
    """One run of the host loop: its time, and the scrapes made meanwhile."""

    host_ms: float
    latencies_ms: list[float]
    failures: list[str]
    loop: dict[str, float]
    """The child's other figures: loop_cpu_ms, loop_blocked, ..."""


def pinned_cpus() -> tuple[set[int], set[int]]:
    """--pin: (the host's CPUs, the scrapers' CPU): the last CPU this process
    may use for the scrapers, the others for the host."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError("--pin needs at least 2 CPUs")
    return set(cpus[:-1]), {cpus[-1]}


def measure_scrape_load(scraped: bool, scraper_nice: int = 0,
                        pin: bool = False) -> ScrapeRun:
    """Runs the host loop in a fresh leakprobe child; with ``scraped``, 16
    scrapers in this process scrape its exporter back to back from just
    before the loop starts until it ends. ``scraper_nice`` lowers the
    scraper threads' priority, to tell the exporter's cost to the host from
    the CPU that the clients themselves take on this machine. ``pin`` runs
    the scrapers on one CPU and the host (its exporter threads included) on
    the others, as a load generator runs on its own machine."""
    import threading

    import httpx  # Parent only: the host child must not import it.

    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()
    started = threading.Barrier(SCRAPE_KEEP_ALIVE + SCRAPE_FRESH + 1)

    def scraper(url: str, client: httpx.Client) -> None:
        if scraper_cpus:
            os.sched_setaffinity(threading.get_native_id(), scraper_cpus)
        if scraper_nice:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid,
                           min(os.getpriority(os.PRIO_PROCESS, tid) + scraper_nice, 19))
        with client:
            started.wait()
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    client.get(url).raise_for_status()
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append((time.perf_counter() - began) * 1e3)

    host_cpus, scraper_cpus = pinned_cpus() if pin else (None, None)
    url = ""
    rendered = 1.0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            child_script_argv("scrape-host", PROBE), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err, env=child_env(PROBE),
            cwd=child_cwd(), text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, host_cpus)) if pin else None)
        threads: list[threading.Thread] = []
        try:
            url = _read_marker(proc, SERVER_START_TIMEOUT_S)["url"]
            if scraped:
                timeout = httpx.Timeout(SCRAPE_TIMEOUT_S)
                fresh = httpx.Limits(max_keepalive_connections=0)
                clients = ([httpx.Client(timeout=timeout)
                            for _ in range(SCRAPE_KEEP_ALIVE)]
                           + [httpx.Client(timeout=timeout, limits=fresh)
                              for _ in range(SCRAPE_FRESH)])
                threads = [threading.Thread(target=scraper, args=(url, c))
                           for c in clients]
                for t in threads:
                    t.start()
                started.wait()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            loop = _read_marker(proc, CHILD_TIMEOUT_S)
            host_ms = loop.pop("ms")
        except BenchError as exc:
            raise BenchError(f"scrape-load: {exc}" + _stderr_tail(err)) from None
        finally:
            stop.set()
            for t in threads:
                t.join(2 * SCRAPE_TIMEOUT_S)
            if scraped and url:
                rendered = _rendered_share(url)
            proc.stdin.close()
            try:
                proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise BenchError(f"scrape-load: host child failed "
                             f"({_describe_exit(proc.returncode)})"
                             + _stderr_tail(err))
    if scraped:
        loop["rendered_share"] = rendered
    return ScrapeRun(host_ms, latencies, failures, loop)


def _rendered_share(url: str) -> float:
    """The share of the scrapes served so far that rendered their own page,
    from the exporter's own counters (exposer_scrapes_coalesced_total counts
    those that shared a render; an exporter without it renders every
    scrape). NaN when the exporter cannot be read."""
    import httpx

    values = {}
    try:
        for line in httpx.get(url, timeout=SCRAPE_TIMEOUT_S).text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("exposer_scrapes_total", "exposer_scrapes_coalesced_total"):
                values[name] = float(value)
    except (httpx.HTTPError, ValueError):
        return float("nan")
    total = values.get("exposer_scrapes_total", 0.0)
    if not total:
        return float("nan")
    return (total - values.get("exposer_scrapes_coalesced_total", 0.0)) / total


SCRAPE_HEADER = ("row", "unit", "unscraped", "scraped", "added", "ratio",
                 "ratio IQR", "ratio min-max", "pairs", "scrapes", "failed",
                 "scrape p50 ms", "scrape p99 ms", "scrape max ms",
                 "other CPU")


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of ``values`` (share in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


SCRAPE_NOTES = {
    "loop_cpu_ms": "CPU time of the loop's thread (ms)",
    "loop_blocked": "voluntary context switches of the loop's thread",
    "loop_preempted": "involuntary context switches of the loop's thread",
    "process_cpu_ms": "CPU time of the whole host process during the loop (ms)",
}


def run_scrape_load(repeat: int, warmup: int, scraper_nice: int = 0,
                    pin: bool = False) -> tuple[list[str], list[str], int]:
    """Alternating pairs of the host loop unscraped and scraped; returns the
    table row's cells, lines for under the table, and the number of failed
    measurements and scrapes."""
    pairs: list[tuple[ScrapeRun, ScrapeRun]] = []
    errors = 0
    cpu_before = CpuSnapshot.take()
    for index in range(-warmup, repeat):
        order = (False, True) if index % 2 == 0 else (True, False)
        label = "warm-up" if index < 0 else f"pair {index + 1}/{repeat}"
        try:
            runs = {scraped: measure_scrape_load(scraped, scraper_nice, pin)
                    for scraped in order}
        except BenchError as exc:
            errors += 1
            log(f"scrape-load: {label} failed: {exc}")
            if errors >= MAX_FAILURES_PER_ROW:
                break
            continue
        idle, busy = runs[False], runs[True]
        log(f"scrape-load: {label}: unscraped {fmt(idle.host_ms)}, scraped "
            f"{fmt(busy.host_ms)} ms (ratio {busy.host_ms / idle.host_ms:.3f}); "
            f"{len(busy.latencies_ms)} scrapes, {len(busy.failures)} failed, "
            f"p50 {fmt(percentile(busy.latencies_ms, 0.5))} ms, p99 "
            f"{fmt(percentile(busy.latencies_ms, 0.99))} ms")
        if index >= 0:
            pairs.append((idle, busy))
    others, _ = machine_noise(cpu_before, CpuSnapshot.take())
    if not pairs:
        return ["scrape-load", "ms", "-", "-", "-", "FAILED", "-", "-", "0",
                "-", "-", "-", "-", "-", f"{others:.0%}"], [], errors
    idle_ms = [i.host_ms for i, _ in pairs]
    busy_ms = [b.host_ms for _, b in pairs]
    ratios = [b / i for i, b in zip(idle_ms, busy_ms)]
    latencies = [ms for _, b in pairs for ms in b.latencies_ms]
    failed = sum(len(b.failures) for _, b in pairs)
    for _, b in pairs:
        for failure in sorted(set(b.failures)):
            log(f"scrape-load: failed scrape: {failure}")
    q1, q3 = quartiles(ratios)
    added = statistics.median(b - i for i, b in zip(idle_ms, busy_ms))
    lines = [f"{label}: unscraped "
             f"{fmt(statistics.median(i.loop[key] for i, _ in pairs))}, scraped "
             f"{fmt(statistics.median(b.loop[key] for _, b in pairs))}"
             for key, label in SCRAPE_NOTES.items()]
    per_second = statistics.median(len(b.latencies_ms) / b.host_ms * 1e3
                                   for _, b in pairs)
    lines.append("scrapes per second during the scraped loop: " + fmt(per_second))
    share = statistics.median(b.loop.get("rendered_share", float("nan"))
                              for _, b in pairs)
    lines.append(f"scrapes that rendered their own page: {share:.1%} (the others "
                 "shared a render under way); renders per second: "
                 + fmt(per_second * share))
    def beyond_loop(run: ScrapeRun) -> float:
        return run.loop["process_cpu_ms"] - run.loop["loop_cpu_ms"]

    per_scrape = statistics.median((beyond_loop(b) - beyond_loop(i))
                                   / max(1, len(b.latencies_ms)) for i, b in pairs)
    lines.append("exporter CPU per scrape (the host process's CPU beyond its "
                 "loop thread's, scraped minus unscraped, over the scrapes): "
                 f"{per_scrape:.3f} ms")
    return ["scrape-load", "ms", fmt(statistics.median(idle_ms)),
            fmt(statistics.median(busy_ms)),
            ("+" if added >= 0 else "") + fmt(added),
            f"{statistics.median(ratios):.3f}", f"{q1:.3f}-{q3:.3f}",
            f"{min(ratios):.3f}-{max(ratios):.3f}", str(len(pairs)),
            str(len(latencies) + failed), str(failed),
            fmt(percentile(latencies, 0.5)), fmt(percentile(latencies, 0.99)),
            fmt(max(latencies)), f"{others:.0%}"], lines, errors + failed


# --------------------------------------------------------------------------
# The registry: one entry per row, in table order

WORKLOADS: dict[str, Workload] = {
    "import": Workload(
        unit="ms",
        what="spawn of `python -c 'import leakprobe'` until the next line "
             "runs (baseline: `python -c 'pass'`)",
        measure=measure_import),
    "exit": Workload(
        unit="ms",
        what="last line of main code until the parent's wait() returns "
             f"(after {EXIT_SETTLE_S} s of profiling)",
        measure=measure_exit),
    "alloc-graphs": Workload(
        unit="ms",
        what="build and drop 4 trees of 20,000 cyclic objects with "
             f"dicts/lists (median of {CHILD_ROUNDS} rounds in the child)",
        measure=functools.partial(measure_in_child, "alloc-graphs")),
    "alloc-json": Workload(
        unit="ms",
        what=f"whole process: {PROCESS_UNITS['alloc-json'] * JSON_LOOP:,} "
             "times build a 500-record document of dicts, json.dumps it and "
             "json.loads it back",
        measure=functools.partial(measure_process, "alloc-json")),
    "fd-open-close": Workload(
        unit="ms",
        what=f"whole process: {PROCESS_UNITS['fd-open-close'] * FD_LOOP:,} "
             "os.open/os.close of /dev/null, then "
             f"{PROCESS_UNITS['fd-open-close'] * SOCKET_LOOP:,} "
             "socket.socket()/close()",
        measure=functools.partial(measure_process, "fd-open-close")),
    "fd-http": Workload(
        unit="ms",
        what=f"{HTTP_REQUESTS} HTTP requests over 127.0.0.1 to a server "
             "thread in the child, a new connection each "
             f"(median of {CHILD_ROUNDS} rounds in the child)",
        measure=functools.partial(measure_in_child, "fd-http")),
    "objects-httpx": Workload(
        unit="ms",
        what=f"create and close {HTTPX_CLIENTS:,} httpx.Client (one shared SSL "
             f"context, no request; median of {CHILD_ROUNDS} rounds in the child)",
        measure=functools.partial(measure_in_child, "objects-httpx")),
    "objects-sqlalchemy": Workload(
        unit="ms",
        what=f"create and close {SQLALCHEMY_SESSIONS:,} SQLAlchemy ORM sessions on a "
             f"SQLite file engine, no query (median of {CHILD_ROUNDS} rounds in the child)",
        measure=functools.partial(measure_in_child, "objects-sqlalchemy")),
    "objects-httpx-tracking": Workload(
        unit="ms",
        what="objects-httpx with and without object tracking: both arms under "
             "leakprobe's defaults, LEAKPROBE_OBJECTS=0 in the baseline arm",
        measure=functools.partial(measure_tracking_in_child, "objects-httpx-tracking"),
        both_arms_profile=True),
    "objects-sqlalchemy-tracking": Workload(
        unit="ms",
        what="objects-sqlalchemy with and without object tracking: both arms "
             "under leakprobe's defaults, LEAKPROBE_OBJECTS=0 in the baseline arm",
        measure=functools.partial(measure_tracking_in_child,
                                  "objects-sqlalchemy-tracking"),
        both_arms_profile=True),
    "fastapi-async": Workload(
        unit="us/req",
        what="uvicorn + FastAPI `async def` endpoint, sequential keep-alive "
             "requests from httpx",
        measure=functools.partial(measure_fastapi, "async")),
    "fastapi-sync": Workload(
        unit="us/req",
        what="as fastapi-async, but a plain `def` endpoint (runs in the "
             "threadpool)",
        measure=functools.partial(measure_fastapi, "sync")),
}


# --------------------------------------------------------------------------
# Running rows and summarizing


@dataclasses.dataclass
class RowResult:
    """All pairs measured for one row, and the errors of those that failed."""

    name: str
    pairs: list[tuple[Sample, Sample]] = dataclasses.field(
        default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    others: float = 0.0
    """Share of the CPUs that other processes used while this row ran."""


MAX_FAILURES_PER_ROW = 2
"""A row that fails twice is broken, not noisy: stop it rather than wait
for more timeouts (a hang at exit would otherwise cost minutes per pair)."""


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_row(name: str, repeat: int, warmup: int,
            options: Options) -> RowResult:
    """Measure ``repeat`` baseline/leakprobe pairs, alternating which arm goes
    first, after ``warmup`` pairs that are thrown away (they absorb cold
    file caches and .pyc compilation)."""
    workload = WORKLOADS[name]
    result = RowResult(name)
    cpu_before = CpuSnapshot.take()
    for index in range(-warmup, repeat):
        order = ARMS if index % 2 == 0 else ARMS[::-1]
        label = "warm-up" if index < 0 else f"pair {index + 1}/{repeat}"
        samples: dict[str, Sample] = {}
        try:
            for arm in order:
                samples[arm] = workload.measure(arm, options)
        except BenchError as exc:
            result.errors.append(str(exc))
            log(f"{name}: {label} failed: {exc}")
            if len(result.errors) >= MAX_FAILURES_PER_ROW:
                log(f"{name}: giving up on this row after "
                    f"{len(result.errors)} failures")
                break
            continue
        base, probe = samples[BASELINE], samples[PROBE]
        log(f"{name}: {label}: baseline {fmt(base.value)}, leakprobe "
            f"{fmt(probe.value)} {workload.unit} "
            f"(ratio {probe.value / base.value:.3f})")
        if index >= 0:
            result.pairs.append((base, probe))
    result.others, _ = machine_noise(cpu_before, CpuSnapshot.take())
    return result


@dataclasses.dataclass(frozen=True)
class Summary:
    """The figures of one table row."""

    name: str
    unit: str
    n: int
    baseline: float
    probe: float
    added: float
    ratio: float
    ratio_q1: float
    ratio_q3: float
    ratio_min: float
    ratio_max: float
    others: float


def quartiles(values: list[float]) -> tuple[float, float]:
    """First and third quartile (inclusive method: stays within the data)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def summarize(row: RowResult) -> Summary | None:
    """Medians of each arm, the median paired difference (``added``) and the
    median and spread of the per-pair ratios; None if no pair succeeded."""
    if not row.pairs:
        return None
    base = [b.value for b, _ in row.pairs]
    probe = [p.value for _, p in row.pairs]
    ratios = [p / b for b, p in zip(base, probe)]
    q1, q3 = quartiles(ratios)
    return Summary(
        name=row.name, unit=WORKLOADS[row.name].unit, n=len(row.pairs),
        baseline=statistics.median(base), probe=statistics.median(probe),
        added=statistics.median(p - b for b, p in zip(base, probe)),
        ratio=statistics.median(ratios), ratio_q1=q1, ratio_q3=q3,
        ratio_min=min(ratios), ratio_max=max(ratios), others=row.others)


def notes(row: RowResult) -> list[str]:
    """Lines for under the table: secondary figures and sanity checks."""
    if not row.pairs:
        return []
    lines = []
    for key in row.pairs[0][0].extra:
        base = statistics.median(b.extra[key] for b, _ in row.pairs)
        probe = statistics.median(p.extra[key] for _, p in row.pairs)
        ratios = [p.extra[key] / b.extra[key] for b, p in row.pairs
                  if b.extra[key] > 0]
        paired = ""
        if ratios:
            q1, q3 = quartiles(ratios)
            paired = (f" (ratio {statistics.median(ratios):.3f}, "
                      f"IQR {q1:.3f}-{q3:.3f})")
        lines.append(f"{row.name}: {key}: baseline {fmt(base)}, "
                     f"leakprobe {fmt(probe)}{paired}")
    base_threads = statistics.median(b.threads for b, _ in row.pairs)
    probe_threads = statistics.median(p.threads for _, p in row.pairs)
    if probe_threads <= base_threads and not WORKLOADS[row.name].both_arms_profile:
        lines.append(f"{row.name}: WARNING: the leakprobe arm ran no extra "
                     f"thread ({base_threads:g} vs {probe_threads:g}); was "
                     "it really profiling?")
    return lines


def fmt(value: float) -> str:
    """Three or four significant figures, without exponent notation."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


HEADER = ("row", "unit", "baseline", "leakprobe", "added", "ratio",
          "ratio IQR", "ratio min-max", "pairs", "other CPU")


def table_cells(summary: Summary) -> tuple[str, ...]:
    return (summary.name, summary.unit,
            fmt(summary.baseline), fmt(summary.probe),
            ("+" if summary.added >= 0 else "") + fmt(summary.added),
            f"{summary.ratio:.3f}",
            f"{summary.ratio_q1:.3f}-{summary.ratio_q3:.3f}",
            f"{summary.ratio_min:.3f}-{summary.ratio_max:.3f}",
            str(summary.n), f"{summary.others:.0%}")


def failed_cells(row: RowResult) -> tuple[str, ...]:
    """A row none of whose pairs succeeded: it stays in the table, marked."""
    cells = [row.name, WORKLOADS[row.name].unit] + ["-"] * (len(HEADER) - 2)
    cells[HEADER.index("ratio")] = "FAILED"
    cells[HEADER.index("pairs")] = "0"
    cells[HEADER.index("other CPU")] = f"{row.others:.0%}"
    return tuple(cells)


def render_text(rows: list[tuple[str, ...]],
                header: tuple[str, ...] = HEADER) -> str:
    """A plain table, left-aligned names, right-aligned figures."""
    widths = [max(len(row[i]) for row in [header, *rows])
              for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(tuple("-" * w for w in widths)),
                      *map(line, rows)])


def render_markdown(rows: list[tuple[str, ...]],
                    header: tuple[str, ...] = HEADER) -> str:
    align = ["---", "---"] + ["---:"] * (len(header) - 2)
    return "\n".join("| " + " | ".join(cells) + " |"
                     for cells in [header, tuple(align), *rows])


def machine_description() -> str:
    """What the numbers were measured on, printed with every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        version = importlib.metadata.version("leakprobe")
    except importlib.metadata.PackageNotFoundError:
        version = "(no package metadata)"
    # Versions do not change with every build; the install time tells which
    # build of a working tree was measured.
    spec = importlib.util.find_spec("leakprobe")
    if spec is not None and spec.origin:
        installed = time.gmtime(os.path.getmtime(spec.origin))
        version += time.strftime(" installed %Y-%m-%d %H:%M UTC", installed)
    return (f"CPython {platform.python_version()} ({sys.executable}); "
            f"{platform.system()} {platform.release()} {platform.machine()}; "
            f"{os.cpu_count()} CPUs ({cpu}); leakprobe {version}")


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide and own CPU time at one moment.

    Two of them tell how much of the machine other processes took while we
    measured (and, on a VM, how much the hypervisor stole): the honest
    caveat to print with figures from a shared machine. Load average cannot
    tell this, since it counts our own children as load too.
    """

    wall_s: float
    busy_s: float   # every process: user + nice + system + irq + softirq
    steal_s: float
    own_s: float    # this process and the children it has waited for

    @classmethod
    def take(cls) -> CpuSnapshot:
        with open("/proc/stat") as f:
            ticks = [int(field) for field in f.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
        hz = os.sysconf("SC_CLK_TCK")
        own = os.times()
        return cls(wall_s=time.monotonic(),
                   busy_s=(user + nice + system + irq + softirq) / hz,
                   steal_s=steal / hz,
                   own_s=(own.user + own.system + own.children_user
                          + own.children_system))


def machine_noise(before: CpuSnapshot,
                  after: CpuSnapshot) -> tuple[float, float]:
    """Shares of the machine's CPU capacity between two snapshots taken by
    other processes and by hypervisor steal."""
    capacity = (after.wall_s - before.wall_s) * (os.cpu_count() or 1)
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    steal = after.steal_s - before.steal_s
    return max(others, 0.0) / capacity, steal / capacity


NOISE_WARN_SHARE = 0.10
"""Above this share of the CPUs taken by others, the run gets a warning."""


# --------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark workloads with and without leakprobe, side by "
                    "side; ratios > 1.0 mean slower with leakprobe.")
    parser.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="baseline/leakprobe pairs per row (default 7, "
                             "3 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N",
                        help="pairs run first and thrown away (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer pairs and HTTP requests: a smoke run, "
                             "not figures for the docs")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only these rows (repeatable, or "
                             "comma-separated); see --list")
    parser.add_argument("--requests", type=int, default=None, metavar="N",
                        help="timed HTTP requests per FastAPI run "
                             "(default 2000, 500 with --quick)")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the table as Markdown")
    parser.add_argument("--list", action="store_true",
                        help="list the rows and what each measures, then exit")
    parser.add_argument("--scrape-load", action="store_true",
                        help="instead of the rows: the host loop (allocations, "
                             "files, sockets) with leakprobe, unscraped vs "
                             f"under {SCRAPE_KEEP_ALIVE + SCRAPE_FRESH} "
                             "back-to-back scrapers, and the scrape latency")
    parser.add_argument("--scraper-nice", type=int, default=0, metavar="N",
                        help="with --scrape-load: run the scraper threads N "
                             "nice levels lower, so that the clients' own CPU "
                             "(on the same machine) takes less from the host "
                             "(default 0)")
    parser.add_argument("--pin", action="store_true",
                        help="with --scrape-load: run the scrapers on the last "
                             "CPU and the host process on the others, so that "
                             "the clients' own CPU is not taken from the host")
    # Child mode, used by this script on itself.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--units", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    if args.requests is None:
        args.requests = 500 if args.quick else 2000
    if args.repeat < 1 or args.warmup < 0 or args.requests < 1:
        parser.error("--repeat and --requests must be >= 1, --warmup >= 0")
    names = [n for group in args.only or [] for n in group.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; "
                     f"known: {', '.join(WORKLOADS)}")
    args.only = names or list(WORKLOADS)
    return args


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a child: the arm's setup first, then the workload."""
    # The very statement the ``python -c`` children run, so that an arm is
    # defined in one place (ARM_SETUP) for every row.
    exec(ARM_SETUP[args.arm], {})
    if args.child == "fastapi-server":
        run_fastapi_server()
    elif args.child == "scrape-host":
        child_scrape_host()
    elif args.units is not None:
        run_child_units(args.child, args.units)
    else:
        run_child_workload(args.child)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.list:
        for name, workload in WORKLOADS.items():
            print(f"{name:14} [{workload.unit}] {workload.what}")
        return 0
    if importlib.util.find_spec("leakprobe") is None:
        print(f"leakprobe is not importable by {sys.executable}; install it "
              "first (scripts/setup.sh)", file=sys.stderr)
        return 2

    if args.scrape_load:
        return scrape_load_main(args)

    options = Options(requests=args.requests,
                      warmup_requests=min(200, args.requests))
    cpu_before = CpuSnapshot.take()
    results = [run_row(name, args.repeat, args.warmup, options)
               for name in args.only]
    others, steal = machine_noise(cpu_before, CpuSnapshot.take())

    rows = [table_cells(summary) if summary else failed_cells(row)
            for row, summary in zip(results, map(summarize, results))]
    extra_lines = [line for r in results for line in notes(r)]
    # The same failure in every pair is one finding: print it once, counted.
    failures = collections.Counter(
        (row.name, error) for row in results for error in row.errors)
    context = [
        f"machine: {machine_description()}",
        f"{args.repeat} pairs per row after {args.warmup} warm-up pair(s), "
        "arm order alternating; baseline/leakprobe: medians; added: median "
        "paired difference; ratio: median of per-pair leakprobe/baseline "
        "(> 1.0 = slower with leakprobe); other CPU: share of the CPUs that "
        "other processes used while the row ran",
        f"during the run, other processes used {others:.0%} of the "
        f"{os.cpu_count()} CPUs and hypervisor steal took {steal:.0%}",
    ]
    if max(others, steal) > NOISE_WARN_SHARE:
        context.append("WARNING: the machine was busy with other work, so "
                       "even the ratios are noisier than usual")
    if any(name.startswith("fastapi") for name in args.only):
        context.append(f"FastAPI rows: {args.requests} timed requests per run "
                       f"after {options.warmup_requests} warm-up requests")

    print("\n".join(context))
    print()
    print(render_text(rows))
    for line in extra_lines:
        print(f"  {line}")
    for (name, error), count in failures.items():
        print(f"  {name}: FAILED ({count}x): {error}")
    if args.markdown:
        print()
        print(render_markdown(rows))
        print()
        for line in context + extra_lines:
            print(f"- {line}")
        for (name, error), count in failures.items():
            print(f"- {name}: FAILED ({count}x): {error.splitlines()[0]}")
    return 1 if failures else 0


def scrape_load_main(args: argparse.Namespace) -> int:
    """--scrape-load: one table row, printed as text (and Markdown)."""
    cpu_before = CpuSnapshot.take()
    cells, lines, failures = run_scrape_load(args.repeat, args.warmup,
                                             args.scraper_nice, args.pin)
    others, steal = machine_noise(cpu_before, CpuSnapshot.take())
    context = [
        f"machine: {machine_description()}",
        f"{args.repeat} pairs after {args.warmup} warm-up pair(s), order "
        f"alternating; both arms import leakprobe; {HOST_LOOP_ROUNDS} rounds "
        "of the host loop (200 x 512-byte allocations, 20 os.open/os.close, "
        "one socket per round); scraped: "
        f"{SCRAPE_KEEP_ALIVE} keep-alive httpx clients and {SCRAPE_FRESH} "
        "opening a new connection per scrape, back to back for the whole "
        f"loop, {SCRAPE_TIMEOUT_S:.0f} s timeout, scraper threads at nice "
        f"+{args.scraper_nice}"
        + ("; scrapers pinned to the last CPU, the host process to the others"
           if args.pin else "")
        + "; ratio: median of per-pair "
        "scraped/unscraped; scrape latencies pooled over the scraped runs",
        f"during the run, other processes used {others:.0%} of the "
        f"{os.cpu_count()} CPUs and hypervisor steal took {steal:.0%}",
    ]
    print("\n".join(context))
    print()
    print(render_text([tuple(cells)], SCRAPE_HEADER))
    for line in lines:
        print(f"  {line}")
    if args.markdown:
        print()
        print(render_markdown([tuple(cells)], SCRAPE_HEADER))
        print()
        for line in context + lines:
            print(f"- {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
