"""A SQLAlchemy engine created per task and never disposed (seed review,
issue 4, as it goes wrong when ``get_engine()`` is not a singleton).

Each task creates an ``Engine`` on the SQLite file, runs one query and
drops the engine without ``dispose()``: its pool, and the SQLite connection
the pool keeps, are left to the garbage collector. The leak shows as the
growing count of ``sqlalchemy.Engine`` collected while open, attributed to
the ``create_engine`` line. The fixed twin disposes of each engine.
"""

from __future__ import annotations

from _common import WorkDir, options, ticks
from sqlalchemy import create_engine, text


def process_file(url: str, fixed: bool) -> int:
    engine = create_engine(url)  # leak-site
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM items")).scalar_one()
    if fixed:
        engine.dispose()  # the fix
    return count


def main() -> None:
    args = options(__doc__, rate=4.0)
    with WorkDir() as work:
        url = f"sqlite:///{work / 'app.db'}"
        setup = create_engine(url)
        with setup.begin() as connection:
            connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
            connection.execute(text("INSERT INTO items (name) VALUES ('a'), ('b')"))
        setup.dispose()
        for _ in ticks(args.seconds, args.rate):
            process_file(url, args.fixed)


if __name__ == "__main__":
    main()
