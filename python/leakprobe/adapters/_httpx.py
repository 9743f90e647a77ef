"""httpx: ``httpx.Client`` and ``httpx.AsyncClient`` (created by
``__init__``; closed by ``close()``/``__exit__`` and ``aclose()``/
``__aexit__``: httpx's ``__exit__`` does not call ``close()``), and the
connections of httpcore's pools by state (read from the pools on demand:
httpcore has no events)."""

from __future__ import annotations

import sys
import weakref
from typing import Any

from ._common import PoolGauges, Switch, attach_socket, owning, summed_limit
from ._track import track_class

SWITCH = Switch("httpx")
_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()  # live httpcore pools, sync and async
GAUGES = (PoolGauges("httpcore"),)


def _probe() -> dict[str, dict[str, int]]:
    active = idle = 0
    for pool in list(_POOLS):
        for connection in pool.connections:  # a copy, taken under the GIL
            if connection.is_closed():
                continue
            if connection.is_idle():
                idle += 1
            else:
                active += 1
    return {"all": {"active": active, "idle": idle}}


def _limits() -> dict[str, int | None]:
    # httpcore keeps max_connections as _max_connections, sys.maxsize for None
    # (no limit); a pool without the attribute has an unknown one: none.
    limits = [getattr(pool, "_max_connections", None) for pool in list(_POOLS)]
    return {"all": summed_limit(None if limit is None or limit >= sys.maxsize else limit
                                for limit in limits)}


GAUGES[0].probe = _probe
GAUGES[0].limit_probe = _limits


def install(httpx: Any) -> bool:
    # __exit__/__aexit__ are wrapped by track_type too: httpx's __exit__
    # does not call close()
    track_class(httpx.Client, "close", "httpx.Client")
    track_class(httpx.AsyncClient, "aclose", "httpx.AsyncClient")

    import httpcore  # imported by httpx already: this is a lookup

    import wrapt

    def remember(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            _POOLS.add(instance)
        except TypeError:  # a subclass with __slots__ and no __weakref__
            pass
        return result

    wrapt.wrap_function_wrapper(httpcore.ConnectionPool, "__init__", remember)
    wrapt.wrap_function_wrapper(httpcore.AsyncConnectionPool, "__init__", remember)

    # The socket a response came over is owned by the client that sent it
    # (httpcore's public "network_stream" extension; sync and async alike,
    # also when anyio connected in a task of its own).
    def own(client: Any, response: Any) -> None:
        stream = response.extensions.get("network_stream")
        if stream is not None:
            attach_socket("httpx", client, stream.get_extra_info("socket"))

    # A sync client connects on this thread, inside send: its sockets are
    # owned from their creation, also while a request waits or hangs.
    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not SWITCH.on:
            return wrapped(*args, **kwargs)
        with owning("httpx", instance):
            response = wrapped(*args, **kwargs)
        own(instance, response)  # a connection made before tracking began
        return response

    def async_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        async def sending() -> Any:
            response = await wrapped(*args, **kwargs)
            if SWITCH.on:
                own(instance, response)
            return response

        return sending()

    wrapt.wrap_function_wrapper(httpx.Client, "send", send)
    wrapt.wrap_function_wrapper(httpx.AsyncClient, "send", async_send)
    return True
