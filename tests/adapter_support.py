"""Real servers and child programs for the adapter tests (tests/test_adapters*.py).

- ``HttpServer``: an HTTP/1.1 keep-alive server on 127.0.0.1 in a child
  process (the stand-in of the seed's AI provider), so that an unclosed
  client really holds a pooled socket;
- ``PostgresServer``: Debian's PostgreSQL, a throwaway cluster on loopback
  (initdb as the ``postgres`` user, since initdb refuses root), stopped
  after the tests;
- ``run_child``: a fresh interpreter with leakprobe imported (adapters on,
  unless told otherwise) runs a test body that prints one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from conftest import child_env

HTTP_SERVER = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a pooled connection stays open
        # Headers and body are two writes: without TCP_NODELAY the body waits
        # for the client's delayed ACK, about 40 ms a request.
        disable_nagle_algorithm = True

        def _reply(self, status, payload, head=False):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/missing"):
                self._reply(404, {"error": "no such thing"})
            else:
                self._reply(200, {"path": self.path, "ok": True})

        def do_HEAD(self):
            self._reply(200, {"ok": True}, head=True)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            text = json.loads(self.rfile.read(length) or b"{}").get("text", "")
            self._reply(200, {"summary": text[:32]})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


class HttpServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HTTP_SERVER], stdout=subprocess.PIPE,
                                     text=True, env=child_env())
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert versions, "PostgreSQL is required (Debian: postgresql, see scripts/setup.sh)"
    return versions[-1].parent


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, listening on
    127.0.0.1 only (and a socket in that directory), trust authentication."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="leakprobe-pg-"))
        self.port = _free_port()
        self._as_postgres = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off", "start")
        self.data = data
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as_postgres, str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=120, cwd=self.dir)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


PRELUDE = textwrap.dedent(
    """
    import gc, json, sys
    import leakprobe
    from leakprobe import adapters

    def counts(name):
        # live, created, closed and collected-while-open of one tracked type
        return leakprobe_counts(name)

    def pools(library, pool="all"):
        # {state: connections} of one pool label (an engine's URL for sqlalchemy)
        return {state: n for lib, label, state, n in adapters.pool_connections()
                if lib == library and label == pool}

    def emit(**values):
        print("RESULT " + json.dumps(values, sort_keys=True), flush=True)
    """
)

# How a child reads one tracked type's figures: leakprobe.objects().
COUNTS = textwrap.dedent(
    """
    def leakprobe_type(name):
        import leakprobe
        for stats in leakprobe.objects():
            if stats.name == name:
                return stats
        return None

    def leakprobe_counts(name):
        stats = leakprobe_type(name)
        if stats is None:
            return dict(live=0, created=0, closed=0, collected_while_open=0)
        return dict(live=stats.live, created=stats.created, closed=stats.closed,
                    collected_while_open=stats.collected_while_open)

    def sites(name):
        # {"path:line in function": live objects} of one tracked type
        stats = leakprobe_type(name)
        return {} if stats is None else {stat.site_name: stat.count for stat in stats.sites}
    """
)


def run_child(body: str, timeout: float = 120, first: str = "", **env: str) -> dict:
    """Runs PRELUDE + body in a fresh interpreter (`first` before the
    prelude's ``import leakprobe``); returns the JSON it emitted
    (``emit(...)``), with ``__stderr__``. Fails on a non-zero exit."""
    code = first + "\n" + COUNTS + PRELUDE + textwrap.dedent(body)
    env.setdefault("LEAKPROBE_LOG_LEVEL", "warning")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(**env),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert results, f"child emitted nothing:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(results[-1])
    result["__stderr__"] = proc.stderr
    return result


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def line_of(body: str, marker: str) -> int:
    """The line number, in the child's program, of the line of `body` that
    holds `marker` (for attribution sites ``<string>:LINE``)."""
    code = "\n" + COUNTS + PRELUDE + textwrap.dedent(body)
    for number, line in enumerate(code.splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in the body")
