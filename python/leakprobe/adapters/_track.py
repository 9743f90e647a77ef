"""Wrappers shared by the adapters: an owner created by ``__init__`` and
closed by one of its methods, sync or async. Each wrapper calls the
library's own method first and unchanged (its result and exception are the
caller's); the bookkeeping after it never raises (``_common.guarded``)."""

from __future__ import annotations

from typing import Any

import wrapt

from .. import _objects
from ._common import Switch, guarded


def track_init(owner: Any, attribute: str, switch: Switch, tracked: Any) -> None:
    """``owner.attribute`` (an ``__init__``) counts the instance created
    once it returned."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        if switch.on:
            guarded(switch.name, tracked.created, instance)
        return result

    wrapt.wrap_function_wrapper(owner, attribute, wrapper)


def track_close(owner: Any, attribute: str, switch: Switch, tracked: Any) -> None:
    """``owner.attribute`` closes the instance: counted once it returned or
    raised (a close that raised still ends the object's use)."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            if switch.on and instance is not None:
                guarded(switch.name, tracked.closed, instance)

    wrapt.wrap_function_wrapper(owner, attribute, wrapper)


def track_aclose(owner: Any, attribute: str, switch: Switch, tracked: Any) -> None:
    """As :func:`track_close` for a coroutine method: counted when the
    coroutine finished, not when it was made (an ``aclose()`` never awaited
    closes nothing)."""

    async def finish(coroutine: Any, instance: Any) -> Any:
        try:
            return await coroutine
        finally:
            if switch.on:
                guarded(switch.name, tracked.closed, instance)

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        coroutine = wrapped(*args, **kwargs)
        if not switch.on or instance is None:
            return coroutine
        return finish(coroutine, instance)

    wrapt.wrap_function_wrapper(owner, attribute, wrapper)


def register(name: str) -> Any:
    return _objects.register_type(name)


__all__ = ["register", "track_aclose", "track_close", "track_init"]
