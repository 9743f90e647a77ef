"""ASGI: per-route attribution and a report at lifespan shutdown
(docs/multiprocess.md, "FastAPI, Starlette and other ASGI apps").

``LeakprobeMiddleware`` is a pure ASGI middleware (it wraps ``app`` and
is itself an ASGI app; no Starlette ``BaseHTTPMiddleware``)::

    app.add_middleware(LeakprobeMiddleware)      # FastAPI, Starlette
    app = LeakprobeMiddleware(app)               # any ASGI app

With FastAPI or Starlette it need not be added: the ``asgi`` adapter
(``LEAKPROBE_ADAPTERS``) wraps every Starlette or FastAPI app's middleware
stack with it when the stack is built (at the app's first call). It is
never applied twice to one request: an app that also adds it by hand, or
a mounted sub-app, passes the request through.

- ``http`` scopes: each request is one run of a unit of work of kind
  ``route`` (leakprobe._work), named ``"<METHOD> <route template>"``, e.g.
  ``"GET /items/{item_id}"``: the template of the route Starlette matched
  (``scope["route"]``, with the prefixes of the mounts it sits in), never
  the raw path. A request that matched no route is counted under
  ``"<unmatched>"``; a method outside the standard ones as ``OTHER``. The
  run ends when the app returns (after the last body chunk of a streaming
  response, and after background tasks), raises or is cancelled (a client
  that disconnected).
- ``lifespan`` scopes: when the app sends ``lifespan.shutdown.complete``
  (or ``.failed``), whatever shutdown handlers it has or has not, the
  engines, clients and sessions still open are reported with their
  creation sites (leakprobe.adapters._unreleased: log and run file), once
  per process, before the message goes on to the server.
- ``websocket`` and other scopes pass through untouched.

Nothing here raises into the application: an internal error is counted
as the ``asgi`` adapter's (``leakprobe.adapters.errors()``). While
leakprobe is not running the middleware only calls through.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import _runtime, _work

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["LeakprobeMiddleware", "route_name", "UNMATCHED"]

KIND = "route"
UNMATCHED = "<unmatched>"
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                     "CONNECT"))
_SEEN = "leakprobe.asgi"  # scope key: a LeakprobeMiddleware already handles this scope
_SHUTDOWN = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")
_MAX_DEPTH = 8  # mounts within mounts searched for a route's prefix
_MAX_CACHED = 1024
# (router id, route id) -> (router, route, the prefix of the mounts above the route)
_templates: dict[tuple[int, int], tuple[Any, Any, str]] = {}
_reported: set[int] = set()  # pids whose lifespan shutdown report was made
ADAPTER = "asgi"


def _running() -> bool:
    return _runtime._state is not None


def _error(exc: BaseException) -> None:
    from ..adapters._common import internal_error

    internal_error(ADAPTER, exc)


def _prefix(routes: Any, target: Any, depth: int) -> str | None:
    """The path prefix of the mounts between `routes` and `target`, or
    None if `target` is not among them."""
    for route in routes:
        if route is target:
            return ""
        inner = getattr(route, "routes", None) if depth < _MAX_DEPTH else None
        if not inner:
            continue
        found = _prefix(inner, target, depth + 1)
        if found is not None:
            # A Mount's path_format is its path + "/{path}"; a Host adds none.
            mount = getattr(route, "path_format", "")
            mount = mount.removesuffix("/{path}") if isinstance(mount, str) else ""
            return mount + found
    return None


def _template(scope: Scope) -> str | None:
    route = scope.get("route")
    if route is None:
        return None
    path = getattr(route, "path_format", None)
    # FastAPI 0.16x includes routers lazily: the matched route keeps the
    # path it was declared with, and the path with the include's prefixes
    # is in its "effective route context" in the scope.
    fastapi = scope.get("fastapi")
    effective = fastapi.get("effective_route_context") if isinstance(fastapi, dict) else None
    if getattr(effective, "original_route", None) is route:
        full = getattr(effective, "path_format", None)
        path = full if isinstance(full, str) and full else path
    if not isinstance(path, str):
        return None
    router = scope.get("router")
    key = (id(router), id(route))
    cached = _templates.get(key)
    if cached is None or cached[0] is not router or cached[1] is not route:
        prefix = _prefix(getattr(router, "routes", None) or (), route, 0) if router else None
        if len(_templates) >= _MAX_CACHED:
            _templates.clear()
        cached = _templates[key] = (router, route, prefix or "")
    return cached[2] + path


def route_name(scope: Scope) -> str:
    """The unit-of-work name of an ``http`` scope once the app has routed
    it: ``"<METHOD> <template>"``, or ``"<unmatched>"``."""
    template = _template(scope)
    if template is None:
        return UNMATCHED
    method = scope.get("method")
    return f"{method if method in METHODS else 'OTHER'} {template}"


def _report_shutdown() -> None:
    pid = os.getpid()
    if pid in _reported or not _running():
        return
    _reported.add(pid)
    from ..adapters import _unreleased

    _unreleased.report(f"asgi lifespan shutdown (pid {pid})")


class LeakprobeMiddleware:
    """Per-route attribution and the lifespan shutdown report for the ASGI
    app `app` (see the module's documentation)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        # _running(), inline: this runs on every request
        if kind not in ("http", "lifespan") or scope.get(_SEEN) or _runtime._state is None:
            await self.app(scope, receive, send)
            return
        scope[_SEEN] = True
        if kind == "lifespan":
            await self.app(scope, receive, _lifespan_send(send))
            return
        token = None
        try:
            token = _work.begin(KIND, UNMATCHED)
        except Exception as exc:
            _error(exc)
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                try:
                    _work.end(token, route_name(scope))
                except Exception as exc:
                    _error(exc)


def _lifespan_send(send: Send) -> Send:
    async def lifespan_send(message: Message) -> None:
        if message.get("type") in _SHUTDOWN:
            try:
                _report_shutdown()
            except Exception as exc:
                _error(exc)
        await send(message)

    return lifespan_send
