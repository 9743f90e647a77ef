"""httpx: ``httpx.Client`` and ``httpx.AsyncClient`` (created by
``__init__``; closed by ``close()``/``__exit__`` and ``aclose()``/
``__aexit__``: httpx's ``__exit__`` does not call ``close()``), and the
connections of httpcore's pools by state (read from the pools on demand:
httpcore has no events)."""

from __future__ import annotations

import contextvars
import sys
import weakref
from typing import Any

from ._common import PoolGauges, Switch, attach_socket, owning, summed_limit
from ._track import track_class

SWITCH = Switch("httpx")
# The AsyncClient sending in this context (a weak reference: the tasks a
# transport spawns copy the context, and may outlive the request).
_SENDING: contextvars.ContextVar[Any] = contextvars.ContextVar("leakprobe_httpx_sending",
                                                               default=None)
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

    # An AsyncClient's connection is made in its task (or one anyio spawns,
    # which copies the context), across awaits: the per-thread owner cannot
    # follow it, so the client is named in a context variable while it
    # sends, and the socket is given to it as soon as httpcore's async
    # network backend has connected it.
    def async_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        async def sending() -> Any:
            if not SWITCH.on:
                return await wrapped(*args, **kwargs)
            token = _SENDING.set(weakref.ref(instance))
            try:
                response = await wrapped(*args, **kwargs)
            finally:
                _SENDING.reset(token)
            own(instance, response)  # a connection made before tracking began
            return response

        return sending()

    def connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        async def connecting() -> Any:
            stream = await wrapped(*args, **kwargs)
            sending = _SENDING.get()
            client = sending() if sending is not None else None
            if client is not None and SWITCH.on:
                attach_socket("httpx", client, stream.get_extra_info("socket"))
            return stream

        return connecting()

    wrapt.wrap_function_wrapper(httpx.Client, "send", send)
    wrapt.wrap_function_wrapper(httpx.AsyncClient, "send", async_send)
    for backend in ("AnyIOBackend", "TrioBackend"):
        # TrioBackend is a placeholder without methods when trio is missing
        backend_class = getattr(httpcore, backend, None)
        for method in ("connect_tcp", "connect_unix_socket"):
            if backend_class is not None and hasattr(backend_class, method):
                wrapt.wrap_function_wrapper(backend_class, method, connect)
    return True
