"""The ASGI integration against real parts: FastAPI and Starlette apps
served by uvicorn (a real process on 127.0.0.1), driven by an httpx
client, talking to a real local upstream HTTP server; the app's one scrape
target and, under LEAKPROBE_RUN_DIR, its run file (docs/multiprocess.md,
"FastAPI, Starlette and other ASGI apps")."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter_support import HttpServer, run_child
from conftest import child_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upstream():
    server = HttpServer()
    yield server.url
    server.stop()


# A FastAPI app; `import leakprobe` in its start-up is all the set-up there
# is (no middleware added by hand). The lines marked *_LINE matter to the
# tests. Endpoints are `async def` so that no run starts a threadpool
# thread (a live threading.Thread is a tracked object).
FASTAPI_APP = '''\
import asyncio
import os
from contextlib import asynccontextmanager

import leakprobe
import httpx
import sqlalchemy
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

UPSTREAM = os.environ["UPSTREAM_URL"]
_CLIENTS = []
_ENGINES = []


@asynccontextmanager
async def lifespan(app):
    _ENGINES.append(sqlalchemy.create_engine("sqlite://"))  # ENGINE_LINE
    yield  # the engine is never disposed


app = FastAPI(lifespan=lifespan)


@app.get("/leak/{n}")
async def leak(n: int):
    client = httpx.Client()  # CLIENT_LINE: never closed, one socket per run stays open
    client.get(UPSTREAM)
    _CLIENTS.append(client)
    return {"n": n}


@app.get("/clean/{n}")
async def clean(n: int):
    with httpx.Client() as client:
        client.get(UPSTREAM)
    return {"n": n}


@app.get("/items/{item_id}")
async def item(item_id: str):
    return {"item": item_id}


@app.get("/boom")
async def boom():
    raise RuntimeError("boom")


@app.get("/stream")
async def stream():
    async def chunks():
        for _ in range(10000):
            yield b"x" * 4096
            await asyncio.sleep(0.005)
    return StreamingResponse(chunks())
'''

# A plain Starlette app (no FastAPI): routes in a Mount, and the middleware
# also added by hand (it must still count each request once).
STARLETTE_APP = '''\
import os

import leakprobe
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from leakprobe.integrations.asgi import LeakprobeMiddleware

UPSTREAM = os.environ["UPSTREAM_URL"]
_CLIENTS = []


async def leak(request):
    client = httpx.Client()  # never closed
    client.get(UPSTREAM)
    _CLIENTS.append(client)
    return JSONResponse({"user": request.path_params["name"]})


async def clean(request):
    with httpx.Client() as client:
        client.get(UPSTREAM)
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[Mount("/api", routes=[Route("/users/{name}", leak),
                                  Route("/health", clean)])],
    middleware=[Middleware(LeakprobeMiddleware)],
)
'''


def line_of(source: str, marker: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), start=1) if marker in line)


class Uvicorn:
    """`python -m uvicorn app:app` on 127.0.0.1 with leakprobe's port fixed."""

    def __init__(self, tmp_path: Path, source: str, upstream: str, **env: str):
        self.dir = tmp_path / f"app{free_port()}"
        self.dir.mkdir()
        (self.dir / "app.py").write_text(source)
        self.app_path = str(self.dir / "app.py")
        self.port = free_port()
        self.metrics_port = free_port()
        self.err_path = self.dir / "stderr"
        self.err = open(self.err_path, "w")
        env.setdefault("LEAKPROBE_LOG_LEVEL", "warning")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(self.dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
             "--log-level", "warning", "--lifespan", "on"],
            stdout=subprocess.DEVNULL, stderr=self.err,
            env=child_env(LEAKPROBE_PORT=str(self.metrics_port), UPSTREAM_URL=upstream, **env))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.err_path.read_text()
            try:  # a connection, not a request: a request would be a run
                httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2)
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                break
            except (httpx.HTTPError, OSError):
                assert time.monotonic() < deadline, self.err_path.read_text()
                time.sleep(0.1)
        self.stderr = ""

    def text(self) -> str:
        response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def samples(self) -> list:
        return [s for f in text_string_to_metric_families(self.text()) for s in f.samples]

    def work(self, sample: str) -> dict[str, float]:
        """name -> value of one leakprobe_work_* sample of kind route."""
        return {s.labels["name"]: s.value for s in self.samples()
                if s.name == sample and s.labels.get("kind") == "route"}

    def wait_runs(self, expected: dict[str, int], deadline: float = 30) -> dict[str, float]:
        end = time.monotonic() + deadline
        while True:
            runs = self.work("leakprobe_work_runs_total")
            if all(runs.get(name) == count for name, count in expected.items()):
                return runs
            assert time.monotonic() < end, (runs, expected)
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("uvicorn did not stop within 30 s: " + self.err_path.read_text())
        finally:
            self.err.close()
        self.stderr = self.err_path.read_text()
        return self.stderr


@pytest.fixture
def uvicorn(tmp_path, upstream):
    servers: list[Uvicorn] = []

    def make(source: str, **env: str) -> Uvicorn:
        server = Uvicorn(tmp_path, source, upstream, **env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        server.err.close()


def test_fastapi_routes_are_measured_by_template_and_the_leaking_one_is_flagged(
        uvicorn, tmp_path):
    runs = 30
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    server = uvicorn(FASTAPI_APP, LEAKPROBE_TREND_INTERVAL="0.2", LEAKPROBE_TREND_WARMUP="1",
                     LEAKPROBE_RUN_DIR=str(run_dir))
    with httpx.Client(base_url=server.url, timeout=10) as client:  # one kept-alive connection
        # 1,000 distinct raw paths: 500 of one template, 500 matching no route
        for i in range(500):
            assert client.get(f"/items/item-{i}").status_code == 200
            assert client.get(f"/no/such/path/{i}").status_code == 404
        # Last, so that the leak still grows when the verdict is read.
        for i in range(runs):  # paced: the trend engine needs a window of >= 10 s
            assert client.get(f"/leak/{i}").json() == {"n": i}
            assert client.get(f"/clean/{i}").json() == {"n": i}
            time.sleep(0.35)
    expected = {"GET /leak/{n}": runs, "GET /clean/{n}": runs, "GET /items/{item_id}": 500,
                "<unmatched>": 500}
    server.wait_runs(expected)
    text = server.text()
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Names are templates, never raw paths; the last path requested is in no label.
    assert set(server.work("leakprobe_work_runs_total")) == set(expected)
    assert "/items/item-" not in text and "/no/such/path" not in text and "/leak/3" not in text
    fds = server.work("leakprobe_work_retained_fds")
    objects = server.work("leakprobe_work_retained_objects")
    # One socket per leaking run (the process's net change, as for Celery
    # tasks: never above runs), none for the twin.
    assert runs - 2 <= fds["GET /leak/{n}"] <= runs, fds
    assert -2 <= fds["GET /clean/{n}"] <= 0, fds
    assert objects["GET /leak/{n}"] == runs, objects  # one httpx.Client per run
    assert objects["GET /clean/{n}"] == 0, objects
    assert fds["GET /items/{item_id}"] <= 0 and fds["<unmatched>"] <= 0, fds
    # The verdicts: the leaking route's work series is suspected, its twin's not.
    suspected = {(s.labels["resource"], s.labels["key"]): s.value for s in server.samples()
                 if s.name == "leakprobe_leak_suspected"}
    assert suspected[("work", "route:GET /leak/{n}:fds")] == 1.0, suspected
    assert suspected[("work", "route:GET /leak/{n}:objects")] == 1.0, suspected
    assert suspected[("work", "route:GET /clean/{n}:fds")] == 0.0, suspected

    stderr = server.stop(signal.SIGTERM)
    assert "Traceback" not in stderr, stderr
    client_site = f"{server.app_path}:{line_of(FASTAPI_APP, 'CLIENT_LINE')} in leak"
    engine_site = f"{server.app_path}:{line_of(FASTAPI_APP, 'ENGINE_LINE')} in lifespan"
    # The leaking route's series is flagged, and the client's site is where
    # the objects it leaves are made (a work verdict itself names no site:
    # docs/trends.md).
    document = json.loads((run_dir / f"{server.proc.pid}.json").read_text())
    series = {(s["resource"], s["key"]): s for s in document["series"]}
    assert series[("work", "route:GET /leak/{n}:fds")]["suspected"] is True
    clients = series[("object", "httpx.Client")]
    assert clients["suspected"] is True and clients["site"] == client_site, clients
    # Lifespan shutdown (uvicorn stopped by SIGTERM): what the app still holds.
    lines = [x for x in stderr.splitlines() if "asgi lifespan shutdown" in x]
    assert f"{runs} httpx.Client never closed, created at {client_site}" in "\n".join(lines), stderr
    assert f"1 sqlalchemy.Engine never disposed, created at {engine_site}" in "\n".join(lines), \
        stderr
    assert len(lines) == 2, lines
    assert {"type": "httpx.Client", "site": client_site, "count": runs} in document["unreleased"]
    assert {"type": "sqlalchemy.Engine", "site": engine_site, "count": 1} in document["unreleased"]


def test_a_run_ends_when_the_app_raises_and_when_the_client_disconnects_mid_stream(uvicorn):
    server = uvicorn(FASTAPI_APP)
    for _ in range(3):  # uvicorn closes a connection whose app raised: one each
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/boom").status_code == 500
    # A streaming response (10,000 chunks, ~50 s) whose client goes away
    # after the first chunks: the run ends when the app notices.
    for _ in range(2):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            with client.stream("GET", "/stream") as response:
                assert response.status_code == 200
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received >= 16384:
                        break
    runs = server.wait_runs({"GET /boom": 3, "GET /stream": 2}, deadline=20)
    assert set(runs) == {"GET /boom", "GET /stream"}, runs
    stderr = server.stop(signal.SIGINT)
    assert "RuntimeError: boom" in stderr  # uvicorn's own log of the app's exception
    lines = [x for x in stderr.splitlines() if "asgi lifespan shutdown" in x]
    assert any("1 sqlalchemy.Engine never disposed" in x for x in lines), stderr


def test_a_plain_starlette_app_with_mounts_and_the_middleware_added_by_hand(uvicorn):
    runs = 20
    server = uvicorn(STARLETTE_APP)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(runs):
            assert client.get(f"/api/users/u{i}").json() == {"user": f"u{i}"}
            assert client.get("/api/health").json() == {"ok": True}
        assert client.get("/elsewhere").status_code == 404
    # Each request counted once, although the middleware is in the app's
    # list and the adapter wraps the stack too.
    runs_by_name = server.wait_runs({"GET /api/users/{name}": runs, "GET /api/health": runs,
                                     "<unmatched>": 1})
    assert set(runs_by_name) == {"GET /api/users/{name}", "GET /api/health", "<unmatched>"}
    fds = server.work("leakprobe_work_retained_fds")
    assert runs - 2 <= fds["GET /api/users/{name}"] <= runs, fds
    assert -2 <= fds["GET /api/health"] <= 0, fds
    stderr = server.stop(signal.SIGTERM)
    assert f"{runs} httpx.Client never closed" in stderr, stderr
    assert "Traceback" not in stderr, stderr


# In-process ASGI calls (no server): how the adapter wraps apps.
ASGI_CALL = """
import asyncio

async def call(app, path, method="GET"):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    return sent[0]["status"]

def names():
    from leakprobe import _work
    return {s.name: s.runs for s in _work.stats("route")}
"""


def test_fastapi_routers_with_prefixes_and_odd_methods_get_bounded_names():
    result = run_child(ASGI_CALL + textwrap.dedent("""
    from fastapi import APIRouter, FastAPI
    from leakprobe.integrations.asgi import LeakprobeMiddleware

    router = APIRouter(prefix="/v1")

    @router.get("/things/{thing_id}")
    async def thing(thing_id: int):
        return {}

    app = FastAPI()
    app.include_router(router, prefix="/api")
    statuses = [asyncio.run(call(app, "/api/v1/things/%d" % i)) for i in range(3)]
    statuses.append(asyncio.run(call(app, "/api/v1/things/1", method="BREW")))
    emit(statuses=statuses, names=names(),
         wrapped=type(app.middleware_stack).__name__)
    """))
    assert result["statuses"] == [200, 200, 200, 405]
    assert result["wrapped"] == "LeakprobeMiddleware"
    assert result["names"] == {"GET /api/v1/things/{thing_id}": 3,
                               "OTHER /api/v1/things/{thing_id}": 1}


def test_the_asgi_adapter_off_leaves_apps_untouched_and_the_middleware_by_hand_still_works():
    result = run_child(ASGI_CALL + textwrap.dedent("""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from leakprobe.integrations.asgi import LeakprobeMiddleware

    async def hello(request):
        return PlainTextResponse("hi")

    auto = Starlette(routes=[Route("/a/{x}", hello)])
    asyncio.run(call(auto, "/a/1"))
    by_hand = LeakprobeMiddleware(Starlette(routes=[Route("/b/{x}", hello)]))
    asyncio.run(call(by_hand, "/b/1"))
    emit(names=names(), installed=adapters.installed(),
         stack=type(auto.middleware_stack).__name__)
    """), LEAKPROBE_ADAPTERS="httpx")
    assert "asgi" not in result["installed"]
    assert result["stack"] != "LeakprobeMiddleware"
    assert result["names"] == {"GET /b/{x}": 1}


def test_websocket_scopes_pass_through_and_a_broken_route_never_reaches_the_app():
    result = run_child(ASGI_CALL + textwrap.dedent("""
    from leakprobe import adapters as lp_adapters
    from leakprobe.integrations import asgi

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])
        if scope["type"] == "http":
            scope["route"] = object()  # no path_format: counted as unmatched
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    wrapped = asgi.LeakprobeMiddleware(app)

    async def ws():
        async def receive():
            return {"type": "websocket.connect"}
        async def send(message):
            pass
        await wrapped({"type": "websocket", "path": "/ws"}, receive, send)

    asyncio.run(ws())
    status = asyncio.run(call(wrapped, "/x"))
    emit(seen=seen, status=status, names=names(), errors=lp_adapters.errors())
    """))
    assert result["seen"] == ["websocket", "http"]
    assert result["status"] == 204
    assert result["names"] == {"<unmatched>": 1}
    assert result["errors"] == {}
