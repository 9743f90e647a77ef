"""The SQLAlchemy adapter against PostgreSQL (Debian's server, a throwaway
cluster on 127.0.0.1 started here and stopped after), through psycopg 3:
the seed's sessions-never-closed pattern and its fixed twin, under NullPool
and QueuePool, with exact counts of sessions, checked-out connections and
pool connections by state."""

from __future__ import annotations

import pytest
from adapter_support import PostgresServer, line_of, run_child

N = 12


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server.url
    server.stop()


PROGRAM = """
    import os
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool, QueuePool
    N = int(os.environ["N"])
    poolclass = {"null": NullPool, "queue": QueuePool}[os.environ["POOL"]]
    engine = create_engine(os.environ["PG_URL"], poolclass=poolclass)  # the engine line
    label = repr(engine.url)

    def figures():
        return dict(sessions=counts("sqlalchemy.orm.Session"), pool=pools("sqlalchemy", label),
                    checkouts=counts("sqlalchemy.PoolProxiedConnection"))

    if os.environ["FIXED"] == "1":
        for _ in range(N):
            with Session(engine) as session:
                session.execute(text("select 1"))
        gc.collect()
        emit(after=figures())
    else:
        sessions = []
        for _ in range(N):
            session = Session(engine)
            session.execute(text("select pg_backend_pid()"))
            sessions.append(session)
        during = figures()
        # (kind, owner's creation site) of every open fd the engine owns
        during["sockets"] = sorted([r.kind, str(r.owner.site)] for r in leakprobe.open_fds()
                                   if r.owner is not None and r.owner.type == "sqlalchemy.Engine")
        del sessions, session
        gc.collect()
        emit(during=during, after=figures())
"""


def zero(**over: int) -> dict[str, int]:
    return {"live": 0, "created": 0, "closed": 0, "collected_while_open": 0, **over}


def states(open_: int, out: int) -> dict[str, int]:
    return {"open": open_, "checked_out": out, "checked_in": open_ - out, "invalidated": 0}


@pytest.mark.parametrize(("pool", "kept"), [("null", 0), ("queue", 5)])
def test_sessions_never_closed(postgres, pool, kept):
    result = run_child(PROGRAM, PG_URL=postgres, POOL=pool, FIXED="0", N=str(N))
    assert result["during"]["sessions"] == zero(live=N, created=N)
    assert result["during"]["pool"] == states(N, N)
    # each connection's socket is owned by the engine (psycopg's fileno()):
    # TCP, since the URL names 127.0.0.1 (not the cluster's unix socket
    # directory), attributed to the line that created the engine
    assert postgres.startswith("postgresql+psycopg://postgres@127.0.0.1:"), postgres
    site = f"<string>:{line_of(PROGRAM, '# the engine line')} in <module>"
    assert result["during"]["sockets"] == [["tcp", site]] * N, result["during"]
    assert result["during"]["checkouts"] == zero(live=N, created=N)
    assert result["after"]["sessions"] == zero(created=N, collected_while_open=N)
    assert result["after"]["checkouts"] == zero(created=N, collected_while_open=N)
    assert result["after"]["pool"] == states(kept, 0)


@pytest.mark.parametrize(("pool", "kept"), [("null", 0), ("queue", 1)])
def test_sessions_fixed_twin(postgres, pool, kept):
    after = run_child(PROGRAM, PG_URL=postgres, POOL=pool, FIXED="1", N=str(N))["after"]
    assert after["sessions"] == zero(created=N, closed=N)
    assert after["checkouts"] == zero(created=N, closed=N)
    assert after["pool"] == states(kept, 0)


def test_invalidated_connections_are_counted(postgres):
    result = run_child("""
    import os
    from sqlalchemy import create_engine, text
    engine = create_engine(os.environ["PG_URL"])
    with engine.connect() as connection:
        connection.execute(text("select 1"))
        connection.invalidate()
    with engine.connect() as connection:
        connection.execute(text("select 1"))
    engine.dispose()
    emit(pool=pools("sqlalchemy", repr(engine.url)), engines=counts("sqlalchemy.Engine"))
    """, PG_URL=postgres)
    assert result["pool"] == {"open": 0, "checked_out": 0, "checked_in": 0, "invalidated": 1}
    assert result["engines"] == zero(created=1, closed=1)
