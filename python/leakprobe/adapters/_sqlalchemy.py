"""SQLAlchemy 2.x: ``Engine`` (created by ``__init__``, closed by
``dispose()``; the engines still undisposed at interpreter exit are logged
with their creation sites), the connections of each engine's pool through
the pool events (``connect``, ``checkout``, ``checkin``, ``invalidate``,
``detach``, ``close``: listened on the engine's pool, and carried by
SQLAlchemy to the pool that ``dispose()`` makes next), each checked-out
connection (``PoolProxiedConnection``: from ``checkout`` to ``checkin``, so
one the garbage collector finds still checked out counts as collected while
open), and ORM ``Session`` (created by ``__init__``, closed by ``close()``,
which ``__exit__`` calls, or ``invalidate()``)."""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from typing import Any

import wrapt

from ._common import (PoolGauges, Switch, attach_socket, guarded, internal_error, log,
                      summed_limit)
from ._track import register, track_class

SWITCH = Switch("sqlalchemy")
GAUGES = (PoolGauges("sqlalchemy"),)
_ENGINES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # undisposed -> site
# every live instrumented engine -> its pool label (the label's size limit)
_LABELS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_prefixes: tuple[str, ...] | None = None
_LIBRARY_MODULES = ("sqlalchemy", "leakprobe", "wrapt")


def _site() -> str:
    """The innermost application frame of the caller, ``path:line in function``
    (the attribution-site rule), computed in Python: engines are few."""
    global _prefixes
    if _prefixes is None:
        from .._runtime import _library_prefixes

        _prefixes = tuple(_library_prefixes())
    frame: Any = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        module = str(frame.f_globals.get("__name__", ""))
        # code that libraries generate has a "<...>" file name (SQLAlchemy's
        # decorators): told apart by the module it runs in
        if not path.startswith("<frozen") and module.split(".")[0] not in _LIBRARY_MODULES \
                and not os.path.abspath(path).startswith(_prefixes):
            return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "<unknown>"


def _label(engine: Any) -> str:
    return GAUGES[0].label(repr(engine.url))  # repr hides the password


def _listen_pool(event: Any, pool: Any, label: str, fairies: Any, engine: Any) -> None:
    gauges = GAUGES[0]
    out: dict[int, Any] = {}  # id(connection record) -> weakref to its checked-out fairy
    engine_ref = weakref.ref(engine)

    def connect(dbapi_connection: Any, record: Any) -> None:
        gauges.add(label, "open", 1)
        # The connection's socket is owned by the engine, when the driver
        # tells its fd (psycopg and psycopg2: fileno(); sqlite3 has none).
        owner = engine_ref()
        if owner is not None and SWITCH.on and hasattr(dbapi_connection, "fileno"):
            attach_socket(SWITCH.name, owner, dbapi_connection)

    def close(dbapi_connection: Any, record: Any) -> None:
        gauges.add(label, "open", -1)

    def checkout(dbapi_connection: Any, record: Any, fairy: Any) -> None:
        if id(record) in out:
            # A pool that shares one connection (StaticPool) handed it out
            # again: still one connection in use, and SQLAlchemy sends one
            # checkin for the lot (counted twice, checked_out would climb
            # with every overlap: a false pool leak).
            return
        gauges.add(label, "checked_out", 1)
        out[id(record)] = weakref.ref(fairy)
        if SWITCH.on:
            guarded(SWITCH.name, fairies.created, fairy)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        returned(record)

    def returned(record: Any) -> None:
        ref = out.pop(id(record), None)
        if ref is None:
            return
        gauges.add(label, "checked_out", -1)
        fairy = ref()
        if fairy is not None and SWITCH.on:  # else: collected while checked out
            guarded(SWITCH.name, fairies.closed, fairy)

    def invalidate(dbapi_connection: Any, record: Any, exception: Any) -> None:
        gauges.add(label, "invalidated", 1)

    def detach(dbapi_connection: Any, record: Any) -> None:
        gauges.add(label, "open", -1)  # the pool no longer holds it
        returned(record)

    gauges.add(label, "open", 0)
    gauges.add(label, "checked_out", 0)
    gauges.add(label, "invalidated", 0)
    for name, function in (("connect", connect), ("close", close), ("checkout", checkout),
                           ("checkin", checkin), ("invalidate", invalidate),
                           ("detach", detach)):
        event.listen(pool, name, function)


def _probe() -> dict[str, dict[str, int]]:
    counts = {label: dict(states) for label, states in list(GAUGES[0].counts.items())}
    for states in counts.values():
        states["checked_in"] = max(0, states.get("open", 0) - states.get("checked_out", 0))
    return counts


def pool_limit(pool: Any) -> int | None:
    """The connections checked out at which `pool` makes the next checkout
    wait (or fail): QueuePool and its asyncio variants ``pool_size +
    max_overflow`` (none when either is unlimited), AssertionPool 1; none
    for the pools that never make a caller wait (NullPool opens a connection
    per checkout, StaticPool shares one, SingletonThreadPool keeps one per
    thread)."""
    from sqlalchemy import pool as pools  # imported by sqlalchemy already: a lookup

    if isinstance(pool, pools.QueuePool):
        overflow = getattr(pool, "_max_overflow", -1)  # -1 also when pool_size is 0
        size = pool.size()
        if overflow < 0 or size <= 0:
            return None
        return int(size) + int(overflow)
    if isinstance(pool, pools.AssertionPool):
        return 1
    return None


def _limits() -> dict[str, int | None]:
    by_label: dict[str, list[int | None]] = {}
    for engine, label in list(_LABELS.items()):
        by_label.setdefault(label, []).append(pool_limit(engine.pool))
    return {label: summed_limit(limits) for label, limits in by_label.items()}


def install(sqlalchemy: Any) -> bool:
    version = getattr(sqlalchemy, "__version__", "0")
    if int(version.split(".")[0]) < 2:
        log("info", f"SQLAlchemy {version} is not instrumented: the adapter needs 2.x")
        return False
    from sqlalchemy import event  # imported by sqlalchemy already: lookups
    from sqlalchemy.engine import base

    engines = register("sqlalchemy.Engine")
    fairies = register("sqlalchemy.PoolProxiedConnection")

    def engine_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if SWITCH.on:
            try:
                engines.created(instance)
                _ENGINES[instance] = _site()
                label = _label(instance)
                _listen_pool(event, instance.pool, label, fairies, instance)
                _LABELS[instance] = label
            except Exception as exc:
                internal_error(SWITCH.name, exc)
        return result

    def engine_dispose(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            if SWITCH.on:
                guarded(SWITCH.name, engines.closed, instance)
                _ENGINES.pop(instance, None)

    wrapt.wrap_function_wrapper(base.Engine, "__init__", engine_init)
    wrapt.wrap_function_wrapper(base.Engine, "dispose", engine_dispose)
    GAUGES[0].probe = _probe
    GAUGES[0].limit_probe = _limits
    atexit.register(_report_engines)
    wrapt.register_post_import_hook(_install_orm, "sqlalchemy.orm.session")
    return True


def _install_orm(session_module: Any) -> None:
    try:
        track_class(session_module.Session, ("close", "invalidate"), "sqlalchemy.orm.Session")
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def undisposed_engines() -> list[str]:
    """Creation sites of the engines alive and never disposed, one per engine."""
    return sorted(_ENGINES.values())


def _report_engines() -> None:
    if not SWITCH.on:
        return
    sites = undisposed_engines()
    if not sites:
        return
    by_site: dict[str, int] = {}
    for site in sites:
        by_site[site] = by_site.get(site, 0) + 1
    listed = "; ".join(f"{count} created at {site}" for site, count in sorted(by_site.items()))
    log("warning", f"{len(sites)} SQLAlchemy Engine(s) alive at exit and never disposed: "
        f"{listed}")
