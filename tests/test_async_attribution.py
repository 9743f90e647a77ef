"""Async attribution (docs/heap.md, "Async code"): what a library-spawned
asyncio task creates is attributed to the application coroutine that awaited
the library, with real httpx/anyio against a real HTTP server."""

from __future__ import annotations

import json

import pytest

from conftest import run_python

SERVER = """
import http.server, threading
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"              # keep-alive: the socket stays open
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]
url = f"http://127.0.0.1:{port}/"
"""


def _run(body: str, **env: str) -> dict:
    code = "import json, leakprobe\n" + SERVER + body
    proc = run_python(code, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _line(code: str, marker: str) -> int:
    lines = ("import json, leakprobe\n" + SERVER + code).splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line)


ASYNC_CLIENT = """
import asyncio, httpx
async def fetch(client):
    return await client.get(url)                               # FETCH
async def main():
    client = httpx.AsyncClient()
    response = await fetch(client)
    sockets = [r for r in leakprobe.open_fds()
               if r.kind == "tcp" and r.peer == f"127.0.0.1:{port}"]
    app_task = asyncio.create_task(fetch(client))
    wrapped = type(app_task.get_coro()).__name__
    await app_task
    try:
        await httpx.AsyncClient().get("http://127.0.0.1:1/")  # refused: raised through
        refused = None
    except httpx.ConnectError as exc:
        refused = type(exc).__name__
    await client.aclose()
    print(json.dumps({"status": response.status_code, "refused": refused,
                      "sites": [r.site_name for r in sockets], "wrapped": wrapped,
                      "stack": [f.function for f in sockets[0].stack]}))
asyncio.run(main())                                            # RUN
"""


# The same program on uvloop's loop (uvicorn's default where uvloop is
# installed): uvloop.run makes it from uvloop.Loop.
UVLOOP_CLIENT = "import uvloop\n" + ASYNC_CLIENT.replace("asyncio.run(main())",
                                                         "uvloop.run(main()) ")
assert UVLOOP_CLIENT.count("uvloop.run(main())") == 1


@pytest.mark.parametrize("program", [ASYNC_CLIENT, UVLOOP_CLIENT], ids=["asyncio", "uvloop"])
def test_socket_opened_in_anyio_task_is_attributed_to_the_awaiting_coroutine(program):
    out = _run(program)
    line = _line(program, "# FETCH")
    assert out["status"] == 200 and out["refused"] == "ConnectError"
    assert len(out["sites"]) == 1, out
    assert out["sites"][0].endswith(f":{line} in fetch"), (out["sites"], line)
    # The task's own frames, then the stack that created it: anyio's
    # spawning, httpx, the application's coroutine.
    stack = out["stack"]
    assert stack.index("fetch") > stack.index("connect_tcp.<locals>.try_connect"), stack
    # Application coroutines are not wrapped: their own frames name the site.
    assert out["wrapped"] == "coroutine"


CONTROL = """
import asyncio.base_events as base_events
installed = hasattr(base_events.BaseEventLoop.create_task, "__leakprobe_wrapped__")
base_events.BaseEventLoop.create_task = base_events.BaseEventLoop.create_task.__wrapped__
""" + ASYNC_CLIENT


UVLOOP_CONTROL = """
import uvloop
assert hasattr(uvloop.Loop.create_task, "__leakprobe_wrapped__")
uvloop.Loop.create_task = uvloop.Loop.create_task.__wrapped__
""" + UVLOOP_CLIENT


@pytest.mark.parametrize("program", [CONTROL, UVLOOP_CONTROL], ids=["asyncio", "uvloop"])
def test_control_without_the_wrapper_the_site_is_the_asyncio_run_line(program):
    # What the stitching corrects, shown on the same code: with create_task
    # unwrapped, the socket is attributed to the line that runs the loop.
    out = _run(program)
    assert out["sites"] == [f"<string>:{_line(program, '# RUN')} in <module>"], out["sites"]


def test_stop_restores_create_task_and_start_wraps_it_again():
    out = _run("""
import asyncio.base_events as base_events
import uvloop
def wrapped():
    return [hasattr(loop.create_task, "__leakprobe_wrapped__")
            for loop in (base_events.BaseEventLoop, uvloop.Loop)]
states = [wrapped()]
leakprobe.stop()
states.append(wrapped())
leakprobe.start(port=0)
states.append(wrapped())
print(json.dumps(states))
""")
    assert out == [[True, True], [False, False], [True, True]]


def test_the_wrapper_is_a_well_behaved_coroutine():
    # What asyncio and libraries ask of a task's coroutine: the wrapped
    # one's attributes, send/throw/close and their results, and the task
    # parent set during each step and restored after it, also when the
    # step raises.
    out = _run("""
import asyncio, inspect
from leakprobe import _native
parents = []
class Boom(Exception):
    pass
async def inner():
    parents.append(_native.set_task_parent(0)); _native.set_task_parent(parents[-1])
    await asyncio.sleep(0)
    return (1, 2)                     # a tuple: StopIteration's value, not its args
coro = inner()
wrapped = _native.spawned_coroutine(coro, 5)
facts = [wrapped.__qualname__, wrapped.cr_code is coro.cr_code,
         asyncio.iscoroutine(wrapped), inspect.getcoroutinestate(wrapped),
         repr(wrapped) == repr(coro), wrapped.__await__() is wrapped]
async def main():
    return await asyncio.get_running_loop().create_task(wrapped)
facts.append(list(asyncio.run(main())))
facts.append(parents)                 # each first step saw its parent: 5, then 9 and 4 below
facts.append(_native.set_task_parent(0))   # restored after it: 0
# by hand, as a library drives a coroutine: send(None), then the return value
driven = _native.spawned_coroutine(inner(), 9)
driven.send(None)
try:
    driven.send(None)
except StopIteration as stop:
    facts.append(list(stop.value))
async def raises():
    raise Boom("in the step")
failing = _native.spawned_coroutine(raises(), 3)
try:
    failing.send(None)
except Boom as exc:
    facts.append([str(exc), _native.set_task_parent(0)])
thrown = _native.spawned_coroutine(inner(), 4)
thrown.send(None)
try:
    thrown.throw(Boom("thrown"))
except Boom as exc:
    facts.append([str(exc), _native.set_task_parent(0)])
other = _native.spawned_coroutine(inner(), 1)
other.close()
facts.append(inspect.getcoroutinestate(other))
try:
    _native.SpawnedCoroutine()
except TypeError:
    facts.append("not instantiable")
print(json.dumps(facts))
""")
    assert out == ["inner", True, True, "CORO_CREATED", True, True, [1, 2], [5, 9, 4], 0, [1, 2],
                   ["in the step", 0], ["thrown", 0], "CORO_CLOSED", "not instantiable"]


def test_set_task_parent_returns_the_previous_parent_and_refuses_bad_ids():
    out = _run("""
from leakprobe import _native
facts = [_native.set_task_parent(7), _native.set_task_parent(0), _native.set_task_parent(0)]
for bad in (-1, 2 ** 32, "7", None):
    try:
        _native.set_task_parent(bad)
        facts.append("no error")
    except (OverflowError, TypeError) as exc:
        facts.append(type(exc).__name__)
facts.append(_native.set_task_parent(0))  # a refused call changed nothing
print(json.dumps(facts))
""")
    assert out == [0, 7, 0, "OverflowError", "OverflowError", "TypeError", "TypeError", 0]


def test_objects_alone_install_the_wrapper_when_asyncio_comes_later():
    # Start installs async attribution for any capturing feature, objects
    # included; the post-import hook must agree with it.
    out = _run("""
import asyncio.base_events as base_events
print(json.dumps(hasattr(base_events.BaseEventLoop.create_task, "__leakprobe_wrapped__")))
""", LEAKPROBE_HEAP="0", LEAKPROBE_FDS="0")
    assert out is True


# A heap sample made in a library-spawned task: anyio's connect_tcp opens
# the connection in a task of its own (try_connect), whose live blocks (the
# socket, the transport, anyio's stream) are attributed to the application
# line that awaited httpx. The child starts with heap tracking off
# (HEAP_ENV); after a warm-up has made the imports httpx and anyio do on
# first use (at one sample per byte they would fill the block table), heap
# tracking starts sampling every allocation, so the samples are certain.
# (Restarting from the default interval instead would not do: each thread
# keeps the countdown it drew at 128 KiB, so the first ~128 KiB a thread
# allocates after the restart may go unsampled.)
HEAP_ENV = {"LEAKPROBE_HEAP": "0"}
HEAP_START = "leakprobe.start(port=0, heap=True, heap_sample_bytes=1)   # every allocation\n"

HEAP_CLIENT = """
import asyncio, httpx
from leakprobe import _native
async def warm_up():
    async with httpx.AsyncClient() as client:
        await client.get(url)
asyncio.run(warm_up())
""" + HEAP_START + """
async def fetch(client):
    return await client.get(url)                               # FETCH
async def main():
    client = httpx.AsyncClient()
    response = await fetch(client)
    summary = _native.heap_summary()   # before the snapshot, whose own allocations it samples
    spawned = [s for s in leakprobe.heap_snapshot().statistics("traceback")
               if any(f.function == "connect_tcp.<locals>.try_connect" for f in s.traceback)]
    await client.aclose()
    print(json.dumps({"status": response.status_code,
                      "sites": sorted({str(s.site) for s in spawned}),
                      "functions": sorted({f.function for s in spawned for f in s.traceback}),
                      "samples": summary["samples"], "dropped": summary["dropped_samples"],
                      "stacks_full": summary["stack_table"]["stacks_full"]}))
asyncio.run(main())                                            # RUN
"""

UVLOOP_HEAP_CLIENT = "import uvloop\n" + HEAP_CLIENT.replace("asyncio.run(", "uvloop.run(")
assert UVLOOP_HEAP_CLIENT.count("uvloop.run(") == 2

# The controls: create_task unwrapped (the heap programs' restart wraps it
# again, so there it is unwrapped after the restart).
UNWRAP = """
import asyncio.base_events as base_events
base_events.BaseEventLoop.create_task = base_events.BaseEventLoop.create_task.__wrapped__
"""
UVLOOP_UNWRAP = """
uvloop.Loop.create_task = uvloop.Loop.create_task.__wrapped__
"""
HEAP_CONTROL = HEAP_CLIENT.replace(HEAP_START, HEAP_START + UNWRAP)
UVLOOP_HEAP_CONTROL = UVLOOP_HEAP_CLIENT.replace(HEAP_START, HEAP_START + UVLOOP_UNWRAP)
assert HEAP_CONTROL != HEAP_CLIENT and UVLOOP_HEAP_CONTROL != UVLOOP_HEAP_CLIENT


def _heap_samples(program: str) -> dict:
    out = _run(program, **HEAP_ENV)
    assert out["status"] == 200, out
    assert out["samples"] > 1000, out  # every allocation of the request, not a few
    assert out["dropped"] == 0 and out["stacks_full"] == 0, out  # and all recorded
    # The task's own frames (anyio's stream made in it among them).
    assert "connect_tcp.<locals>.try_connect" in out["functions"], out
    assert "SocketStream.__init__" in out["functions"], out
    return out


@pytest.mark.parametrize("program", [HEAP_CLIENT, UVLOOP_HEAP_CLIENT], ids=["asyncio", "uvloop"])
def test_heap_sample_in_anyio_task_is_attributed_to_the_awaiting_coroutine(program):
    out = _heap_samples(program)
    assert out["sites"] == [f"<string>:{_line(program, '# FETCH')} in fetch"], out["sites"]
    # ... through the stack that created the task: httpx, the application.
    assert {"TaskGroup.start_soon", "AsyncClient.get", "fetch", "main"} <= set(out["functions"])


@pytest.mark.parametrize("program", [HEAP_CONTROL, UVLOOP_HEAP_CONTROL], ids=["asyncio", "uvloop"])
def test_control_heap_sample_without_the_wrapper_is_the_asyncio_run_line(program):
    out = _heap_samples(program)
    assert out["sites"] == [f"<string>:{_line(program, '# RUN')} in <module>"], out["sites"]
    assert "fetch" not in out["functions"], out


# A tracked application class made in a library-spawned task: the
# application has anyio's task group spawn asyncio's create_connection,
# library code that calls the protocol factory, an application class that
# track_type counts. Its creation site is the application line that made
# the library spawn the task.
OBJECTS = """
import asyncio, anyio
@leakprobe.track_type
class AppProtocol(asyncio.Protocol):
    def __init__(self):
        self.transport = None
    def connection_made(self, transport):
        self.transport = transport
    def close(self):
        self.transport.close()
async def connect(loop):
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.create_connection, AppProtocol, "127.0.0.1", port)   # SPAWN
async def main():
    loop = asyncio.get_running_loop()
    await connect(loop)
    (stats,) = [t for t in leakprobe.objects() if t.name == "__main__.AppProtocol"]
    (record,) = [r for r in leakprobe.object_snapshot().records if r.type == stats.name]
    print(json.dumps({"live": stats.live, "sites": [s.site_name for s in stats.sites],
                      "stack": [f.function for f in record.stack]}))
asyncio.run(main())                                            # RUN
"""

# The same with asyncio.gather spawning the task (and, on Python 3.11,
# asyncio.wait_for, as asyncpg connects): the task's coroutine is
# create_connection itself.
ANYIO_SPAWN = """    async with anyio.create_task_group() as tg:
        tg.start_soon(loop.create_connection, AppProtocol, "127.0.0.1", port)   # SPAWN"""
assert ANYIO_SPAWN in OBJECTS
GATHER_OBJECTS = OBJECTS.replace(ANYIO_SPAWN, """\
    await asyncio.gather(loop.create_connection(AppProtocol, "127.0.0.1", port))  # SPAWN""")
WAIT_FOR_OBJECTS = OBJECTS.replace(ANYIO_SPAWN, """\
    await asyncio.wait_for(loop.create_connection(AppProtocol, "127.0.0.1", port), 5)  # SPAWN""")


def _on_uvloop(program: str) -> str:
    changed = "import uvloop\n" + program.replace("asyncio.run(main())", "uvloop.run(main()) ")
    assert changed.count("uvloop.run(main())") == 1
    return changed


OBJECT_CASES = {
    "anyio-asyncio": OBJECTS,
    "anyio-uvloop": _on_uvloop(OBJECTS),
    "gather-asyncio": GATHER_OBJECTS,
    "gather-uvloop": _on_uvloop(GATHER_OBJECTS),
    "wait_for-asyncio": WAIT_FOR_OBJECTS,
    "wait_for-uvloop": _on_uvloop(WAIT_FOR_OBJECTS),
}
# On uvloop, create_connection is a Cython coroutine: no frame of its own,
# and its code's file is "uvloop/loop.pyx". gather-uvloop (and wait_for on
# 3.11, which wraps it in a task) needs such a coroutine counted as library
# code and the step's capture cut at the frame current when the step began
# (python_frames.c): before both, the site was the uvloop.run line.


@pytest.mark.parametrize("case", sorted(OBJECT_CASES))
def test_tracked_object_made_in_a_spawned_task_is_attributed_to_the_spawning_coroutine(case):
    program = OBJECT_CASES[case]
    out = _run(program)
    assert out["live"] == 1, out
    assert out["sites"] == [f"<string>:{_line(program, '# SPAWN')} in connect"], out
    # The task's own frames, then the stack that created it: the library's
    # spawning call, then the application's coroutine.
    # (From 3.12 on wait_for makes no task: create_connection runs in the
    # application's own task, under wait_for and connect all the same.)
    stack = out["stack"]
    spawner = {"anyio": "TaskGroup.start_soon", "gather": "gather",
               "wait_for": "wait_for"}[case.split("-")[0]]
    assert stack.index("connect") > stack.index(spawner), stack


@pytest.mark.parametrize("program", [
    UNWRAP + OBJECTS, _on_uvloop(UVLOOP_UNWRAP + OBJECTS)],
    ids=["asyncio", "uvloop"])
def test_control_tracked_object_without_the_wrapper_is_the_asyncio_run_line(program):
    out = _run(program)
    assert out["live"] == 1, out
    assert out["sites"] == [f"<string>:{_line(program, '# RUN')} in <module>"], out
    assert "connect" not in out["stack"], out
