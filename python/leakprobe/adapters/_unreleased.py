"""The shutdown report shared by the framework integrations: what a process
still holds when its framework says it is done (a Celery worker or child
shutting down, an ASGI app's lifespan shutdown complete): SQLAlchemy
engines never disposed, httpx clients, ORM and requests sessions never
closed, each with its count and creation site.

One warning line per (type, site) to leakprobe's log and, under
``leakprobe run``, the same rows in the process's run file
(``unreleased``). Each integration decides when (and how often) to call
:func:`report`; this module only reads and writes.
"""

from __future__ import annotations

from typing import Any

from ._common import log

# The owners whose instances still open at shutdown are reported: the
# adapters' tracked types that hold connections.
REPORTED_TYPES = ("sqlalchemy.Engine", "sqlalchemy.orm.Session", "httpx.Client",
                  "httpx.AsyncClient", "requests.Session")


def unreleased() -> list[dict[str, Any]]:
    """The reported owners still open in this process now, as rows
    ``{"type", "site", "count"}``, most first; empty when object tracking
    is off."""
    from .. import _runtime

    try:
        snapshot = _runtime.object_snapshot()
    except RuntimeError:
        return []
    rows = [{"type": stat.type, "site": stat.site_name, "count": stat.count}
            for stat in snapshot.statistics("site") if stat.type in REPORTED_TYPES]
    return sorted(rows, key=lambda r: (-r["count"], r["type"], r["site"]))


def report(what: str) -> list[dict[str, Any]]:
    """Logs what this process still holds, one warning line per row
    prefixed with `what` (e.g. ``"celery child shutdown (pid 42)"``), and
    writes the rows to the run file. Returns the rows."""
    rows = unreleased()
    for row in rows:
        verb = "never disposed" if row["type"] == "sqlalchemy.Engine" else "never closed"
        log("warning", f"{what}: {row['count']} {row['type']} {verb}, created at {row['site']}")
    if not rows:
        # debug: a pool recycling a child per task would log it per task
        log("debug", f"{what}: no engine, client or session left open")
    from .. import _runfile

    _runfile.note_unreleased(rows)
    return rows
