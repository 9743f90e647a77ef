"""Pools against their size (issue 10 point 2): each instrumented pool
reports its size limit (leakprobe.adapters.pool_limits(),
leakprobe_pool_connections_limit), and the trend series
pool/<library>:<pool> of connections in use gets its time to exhaustion
against it. Real SQLAlchemy on SQLite files: a QueuePool of 2 + 3 overflow
whose sessions are checked out and never closed is flagged, with limit 5
and a finite time to exhaustion; its twin, which closes them, is not. The
two programs run side by side (~14 s), trends every 0.2 s after 1 s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from adapter_support import run_child
from conftest import child_env, parse_exposition, value

# A QueuePool of 2 + 3 overflow on a SQLite file. One session is held for
# 0.6 s at start (the series exists from its first connection in use, so its
# zero baseline is recorded), then every 2.5 s the leaking program checks out
# one more connection through a session it never closes: 0, 1, 2, 3, 4 of 5,
# ~12 samples each. The fixed twin does the same work and closes each session.
PROGRAM = """\
import json, os, sys, time, urllib.request
import leakprobe
leakprobe.start(port=0, trend_interval=0.2, trend_warmup=1, sample_interval=0.1)
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.orm import Session

engine = sqlalchemy.create_engine(f"sqlite:///{sys.argv[1]}", pool_size=2, max_overflow=3,
                                  pool_timeout=2)
LEAK = sys.argv[2] == "leak"
held = []

def query(session):
    return session.execute(text("select 1")).scalar()  # CHECKOUT

first = Session(engine)
query(first)
time.sleep(0.6)
first.close()
started = time.monotonic()
for step in range(1, 5):
    while time.monotonic() < started + 2.5 * step:
        time.sleep(0.05)
    session = Session(engine)
    query(session)
    if LEAK:
        held.append(session)  # never closed: its connection stays checked out
    else:
        session.close()
time.sleep(2.3)
scrape = urllib.request.urlopen(leakprobe.status()["url"], timeout=10).read().decode()
print(json.dumps({"verdicts": [v.to_dict() for v in leakprobe.verdicts()],
                  "label": repr(engine.url), "scrape": scrape,
                  "series": leakprobe.series("pool", "sqlalchemy:" + repr(engine.url))}),
      flush=True)
"""


def _line_of(marker: str) -> int:
    return next(i for i, line in enumerate(PROGRAM.splitlines(), 1) if marker in line)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs the leaking program and its fixed twin at once."""
    directory = tmp_path_factory.mktemp("pools")
    script = directory / "pool_program.py"
    script.write_text(PROGRAM)
    procs = {name: subprocess.Popen(
        [sys.executable, str(script), str(directory / f"{name}.db"), name],
        cwd=directory, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for name in ("leak", "fixed")}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"{name}: {err}"
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"{name} printed no report: {out!r} {err!r}"
        results[name] = json.loads(lines[-1])
    return script, results


def _pool_verdict(result: dict) -> dict | None:
    key = "sqlalchemy:" + result["label"]
    found = [v for v in result["verdicts"] if (v["resource"], v["key"]) == ("pool", key)]
    return found[0] if found else None


def test_sessions_never_closed_exhaust_the_pool_and_are_flagged(runs):
    script, results = runs
    result = results["leak"]
    pool = _pool_verdict(result)
    assert pool is not None, [(v["resource"], v["key"]) for v in result["verdicts"]]
    assert pool["suspected"] is True and pool["reason"] == "growing", pool
    assert pool["unit"] == "connections"
    assert pool["limit"] == 5  # pool_size 2 + max_overflow 3
    assert pool["last_value"] == 4
    # One connection every 2.5 s: 0.4 a second, within the robust slope's spread.
    assert 0.2 < pool["growth_per_second"] < 0.8, pool
    tte = pool["time_to_exhaustion_seconds"]
    assert tte is not None
    assert tte == pytest.approx((5 - 4) / pool["growth_per_second"], rel=1e-6)
    # Where the connections were checked out: the session's query, in the program.
    assert pool["site"] == f"{script}:{_line_of('# CHECKOUT')} in query"
    assert {"filename": str(script), "lineno": _line_of("# CHECKOUT"),
            "function": "query"} in pool["stack"]
    # The history: the baseline 0, then one more connection per step.
    values = [v for _t, v in result["series"]]
    assert values[0] >= 1 and 0 in values and values[-1] == 4
    assert sorted(set(values)) == [0, 1, 2, 3, 4]
    families = parse_exposition(result["scrape"])
    labels = {"resource": "pool", "key": "sqlalchemy:" + result["label"]}
    assert value(families, "leakprobe_pool_connections_limit", library="sqlalchemy",
                 pool=result["label"]) == 5
    assert value(families, "leakprobe_leak_suspected", **labels) == 1
    assert value(families, "leakprobe_growth_connections_per_second", **labels) > 0
    assert value(families, "leakprobe_time_to_exhaustion_seconds", **labels) > 0
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required"
    checked = subprocess.run([promtool, "check", "metrics"], input=result["scrape"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_sessions_closed_are_not_flagged(runs):
    _script, results = runs
    result = results["fixed"]
    pool = _pool_verdict(result)
    assert pool is not None  # the series exists (its first session was held)
    assert pool["suspected"] is False and pool["reason"] != "warmup", pool
    assert pool["limit"] == 5
    assert pool["last_value"] == 0
    assert pool["time_to_exhaustion_seconds"] is None
    assert not [v for v in result["verdicts"] if v["suspected"]], \
        [(v["resource"], v["key"], v["reason"]) for v in result["verdicts"] if v["suspected"]]
    families = parse_exposition(result["scrape"])
    assert value(families, "leakprobe_leak_suspected", resource="pool",
                 key="sqlalchemy:" + result["label"]) == 0


def test_pool_limits_follow_each_librarys_semantics(tmp_path):
    # Every pool class the adapters know, made for real (no request needed:
    # httpx makes its httpcore pool, urllib3 its queue, at construction).
    body = """
    import os, time
    import httpx, sqlalchemy, urllib3
    from sqlalchemy import pool as pools
    from leakprobe import _native

    db = os.environ["DB"]
    def limits():
        return {(library, pool): limit for library, pool, limit in adapters.pool_limits()}
    def limit_of(**kwargs):
        engine = sqlalchemy.create_engine(f"sqlite:///{db}-{len(kwargs)}", **kwargs)
        from leakprobe.adapters import _sqlalchemy
        limit = _sqlalchemy.pool_limit(engine.pool)
        engine.dispose()
        return limit
    queue = limit_of(pool_size=2, max_overflow=3, poolclass=pools.QueuePool)
    unlimited_overflow = limit_of(pool_size=2, max_overflow=-1, poolclass=pools.QueuePool)
    unlimited_size = limit_of(pool_size=0, max_overflow=3, poolclass=pools.QueuePool)
    null = limit_of(poolclass=pools.NullPool)
    static = limit_of(poolclass=pools.StaticPool)
    singleton = limit_of(poolclass=pools.SingletonThreadPool)
    asserting = limit_of(poolclass=pools.AssertionPool)
    # Two engines of one URL share its label: their limits add up.
    twins = [sqlalchemy.create_engine(f"sqlite:///{db}", pool_size=2, max_overflow=1,
                                      poolclass=pools.QueuePool) for _ in range(2)]
    label = repr(twins[0].url)
    sqlalchemy_limit = limits()[("sqlalchemy", label)]
    clients = [httpx.Client(limits=httpx.Limits(max_connections=7)),
               httpx.Client(limits=httpx.Limits(max_connections=3))]
    httpcore_bounded = limits()[("httpcore", "all")]
    blocking = [urllib3.HTTPConnectionPool("127.0.0.1", 9, maxsize=4, block=True),
                urllib3.HTTPConnectionPool("127.0.0.1", 9, maxsize=2, block=True)]
    urllib3_blocking = limits()[("urllib3", "all")]
    # Wait for a sampler pass that exports them.
    deadline = time.monotonic() + 10
    while "leakprobe_pool_connections_limit" not in _native.collect_text() \\
            and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    text = _native.collect_text()
    for engine in twins:
        engine.dispose()
    unbounded_client = httpx.Client(limits=httpx.Limits(max_connections=None))
    loose = urllib3.HTTPConnectionPool("127.0.0.1", 9, maxsize=4, block=False)
    after = limits()
    emit(queue=queue, unlimited_overflow=unlimited_overflow, unlimited_size=unlimited_size,
         null=null, static=static, singleton=singleton, asserting=asserting,
         twins=sqlalchemy_limit, label=label, httpcore=httpcore_bounded,
         urllib3=urllib3_blocking, text=text,
         httpcore_after=after[("httpcore", "all")], urllib3_after=after[("urllib3", "all")])
    """
    first = "import requests  # the urllib3 adapter is the requests one"
    result = run_child(body, first=first, DB=str(tmp_path / "app.db"),
                       LEAKPROBE_SAMPLE_INTERVAL="0.05")
    assert result["queue"] == 5
    assert result["unlimited_overflow"] is None
    assert result["unlimited_size"] is None
    assert result["null"] is None
    assert result["static"] is None
    assert result["singleton"] is None
    assert result["asserting"] == 1
    assert result["twins"] == 6  # (2 + 1) x 2 engines of one URL
    assert result["httpcore"] == 10  # 7 + 3
    assert result["urllib3"] == 6  # 4 + 2, both blocking
    assert result["httpcore_after"] is None  # one client without a limit
    assert result["urllib3_after"] is None  # one pool that does not block
    families = parse_exposition(result["text"])
    assert value(families, "leakprobe_pool_connections_limit", library="sqlalchemy",
                 pool=result["label"]) == 6
    assert value(families, "leakprobe_pool_connections_limit", library="httpcore",
                 pool="all") == 10
    assert value(families, "leakprobe_pool_connections_limit", library="urllib3",
                 pool="all") == 6


def test_static_pool_overlapping_checkouts_count_one_connection():
    # StaticPool hands its one connection to every session at once, and
    # SQLAlchemy sends one checkin for overlapping checkouts: counted per
    # checkout, checked_out climbed by one per overlap (a false pool leak).
    body = """
    import gc
    import sqlalchemy
    from sqlalchemy import text
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import StaticPool

    engine = sqlalchemy.create_engine("sqlite://", poolclass=StaticPool)
    label = repr(engine.url)
    rounds = []
    for _ in range(5):
        a, b = Session(engine), Session(engine)
        a.execute(text("select 1"))
        b.execute(text("select 1"))
        out = pools("sqlalchemy", label)["checked_out"]
        b.close()
        a.close()
        rounds.append((out, pools("sqlalchemy", label)["checked_out"]))
    del a, b
    gc.collect()
    fairies = [(t.live, t.collected_while_open) for t in leakprobe.objects()
               if t.name == "sqlalchemy.PoolProxiedConnection"]
    engine.dispose()
    emit(rounds=rounds, fairies=fairies)
    """
    result = run_child(body)
    assert result["rounds"] == [[1, 0]] * 5
    assert result["fairies"] == [[0, 0]]  # none left open, none collected open
