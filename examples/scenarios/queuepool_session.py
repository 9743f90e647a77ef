"""SQLAlchemy sessions kept checked out of a QueuePool: a scoped_session per
request never removed (issue 10 point 2: a pool's size).

The service scopes its sessions by request id (``scoped_session`` with a
``scopefunc``) but never calls ``Sessions.remove()`` when a request ends:
the registry keeps every request's session, each with its transaction open
and its pooled connection checked out. The pool (``pool_size=10``,
``max_overflow=30``) runs out at 40 connections in use, when a request
waits ``pool_timeout`` and then fails (1.3 requests a second: 32 in use
after 25 s). The leak shows as the pool's
connections in use climbing towards its size (``pool`` series, with a
finite time to exhaustion), attributed to the line that checked them out.
The fixed twin removes the request's session at the end of each request
(its pool series exists: a request holds its connection for 0.3 s, and the
request rate is not a multiple of the sampler's 1 s, so samples see some).
"""

from __future__ import annotations

import itertools
import time

from _common import options, ticks
from sqlalchemy import create_engine, text
from sqlalchemy.orm import scoped_session, sessionmaker
from sqlalchemy.pool import QueuePool

_request_ids = itertools.count()
_current = {"id": 0}
HOLD_SECONDS = 0.3  # how long a request keeps its session busy


def handle_request(sessions: scoped_session, fixed: bool) -> int:
    _current["id"] = next(_request_ids)
    session = sessions()
    value = session.execute(text("SELECT 1")).scalar_one()  # leak-site
    time.sleep(HOLD_SECONDS)
    if fixed:
        sessions.remove()  # the fix: the request's session closed and forgotten
    return value


def main() -> None:
    args = options(__doc__, rate=1.3)
    # An in-memory SQLite database per connection: the engine's URL, the
    # pool's label, is the same in every run ("sqlite://").
    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=10, max_overflow=30,
                           pool_timeout=5)
    sessions = scoped_session(sessionmaker(engine), scopefunc=lambda: _current["id"])
    for _ in ticks(args.seconds, args.rate):
        handle_request(sessions, args.fixed)
    sessions.registry.clear()
    engine.dispose()


if __name__ == "__main__":
    main()
