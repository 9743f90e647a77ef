"""Control: a connection pool warming up to its size, then steady (honest
growth).

A SQLAlchemy ``QueuePool`` (``pool_size=5``, no overflow) on a SQLite file
serves a load whose concurrency rises by one worker every 2 seconds up to
5: the pool opens a new connection (one more open file) and the executor a
new thread each time the load outgrows them, until both reach 5 and stay.
Open files, threads and checked-out connections grow, then flatten:
nothing may be flagged.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from _common import WorkDir, options, ticks
from sqlalchemy import create_engine, text
from sqlalchemy.pool import QueuePool

POOL_SIZE = 5
RAMP_SECONDS = 2.0  # one more concurrent worker every RAMP_SECONDS
HOLD_SECONDS = 0.8  # how long a task keeps its connection


def query(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM items")).scalar_one()
        time.sleep(HOLD_SECONDS)
    return count


def main() -> None:
    args = options(__doc__, rate=10.0, fixed=False)
    with WorkDir() as work:
        engine = create_engine(f"sqlite:///{work / 'app.db'}", poolclass=QueuePool,
                               pool_size=POOL_SIZE, max_overflow=0, pool_timeout=30)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=POOL_SIZE) as executor:
            running: list = []
            for _ in ticks(args.seconds, args.rate):
                running = [future for future in running if not future.done()]
                workers = min(POOL_SIZE, 1 + int((time.monotonic() - start) / RAMP_SECONDS))
                if len(running) < workers:
                    running.append(executor.submit(query, engine))
        engine.dispose()


if __name__ == "__main__":
    main()
