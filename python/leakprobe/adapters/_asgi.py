"""FastAPI and Starlette: installs ``leakprobe.integrations.asgi``'s
middleware in every app, so that per-route attribution and the lifespan
shutdown report need no code (docs/multiprocess.md, "FastAPI, Starlette
and other ASGI apps").

Triggered by the import of ``starlette`` (FastAPI imports it). A wrapt
wrapper on ``Starlette.build_middleware_stack`` (and on FastAPI's own,
which does not call Starlette's) wraps the stack it returns in
``LeakprobeMiddleware``: outermost, so that the run also covers the
server-error and exception middlewares. An app that lists the middleware
in its own middleware (``app.add_middleware(LeakprobeMiddleware)``) is left
as it is; the middleware itself passes through a request another instance
handles already, so it never counts a request twice.

Starlette builds the stack at the app's first call: an app first called
while the adapter is off (leakprobe stopped, or ``asgi`` not in
``LEAKPROBE_ADAPTERS``) keeps the stack it got.
"""

from __future__ import annotations

from typing import Any

from ._common import Switch, internal_error

SWITCH = Switch("asgi")


def _listed(app: Any, middleware_class: type) -> bool:
    for item in getattr(app, "user_middleware", None) or ():
        cls = getattr(item, "cls", None)
        if isinstance(cls, type) and issubclass(cls, middleware_class):
            return True
    return False


def _build_middleware_stack(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    stack = wrapped(*args, **kwargs)
    if not SWITCH.on:
        return stack
    try:
        from ..integrations.asgi import LeakprobeMiddleware

        if isinstance(stack, LeakprobeMiddleware) or _listed(instance, LeakprobeMiddleware):
            return stack
        return LeakprobeMiddleware(stack)
    except Exception as exc:
        internal_error(SWITCH.name, exc)
        return stack


def _patch(module: Any, cls: str) -> None:
    try:
        import wrapt

        if "build_middleware_stack" in vars(getattr(module, cls)):
            wrapt.wrap_function_wrapper(module, f"{cls}.build_middleware_stack",
                                        _build_middleware_stack)
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def install(starlette: Any) -> bool:
    # starlette's package imports none of its submodules: wrap each class
    # when its module is imported (at once if it is already).
    import wrapt

    wrapt.register_post_import_hook(lambda m: _patch(m, "Starlette"), "starlette.applications")
    wrapt.register_post_import_hook(lambda m: _patch(m, "FastAPI"), "fastapi.applications")
    return True
