"""requests: ``requests.Session`` (created by ``__init__``; closed by
``close()``, which ``__exit__`` calls), and the connections of urllib3's
pools by state (read from the pools' queues on demand: urllib3 has no
events)."""

from __future__ import annotations

import weakref
from typing import Any

from ._common import PoolGauges, Switch, owning, summed_limit
from ._track import track_class

SWITCH = Switch("requests")
_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()  # live urllib3 HTTP(S)ConnectionPools
GAUGES = (PoolGauges("urllib3"),)


def _probe() -> dict[str, dict[str, int]]:
    active = idle = 0
    for pool in list(_POOLS):
        queue = pool.pool
        if queue is None:  # the pool was closed
            continue
        slots = list(queue.queue)  # one C-level copy of the deque under the GIL
        # A slot is None (free) or an idle connection; a slot taken out is
        # a connection serving a request (connections made beyond maxsize
        # when the pool does not block are not seen).
        active += max(0, queue.maxsize - len(slots))
        idle += sum(1 for conn in slots if conn is not None and getattr(conn, "sock", None) is not None)
    return {"all": {"active": active, "idle": idle}}


def _limits() -> dict[str, int | None]:
    # maxsize bounds the connections in use only for a pool that blocks; one
    # that does not makes more (and discards them on return): no limit.
    limits: list[int | None] = []
    for pool in list(_POOLS):
        queue = pool.pool
        if queue is None:  # closed
            continue
        limits.append(queue.maxsize if getattr(pool, "block", False) else None)
    return {"all": summed_limit(limits)}


GAUGES[0].probe = _probe
GAUGES[0].limit_probe = _limits


def install(requests: Any) -> bool:
    track_class(requests.Session, "close", "requests.Session")

    import urllib3.connectionpool  # imported by requests already: a lookup

    import wrapt

    def remember(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            _POOLS.add(instance)
        except TypeError:
            pass
        return result

    wrapt.wrap_function_wrapper(urllib3.connectionpool.HTTPConnectionPool, "__init__", remember)

    # Sockets a session's adapters connect are owned by the session
    # (requests is synchronous: the connect runs on this thread, inside send).
    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not SWITCH.on:
            return wrapped(*args, **kwargs)
        with owning("requests", instance):
            return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(requests.Session, "send", send)
    return True
