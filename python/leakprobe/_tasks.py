"""Async attribution: tasks that a library spawns are attributed to the
application code that made the library spawn them (docs/heap.md, "Async
code").

An asyncio task's own stack ends in the event loop: a socket that anyio's
``connect_tcp`` opens in a task of its own (as httpx.AsyncClient does) would
be attributed to the line that called ``asyncio.run()``. So when a task is
created whose coroutine is library code, the creating stack is captured
(the await chain of the task that spawned it, application frames included)
and the task's coroutine is wrapped: while each of its steps runs, the
thread's *task parent* is that stack, and every capture on the thread (heap
samples, fd creations, tracked objects) is the task's coroutine frames
followed by it. Tasks spawned by such a task chain on, since their creating
stack is itself stitched.

Hooked at ``asyncio.BaseEventLoop.create_task``, which every asyncio loop
(and ``asyncio.create_task``, ``TaskGroup``, ``gather``, anyio) goes
through, and at ``uvloop.Loop.create_task``: uvloop's loop is native code
(Cython), but ``uvloop.Loop`` is a Python subclass of it, which every
uvloop loop is made from (``uvloop.new_event_loop``, ``uvloop.run``, its
policy, uvicorn's loop factory), and ``create_task`` is looked up on it as
a Python method, also by ``asyncio.create_task``. Tasks whose
coroutine is application code (a Python coroutine defined outside the
library prefixes) are left alone: their own frames name the site; a
compiled coroutine (uvloop's ``create_connection``, anything Cython) counts
as library code. While a wrapped step runs, a capture keeps exactly the
frames pushed since the step began (``LeakprobeTaskStepBegin``), so a
compiled coroutine's step, which has no frame of its own, does not reach
down into the loop's caller (the ``asyncio.run()`` line). The wrapper
(``_native.SpawnedCoroutine``, a C type: asyncio steps it through
``am_send``) is registered as a ``collections.abc.Coroutine``
and forwards every other attribute (``cr_frame``, ``cr_code``,
``__qualname__``...) to the wrapped coroutine.
"""

from __future__ import annotations

import collections.abc
import functools
import types
from typing import Any

_native: Any = None
_prefixes: tuple[str, ...] = ()
_library_code: dict[Any, bool] = {}  # code object -> is library code (bounded)
_MAX_CODES = 4096
CREATION_FRAMES = 64  # of a library task's creating stack: deep enough to
# reach through the library's layers into the application's frames
_originals: dict[type, Any] = {}  # loop class -> its create_task before install()


def _is_library(coro: Any) -> bool:
    if type(coro) is not types.CoroutineType:
        # Compiled (uvloop's, Cython's): no frame of its own names a site, and
        # its co_filename ("uvloop/loop.pyx") is no installed path.
        return True
    code = coro.cr_code
    known = _library_code.get(code)
    if known is None:
        known = code.co_filename.startswith(_prefixes) or code.co_filename.startswith("<frozen ")
        if len(_library_code) >= _MAX_CODES:
            _library_code.clear()
        _library_code[code] = known
    return known


def _wrap(create_task: Any) -> Any:
    @functools.wraps(create_task)
    def create_task_with_parent(self: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
        native = _native
        if native is not None and type(coro) is not native.SpawnedCoroutine:
            try:
                if _is_library(coro):
                    parent = native.capture_stack_id(CREATION_FRAMES)
                    if parent:
                        coro = native.spawned_coroutine(coro, parent)
            except Exception:  # never fail the application's create_task
                pass
        return create_task(self, coro, *args, **kwargs)

    create_task_with_parent.__leakprobe_wrapped__ = True  # type: ignore[attr-defined]
    return create_task_with_parent


def install(loop_class: type, native: Any, library_prefixes: list[str]) -> None:
    """Wraps ``loop_class.create_task`` (idempotent): ``BaseEventLoop``
    from asyncio.base_events, ``Loop`` from uvloop."""
    global _native, _prefixes
    collections.abc.Coroutine.register(native.SpawnedCoroutine)
    _native = native
    _prefixes = tuple(library_prefixes)
    _library_code.clear()
    current = loop_class.create_task
    if getattr(current, "__leakprobe_wrapped__", False):
        return
    _originals[loop_class] = current
    loop_class.create_task = _wrap(current)


def uninstall() -> None:
    """Restores every original ``create_task``; tasks already wrapped
    finish as they are (with no parent once leakprobe is stopped)."""
    global _native
    for loop_class, original in _originals.items():
        loop_class.create_task = original
    _originals.clear()
    _native = None
