"""sqlite3: connections made by ``sqlite3.connect`` (and ``sqlite3.dbapi2.connect``,
which SQLAlchemy's pysqlite dialect calls).

``sqlite3.Connection`` is a C type that can neither be weakly referenced
nor patched (its methods are read-only), and wrapping or subclassing the
connection would change what the application gets back (its type, its
attributes). So the adapter tracks a stand-in: a small sentinel object that
it registers on the connection as an SQL function (``create_function``
with a name no application uses, ``__leakprobe_open``); SQLite holds the
only reference to it and releases it exactly when the connection is closed
— by ``close()``, or when the connection object is freed. The two are told
apart with ``gc.callbacks``: a ``sqlite3.Connection`` is always part of a
reference cycle (its statement cache refers back to it), so an unclosed one
is freed only by the cyclic garbage collector; a sentinel released while the
collector runs therefore counts as collected while open, one released
outside a collection as closed. The visible effect on the application is
one SQL function on the connection."""

from __future__ import annotations

import gc
from typing import Any

import wrapt

from ._common import Switch, guarded
from ._track import register

SWITCH = Switch("sqlite3")
FUNCTION_NAME = "__leakprobe_open"
_collecting = [False]  # the cyclic collector is running (set by gc.callbacks, under the GIL)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    _collecting[0] = phase == "start"


class _Open:
    """The connection's stand-in: alive exactly while the connection is open."""

    __slots__ = ("__weakref__",)

    def __call__(self) -> int:  # the SQL function: returns 1 if anyone calls it
        return 1

    def __del__(self) -> None:
        if not _collecting[0] and _TRACKED is not None:
            try:
                _TRACKED.closed(self)
            except Exception:
                pass


_TRACKED: Any = None


def install(sqlite3: Any) -> bool:
    global _TRACKED
    _TRACKED = register("sqlite3.Connection")
    gc.callbacks.append(_on_gc)

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        connection = wrapped(*args, **kwargs)
        if SWITCH.on:
            guarded(SWITCH.name, _attach, connection)
        return connection

    modules = {sqlite3}
    dbapi2 = getattr(sqlite3, "dbapi2", None)
    if dbapi2 is not None:
        modules.add(dbapi2)
    for module in modules:
        if getattr(module, "connect", None) is not None:
            wrapt.wrap_function_wrapper(module, "connect", connect)
    return True


def _attach(connection: Any) -> None:
    sentinel = _Open()
    connection.create_function(FUNCTION_NAME, 0, sentinel)
    _TRACKED.created(sentinel)
