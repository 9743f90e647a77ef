"""threading: ``threading.Thread`` objects from ``start()`` to
the end of their ``run()`` (``Thread._bootstrap_inner``, the method every
thread runs, whatever ``run`` a subclass defines): the live count is the
threads running now, by the site that started them. leakprobe's own
threads (named ``leakprobe-...``) are not counted."""

from __future__ import annotations

from typing import Any

import wrapt

from ._common import Switch, guarded
from ._track import register

SWITCH = Switch("threading")


class _Lazy:
    """The type, registered at the first thread start: threading is imported
    by every interpreter, so registering at install would take one of the
    registry's 128 type slots in processes that never start a thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.type: Any = None

    def created(self, thread: Any) -> None:
        if self.type is None:
            self.type = register(self.name)
        self.type.created(thread)

    def closed(self, thread: Any) -> None:
        if self.type is not None:
            self.type.closed(thread)


def install(threading: Any) -> bool:
    tracked = _Lazy("threading.Thread")

    def start(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # Counted before the thread runs: a short thread may end (and be
        # counted closed) before start() returns. A start that raises (a
        # second start, no thread could be made) ends the count again.
        track = SWITCH.on and not instance.name.startswith("leakprobe-") \
            and not instance._started.is_set()
        if track:
            guarded(SWITCH.name, tracked.created, instance)
        try:
            return wrapped(*args, **kwargs)
        except BaseException:
            if track:
                guarded(SWITCH.name, tracked.closed, instance)
            raise

    def bootstrap_inner(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            if SWITCH.on:
                guarded(SWITCH.name, tracked.closed, instance)

    wrapt.wrap_function_wrapper(threading.Thread, "start", start)
    wrapt.wrap_function_wrapper(threading.Thread, "_bootstrap_inner", bootstrap_inner)
    return True
