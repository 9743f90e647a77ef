"""Wrappers shared by the adapters: an owner created by ``__init__`` and
closed by one of its methods, sync or async. Each wrapper calls the
library's own method first and unchanged (its result and exception are the
caller's); the bookkeeping after it never raises (``_common.guarded``).

Two kinds, by how hot the wrapped call is:

- ``track_class``: classes made and closed at a high rate (ORM sessions,
  HTTP clients) go through ``_objects.track_type``, whose C wrappers add
  no Python frame, where a wrapt ``FunctionWrapper`` costs ~0.9 us per call
  on CPython 3.11 (docs/benchmarks.md);
- wrapt wrappers (``track_init`` and the adapters' own) for everything else, where a microsecond is lost in the
  call's own cost (a thread start, a process spawn, an HTTP response)."""

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


def track_class(cls: Any, close: str | tuple[str, ...], name: str) -> Any:
    """Tracks `cls` as `name`: created when ``__init__`` returned, closed
    when a method of `close` (or ``__exit__``/``__aexit__``) returned;
    subclasses count under it. Returns the TrackedType."""
    _objects.track_type(cls, close=close, name=name)
    return register(name)


def register(name: str) -> Any:
    return _objects.register_type(name)


__all__ = ["register", "track_class", "track_init"]
