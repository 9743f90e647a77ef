"""The seed review's leaks (shared seed/memory-leak-review.md), reproduced as
code against real libraries and servers, each with its fixed twin, checked
with exact counts through the built-in adapters (leakprobe.adapters).

Every program runs in a fresh interpreter with leakprobe imported; N owners
are made, the figures are read while they are alive, then the program drops
them and runs the collector. A leak shows as N live, then N collected while
open; its fixed twin as N closed and nothing collected while open."""

from __future__ import annotations

import functools

import pytest
from adapter_support import HttpServer, line_of, run_child
from conftest import parse_exposition, value

N = 12


def zero(**over: int) -> dict[str, int]:
    base = {"live": 0, "created": 0, "closed": 0, "collected_while_open": 0}
    base.update(over)
    return base


@pytest.fixture(scope="module")
def upstream():
    server = HttpServer()
    yield server.url
    server.stop()


AI_CLIENT = """
    import os, httpx
    N = int(os.environ["N"])

    class BaseAIClient:
        def __init__(self, base_url):
            self._client = httpx.Client(base_url=base_url)  # the seed's client line
            self._cache: dict[str, str] = {}

        def generate(self, prompt):
            if prompt not in self._cache:
                reply = self._client.post("/v1/summarize", json={"text": prompt})
                self._cache[prompt] = reply.json()["summary"]
            return self._cache[prompt]

        def close(self):
            self._client.close()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    class OpenAIClient(BaseAIClient):
        pass
"""


OWNED = """
    def owned(type_name):
        # (kind, owner's creation site) of every open fd the type owns
        return sorted([r.kind, str(r.owner.site)] for r in leakprobe.open_fds()
                      if r.owner is not None and r.owner.type == type_name)
"""


def test_ai_client_that_never_closes_its_httpx_client(upstream):
    body = AI_CLIENT + OWNED + """
    clients = [OpenAIClient(os.environ["UPSTREAM"]) for _ in range(N)]
    for i, client in enumerate(clients):
        client.generate(f"prompt {i}")
    during, pool_during = counts("httpx.Client"), pools("httpcore")
    site, sockets = sites("httpx.Client"), owned("httpx.Client")
    del clients, client
    gc.collect()
    emit(during=during, after=counts("httpx.Client"), pool_during=pool_during,
         pool_after=pools("httpcore"), site=site, sockets=sockets,
         sockets_after=owned("httpx.Client"))
    """
    result = run_child(body, UPSTREAM=upstream, N=str(N))
    assert result["during"] == zero(live=N, created=N)
    # attributed to the wrapper's line, not to httpx or leakprobe
    line = line_of(body, "the seed's client line")
    assert result["site"] == {f"<string>:{line} in BaseAIClient.__init__": N}
    # the N sockets are owned by the clients, named by the clients' site
    assert result["sockets"] == [["tcp", f"<string>:{line} in BaseAIClient.__init__"]] * N
    assert result["sockets_after"] == []
    assert result["after"] == zero(created=N, collected_while_open=N)
    # one kept-alive connection per client, idle in its pool; gone with the pools
    assert result["pool_during"] == {"active": 0, "idle": N}
    assert result["pool_after"] == {"active": 0, "idle": 0}


def test_ai_client_fixed_twin_closes_every_client(upstream):
    body = AI_CLIENT + """
    for i in range(N):
        with OpenAIClient(os.environ["UPSTREAM"]) as client:
            client.generate(f"prompt {i}")
    del client
    gc.collect()
    emit(after=counts("httpx.Client"), pool_after=pools("httpcore"))
    """
    result = run_child(body, UPSTREAM=upstream, N=str(N))
    assert result["after"] == zero(created=N, closed=N)
    assert result["pool_after"] == {"active": 0, "idle": 0}


# The seed's unbounded dict cache found by discovery (docs/containers.md,
# "Container attributes of tracked owners that keep growing"), with the real
# sampler: the AI client wrapper is an application tracked type
# (leakprobe.track_type; its default name is module.qualname, and the
# program runs as __main__) holding a real httpx.Client against the upstream
# server. Each client gets one new prompt per step, a step at most every
# 50 ms (a reply takes about 1 ms), and the discovery pass runs every
# 250 ms, so every pass sees the largest cache grown; the third growth in a row discovers it. The
# program stops at STEPS prompts per client, then waits for two more passes:
# the last size is measured after the last prompt.
CACHE_DISCOVERY = AI_CLIENT + """
    import time
    import cachetools
    from leakprobe import _native
    STEPS, URL = int(os.environ["STEPS"]), os.environ["UPSTREAM"]
    LEAKY = "__main__.OpenAIClient._cache"

    leakprobe.track_type(OpenAIClient)

    @leakprobe.track_type(name="app.ai.BoundedAIClient")
    class BoundedAIClient(BaseAIClient):
        def __init__(self, base_url):
            super().__init__(base_url)
            self._cache = cachetools.LRUCache(maxsize=32)  # the review's fix

    @leakprobe.track_type(name="app.ai.EvictingAIClient")
    class EvictingAIClient(BaseAIClient):
        def generate(self, prompt):  # a plain dict that never holds more than 2
            if prompt not in self._cache and len(self._cache) >= 2:
                del self._cache[next(iter(self._cache))]  # the oldest goes first
            return super().generate(prompt)

    def discovered():
        return {s.name: s for s in leakprobe.containers() if s.origin != "watch"}

    def run(kinds):
        clients = [kind(URL) for kind in kinds for _ in range(2)]
        found_at = None
        for step in range(1, STEPS + 1):
            began = time.monotonic()
            for client in clients:
                client.generate(f"prompt {step}")
            if found_at is None and LEAKY in discovered():
                found_at = step
            time.sleep(max(0.0, 0.05 - (time.monotonic() - began)))
        if found_at is not None:  # two more discovery passes
            passes, deadline = len(discovered()[LEAKY].history), time.monotonic() + 30
            while len(discovered()[LEAKY].history) < passes + 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        found = {name: [s.kind, s.size, s.maxsize, s.origin, s.held, list(s.history)[-2:]]
                 for name, s in discovered().items()}
        lengths = {}
        for client in clients:
            lengths.setdefault(type(client).__name__, []).append(len(client._cache))
        text = _native.collect_text()
        for client in clients:
            client.close()
        return dict(found_at=found_at, found=found, lengths=lengths, text=text)

    twins = [BoundedAIClient, EvictingAIClient] if os.environ["TWINS"] == "1" else []
    emit(**run([OpenAIClient] + twins))
"""

DISCOVERY_ENV = dict(N=str(N), LEAKPROBE_CONTAINER_DISCOVER="1",
                     LEAKPROBE_CONTAINER_DISCOVER_INTERVAL="0.25")
STEPS = 50  # found after about 4 passes: 1 s, 10 to 20 steps


def container_sizes(text: str) -> dict[tuple[str, str], float]:
    """(name, kind) -> leakprobe_container_size, from exposition text."""
    families = parse_exposition(text)
    return {(dict(labels)["name"], dict(labels)["kind"]): size
            for (_, labels), size in families["leakprobe_container_size"].items()}


def assert_only_the_leaky_cache_found(result: dict) -> None:
    """The one container discovered and exported: the leaky clients' cache,
    named OwnerType.attribute after the registered type, sized as the total
    over the 2 live clients at each of the last two discovery passes."""
    assert result["found"] == {"__main__.OpenAIClient._cache":
                               ["dict", 2 * STEPS, None, "attribute", "weak",
                                [2 * STEPS, 2 * STEPS]]}
    assert container_sizes(result["text"]) == {("__main__.OpenAIClient._cache", "dict"):
                                               2 * STEPS}
    families = parse_exposition(result["text"])
    assert value(families, "leakprobe_containers_watched") == 1


def test_ai_client_unbounded_dict_cache_is_discovered_and_named(upstream):
    result = run_child(CACHE_DISCOVERY, UPSTREAM=upstream, STEPS=str(STEPS), TWINS="0",
                       **DISCOVERY_ENV)
    # found while it still grew
    assert result["found_at"] is not None and result["found_at"] < STEPS, result
    assert result["lengths"] == {"OpenAIClient": [STEPS, STEPS]}
    assert_only_the_leaky_cache_found(result)


def test_ai_client_fixed_twins_bounded_caches_are_not_discovered(upstream):
    # The same prompts at the same pace to the leaky client (the witness that
    # discovery ran and saw growth) and to two fixed twins: the review's
    # cachetools.LRUCache (bounded by construction: never followed), and a
    # plain dict that evicts its oldest entry to stay at 2 (it can grow at 2
    # passes in a row at most, one short of the rule). Only the leak is found.
    result = run_child(CACHE_DISCOVERY, UPSTREAM=upstream, STEPS=str(STEPS), TWINS="1",
                       **DISCOVERY_ENV)
    assert result["found_at"] is not None and result["found_at"] < STEPS, result
    assert result["lengths"] == {"OpenAIClient": [STEPS] * 2, "BoundedAIClient": [32] * 2,
                                 "EvictingAIClient": [2] * 2}
    assert_only_the_leaky_cache_found(result)


ASYNC_CLIENTS = """
    import asyncio, os, httpx
    N = int(os.environ["N"])
    URL = os.environ["UPSTREAM"]

    async def leaky():
        clients = [httpx.AsyncClient(base_url=URL) for _ in range(N)]
        for client in clients:
            (await client.get("/v1/models")).raise_for_status()
        return clients

    async def fixed():
        for i in range(N):
            if i % 2:
                async with httpx.AsyncClient(base_url=URL) as client:
                    await client.get("/v1/models")
            else:
                client = httpx.AsyncClient(base_url=URL)
                await client.get("/v1/models")
                await client.aclose()
"""


def test_async_clients_never_closed_then_collected(upstream):
    result = run_child(ASYNC_CLIENTS + OWNED + """
    clients = asyncio.run(leaky())
    during, pool_during = counts("httpx.AsyncClient"), pools("httpcore")
    sockets = [kind for kind, _ in owned("httpx.AsyncClient")]
    del clients
    gc.collect()
    emit(during=during, after=counts("httpx.AsyncClient"), pool_during=pool_during,
         sockets=sockets)
    """, UPSTREAM=upstream, N=str(N))
    # anyio connected each in a task of its own: still owned by its client
    assert result["sockets"] == ["tcp"] * N
    assert result["during"] == zero(live=N, created=N)
    assert result["pool_during"] == {"active": 0, "idle": N}
    assert result["after"] == zero(created=N, collected_while_open=N)


def test_async_clients_fixed_twin_aclose_and_async_with(upstream):
    result = run_child(ASYNC_CLIENTS + """
    asyncio.run(fixed())
    gc.collect()
    emit(after=counts("httpx.AsyncClient"), pool_after=pools("httpcore"))
    """, UPSTREAM=upstream, N=str(N))
    assert result["after"] == zero(created=N, closed=N)
    assert result["pool_after"] == {"active": 0, "idle": 0}


REQUESTS_SESSIONS = OWNED + """
    import os, requests
    N, URL = int(os.environ["N"]), os.environ["UPSTREAM"]

    def new_session():
        return requests.Session()  # the session line

    sessions = [new_session() for _ in range(N)]
    for session in sessions:
        session.get(URL + "/ok").raise_for_status()
    during, pool_during = counts("requests.Session"), pools("urllib3")
    sockets = owned("requests.Session")
    del sessions, session
    gc.collect()
    after = counts("requests.Session")
    for _ in range(N):
        with requests.Session() as session:
            session.get(URL + "/ok")
    gc.collect()
    emit(during=during, pool_during=pool_during, after=after, sockets=sockets,
         fixed=counts("requests.Session"), pool_fixed=pools("urllib3"),
         sockets_fixed=owned("requests.Session"))
"""


def test_requests_sessions_left_open_and_closed(upstream):
    result = run_child(REQUESTS_SESSIONS, UPSTREAM=upstream, N=str(N))
    # one kept-alive socket per session, owned by it, named by its site
    line = line_of(REQUESTS_SESSIONS, "# the session line")
    assert result["sockets"] == [["tcp", f"<string>:{line} in new_session"]] * N
    assert result["sockets_fixed"] == []
    assert result["during"] == zero(live=N, created=N)
    assert result["pool_during"] == {"active": 0, "idle": N}
    assert result["after"] == zero(created=N, collected_while_open=N)
    assert result["fixed"] == zero(created=2 * N, closed=N, collected_while_open=N)
    assert result["pool_fixed"] == {"active": 0, "idle": 0}


def test_urllib_responses_left_open_and_their_fixed_twin(upstream):
    result = run_child("""
    import os, urllib.request
    N, URL = int(os.environ["N"]), os.environ["UPSTREAM"]
    responses = [urllib.request.urlopen(f"{URL}/item/{i}") for i in range(N)]
    during = counts("urllib.request.HTTPResponse")
    del responses
    gc.collect()
    leaked = counts("urllib.request.HTTPResponse")
    for i in range(N):
        with urllib.request.urlopen(f"{URL}/item/{i}") as response:
            response.read()
    for i in range(N):  # read to the end: the connection is released
        urllib.request.urlopen(f"{URL}/item/{i}").read()
    head = urllib.request.Request(URL + "/", method="HEAD")
    urllib.request.urlopen(head).close()  # no body, but a connection until closed
    gc.collect()
    emit(during=during, leaked=leaked, fixed=counts("urllib.request.HTTPResponse"))
    """, UPSTREAM=upstream, N=str(N))
    assert result["during"] == zero(live=N, created=N)
    assert result["leaked"] == zero(created=N, collected_while_open=N)
    assert result["fixed"] == zero(created=3 * N + 1, closed=2 * N + 1, collected_while_open=N)


def test_urllib_openers_never_closed_and_closed(upstream):
    result = run_child("""
    import os, urllib.request
    N, URL = int(os.environ["N"]), os.environ["UPSTREAM"]
    openers = [urllib.request.build_opener() for _ in range(N)]
    for opener in openers:
        opener.open(URL + "/ok").read()
    during = counts("urllib.request.OpenerDirector")
    del openers, opener
    gc.collect()
    leaked = counts("urllib.request.OpenerDirector")
    for _ in range(N):
        opener = urllib.request.build_opener()
        opener.open(URL + "/ok").read()
        opener.close()
    emit(during=during, leaked=leaked, fixed=counts("urllib.request.OpenerDirector"))
    """, UPSTREAM=upstream, N=str(N))
    assert result["during"] == zero(live=N, created=N)
    assert result["leaked"] == zero(created=N, collected_while_open=N)
    assert result["fixed"] == zero(created=2 * N, closed=N, collected_while_open=N)


SQLITE_ENGINE = """
    import os
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool, QueuePool, StaticPool
    N = int(os.environ["N"])
    URL = "sqlite:///" + os.environ["DB"]
    poolclass = {"null": NullPool, "queue": QueuePool, "static": StaticPool}[os.environ["POOL"]]
    engine = create_engine(URL, poolclass=poolclass)
    label = repr(engine.url)

    def leak_sessions():
        sessions = []
        for _ in range(N):
            session = Session(engine)  # the session line: never closed
            session.execute(text("select 1"))
            sessions.append(session)
        return sessions

    def fixed_sessions():
        for _ in range(N):
            with Session(engine) as session:
                session.execute(text("select 1"))
"""

SESSION_PROGRAM = SQLITE_ENGINE + """
    sessions = leak_sessions()
    during = dict(sessions=counts("sqlalchemy.orm.Session"), pool=pools("sqlalchemy", label),
                  checkouts=counts("sqlalchemy.PoolProxiedConnection"),
                  sqlite=counts("sqlite3.Connection"), site=sites("sqlalchemy.orm.Session"))
    del sessions
    gc.collect()
    after = dict(sessions=counts("sqlalchemy.orm.Session"), pool=pools("sqlalchemy", label),
                 checkouts=counts("sqlalchemy.PoolProxiedConnection"),
                 sqlite=counts("sqlite3.Connection"))
    emit(during=during, after=after)
"""

FIXED_PROGRAM = SQLITE_ENGINE + """
    fixed_sessions()
    gc.collect()
    emit(after=dict(sessions=counts("sqlalchemy.orm.Session"), pool=pools("sqlalchemy", label),
                    checkouts=counts("sqlalchemy.PoolProxiedConnection"),
                    sqlite=counts("sqlite3.Connection")))
"""


def pool_states(open_: int, out: int, invalidated: int = 0) -> dict[str, int]:
    return {"open": open_, "checked_out": out, "checked_in": open_ - out,
            "invalidated": invalidated}


def test_nullpool_sessions_never_closed(tmp_path):
    result = run_child(SESSION_PROGRAM, DB=str(tmp_path / "app.db"), POOL="null", N=str(N))
    during, after = result["during"], result["after"]
    assert during["sessions"] == zero(live=N, created=N)
    line = line_of(SESSION_PROGRAM, "# the session line")
    assert during["site"] == {f"<string>:{line} in leak_sessions": N}
    # NullPool: one DBAPI connection per checked-out session, none kept
    assert during["pool"] == pool_states(N, N)
    assert during["checkouts"] == zero(live=N, created=N)
    assert during["sqlite"] == zero(live=N, created=N)
    assert after["sessions"] == zero(created=N, collected_while_open=N)
    assert after["checkouts"] == zero(created=N, collected_while_open=N)
    assert after["pool"] == pool_states(0, 0)
    # closed by SQLAlchemy's clean-up inside the collection: left to the collector
    assert after["sqlite"] == zero(created=N, collected_while_open=N)


def test_nullpool_sessions_fixed_twin(tmp_path):
    after = run_child(FIXED_PROGRAM, DB=str(tmp_path / "app.db"), POOL="null", N=str(N))["after"]
    assert after["sessions"] == zero(created=N, closed=N)
    assert after["checkouts"] == zero(created=N, closed=N)
    assert after["pool"] == pool_states(0, 0)
    assert after["sqlite"] == zero(created=N, closed=N)


def test_queuepool_sessions_never_closed(tmp_path):
    result = run_child(SESSION_PROGRAM, DB=str(tmp_path / "app.db"), POOL="queue", N=str(N))
    during, after = result["during"], result["after"]
    assert during["sessions"] == zero(live=N, created=N)
    assert during["pool"] == pool_states(N, N)  # pool_size 5 + 7 of max_overflow 10
    assert after["sessions"] == zero(created=N, collected_while_open=N)
    assert after["checkouts"] == zero(created=N, collected_while_open=N)
    # returned by the collector: 5 kept (pool_size), the overflow closed
    assert after["pool"] == pool_states(5, 0)
    assert after["sqlite"] == zero(live=5, created=N, collected_while_open=N - 5)


def test_queuepool_sessions_fixed_twin(tmp_path):
    after = run_child(FIXED_PROGRAM, DB=str(tmp_path / "app.db"), POOL="queue", N=str(N))["after"]
    assert after["sessions"] == zero(created=N, closed=N)
    assert after["checkouts"] == zero(created=N, closed=N)
    assert after["pool"] == pool_states(1, 0)  # one connection, reused N times
    assert after["sqlite"] == zero(live=1, created=1)


def test_staticpool_sessions_never_closed_and_fixed(tmp_path):
    result = run_child(SESSION_PROGRAM, DB=str(tmp_path / "app.db"), POOL="static", N=str(N))
    assert result["during"]["sessions"] == zero(live=N, created=N)
    assert result["after"]["sessions"] == zero(created=N, collected_while_open=N)
    assert result["after"]["pool"]["open"] == 1  # StaticPool: one connection, always
    assert result["after"]["sqlite"] == zero(live=1, created=1)
    after = run_child(FIXED_PROGRAM, DB=str(tmp_path / "app.db"), POOL="static", N=str(N))["after"]
    assert after["sessions"] == zero(created=N, closed=N)
    assert after["pool"] == pool_states(1, 0)


ENGINE_PROGRAM = """
    import os
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    def get_engine():
        return create_engine("sqlite:///" + os.environ["DB"])  # the engine line

    engine = get_engine()
    with Session(engine) as session:
        session.execute(text("select 1"))
    if os.environ["DISPOSE"] == "1":
        engine.dispose()
    emit(engines=counts("sqlalchemy.Engine"), pool=pools("sqlalchemy", repr(engine.url)))
"""


def test_engine_never_disposed_is_reported_at_exit_with_its_site(tmp_path):
    result = run_child(ENGINE_PROGRAM, DB=str(tmp_path / "app.db"), DISPOSE="0")
    assert result["engines"] == zero(live=1, created=1)
    assert result["pool"] == pool_states(1, 0)
    line = line_of(ENGINE_PROGRAM, "# the engine line")
    expected = (f"1 SQLAlchemy Engine(s) alive at exit and never disposed: 1 created at "
                f"<string>:{line} in get_engine")
    assert expected in result["__stderr__"], result["__stderr__"]


def test_engine_disposed_fixed_twin(tmp_path):
    result = run_child(ENGINE_PROGRAM, DB=str(tmp_path / "app.db"), DISPOSE="1")
    assert result["engines"] == zero(created=1, closed=1)
    assert result["pool"] == pool_states(0, 0)
    assert "never disposed" not in result["__stderr__"]


def test_sqlite3_connections_left_open_and_closed(tmp_path):
    result = run_child("""
    import os, sqlite3
    N, path = int(os.environ["N"]), os.environ["DB"]
    connections = [sqlite3.connect(path) for _ in range(N)]
    during = counts("sqlite3.Connection")
    del connections
    gc.collect()
    leaked = counts("sqlite3.Connection")
    for _ in range(N):
        connection = sqlite3.connect(path)
        connection.execute("select 1")
        connection.close()
    with sqlite3.connect(path) as kept:  # sqlite3's "with" commits; it does not close
        kept.execute("create table if not exists t (x)")
    emit(during=during, leaked=leaked, fixed=counts("sqlite3.Connection"))
    """, DB=str(tmp_path / "plain.db"), N=str(N))
    assert result["during"] == zero(live=N, created=N)
    assert result["leaked"] == zero(created=N, collected_while_open=N)
    assert result["fixed"] == zero(live=1, created=2 * N + 1, closed=N, collected_while_open=N)


THREADS_ALIVE = """
    import os, threading
    N = int(os.environ["N"])
    release = threading.Event()
    threads = [threading.Thread(target=release.wait) for _ in range(N)]
    for thread in threads:
        thread.start()  # the start line
    during, site = counts("threading.Thread"), sites("threading.Thread")
    release.set()
    for thread in threads:
        thread.join()
    emit(during=during, after=counts("threading.Thread"), site=site)
"""


def test_threads_alive_then_ended():
    result = run_child(THREADS_ALIVE, N=str(N))
    assert result["during"] == zero(live=N, created=N)
    # the target (Event.wait) is library code: the site is the start() line
    line = line_of(THREADS_ALIVE, "# the start line")
    assert result["site"] == {f"<string>:{line} in <module>": N}
    assert result["after"] == zero(created=N, closed=N)


THREADS_BY_TARGET = """
import functools, threading
release = threading.Event()
def poll():                                                  # POLL
    release.wait()
def flush(queue):                                            # FLUSH
    release.wait()
class Pump:
    def drain(self):                                         # DRAIN
        release.wait()
class Worker(threading.Thread):
    def run(self):                                           # RUN
        release.wait()
def background(thread):
    thread.start()                                           # START
    return thread
threads = [background(threading.Thread(target=poll)) for _ in range(3)]
threads += [background(threading.Thread(target=functools.partial(flush, "q")))
            for _ in range(2)]
threads.append(background(threading.Thread(target=Pump().drain)))
threads.append(background(Worker()))
threads.append(background(threading.Thread(target=release.wait)))  # library code
site = sites("threading.Thread")
release.set()
for thread in threads:
    thread.join()
emit(site=site, after=counts("threading.Thread"))
"""


def test_threads_are_counted_by_their_targets_site():
    # One helper starts every thread (a shared "run in background"
    # function): by the start() line alone they would be one site. By
    # target, each function, partial, bound method and subclass run() is
    # its own site, at its definition's line; a library target (Event.wait)
    # keeps the line that started it.
    result = run_child(THREADS_BY_TARGET)
    at = functools.partial(line_of, THREADS_BY_TARGET)
    assert result["site"] == {f"<string>:{at('# POLL')} in poll": 3,
                              f"<string>:{at('# FLUSH')} in flush": 2,
                              f"<string>:{at('# DRAIN')} in Pump.drain": 1,
                              f"<string>:{at('# RUN')} in Worker.run": 1,
                              f"<string>:{at('# START')} in background": 1}
    assert result["after"] == zero(created=8, closed=8)


def test_thread_a_library_starts_is_the_librarys_call_not_the_adapters():
    # No application frame on the starting thread's stack (a pool worker
    # running a stdlib bound method): the site is the innermost frame
    # outside leakprobe's own code, not the threading adapter's line.
    result = run_child("""
    import threading, time
    from concurrent.futures import ThreadPoolExecutor
    release = threading.Event()
    started = threading.Thread(target=release.wait)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(started.start).result()
    site = sites("threading.Thread")
    release.set()
    started.join()
    emit(site=site)
    """)
    # Live: the thread the worker started (the worker ended with the pool).
    live = {s: n for s, n in result["site"].items() if n}
    assert list(live.values()) == [1], live
    site = next(iter(live))
    assert "/leakprobe/" not in site and "concurrent/futures/thread.py" in site, site


def test_popen_never_waited_and_waited():
    result = run_child("""
    import os, subprocess
    N = int(os.environ["N"])
    children = [subprocess.Popen(["true"]) for _ in range(N)]
    during = counts("subprocess.Popen")
    for child in children:  # zombies until waited
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    del children, child
    gc.collect()
    leaked = counts("subprocess.Popen")
    for _ in range(N):
        subprocess.run(["true"], check=True)
    waited = subprocess.Popen(["true"])
    waited.wait()
    polled = subprocess.Popen(["true"])
    while polled.poll() is None:
        pass
    emit(during=during, leaked=leaked, fixed=counts("subprocess.Popen"))
    """, N=str(N))
    assert result["during"] == zero(live=N, created=N)
    assert result["leaked"] == zero(created=N, collected_while_open=N)
    assert result["fixed"] == zero(created=2 * N + 2, closed=N + 2, collected_while_open=N)


def test_leaking_clients_show_in_the_exposition_by_type_and_site(upstream):
    body = AI_CLIENT + """
    from leakprobe import _native
    clients = [OpenAIClient(os.environ["UPSTREAM"]) for _ in range(N)]
    for i, client in enumerate(clients):
        client.generate(f"prompt {i}")
    emit(text=_native.collect_text())
    """
    text = run_child(body, UPSTREAM=upstream, N=str(N))["text"]
    families = parse_exposition(text)
    line = line_of(body, "the seed's client line")
    assert value(families, "leakprobe_objects_live", type="httpx.Client") == N
    assert value(families, "leakprobe_objects_site_live", type="httpx.Client",
                 site=f"<string>:{line} in BaseAIClient.__init__") == N
    assert value(families, "leakprobe_objects_closed_total", type="httpx.Client") == 0


def test_pool_connections_and_owned_sockets_are_exported(upstream, tmp_path):
    # The sampler pushes the pools' states every LEAKPROBE_SAMPLE_INTERVAL:
    # the program waits for a scrape that shows them, as Prometheus would.
    body = AI_CLIENT + SQLITE_ENGINE + """
    import time
    from leakprobe import _native
    clients = [OpenAIClient(os.environ["UPSTREAM"]) for _ in range(N)]
    for i, client in enumerate(clients):
        client.generate(f"prompt {i}")
    sessions = leak_sessions()
    with engine.connect() as connection:
        connection.invalidate()
    deadline = time.monotonic() + 20
    while 'state="checked_out"' not in _native.collect_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # one more sampler pass: every figure of this moment
    emit(text=_native.collect_text(), label=label)
    """
    result = run_child(body, UPSTREAM=upstream, N=str(N), DB=str(tmp_path / "app.db"),
                       POOL="null", LEAKPROBE_SAMPLE_INTERVAL="0.05")
    families, label = parse_exposition(result["text"]), result["label"]
    assert value(families, "leakprobe_pool_connections", library="sqlalchemy", pool=label,
                 state="checked_out") == N
    assert value(families, "leakprobe_pool_connections", library="sqlalchemy", pool=label,
                 state="open") == N
    assert value(families, "leakprobe_pool_connections_invalidated_total",
                 library="sqlalchemy", pool=label) == 1
    assert value(families, "leakprobe_pool_connections", library="httpcore", pool="all",
                 state="idle") == N
    # by owner type and fd kind (docs/metrics.md): the clients' N TCP sockets
    assert value(families, "leakprobe_owner_open_fds", owner="httpx.Client", kind="tcp") == N
    import shutil
    import subprocess
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required"
    checked = subprocess.run([promtool, "check", "metrics"], input=result["text"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", \
        checked.stdout + checked.stderr
