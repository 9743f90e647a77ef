"""threading: ``threading.Thread`` objects from ``start()`` to
the end of their ``run()`` (``Thread._bootstrap_inner``, the method every
thread runs, whatever ``run`` a subclass defines): the live count is the
threads running now, by the site of what they run. leakprobe's own
threads (named ``leakprobe-...``) are not counted.

The site of a thread is its target's: the function given as ``target``
(through ``functools.partial``, bound methods and callable objects) or
the ``run`` a subclass defines, when that is application code, so that
threads started by one helper for many purposes are told apart. Its
creation stack is the stack that called ``start()``, under one frame
standing for the target: ``created`` is called through a two-line
trampoline whose code object is named, filed and numbered as the
target's definition (the stack table reads frames from code objects).
A target in library code (``Event.wait``, a pool's worker) adds no such
frame: the site is then the innermost application frame that started
the thread, as for every other tracked type."""

from __future__ import annotations

import functools
import threading as _threading_module
import types
from typing import Any, Callable

import wrapt

from .._runtime import is_library_file
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


# Target code object -> its trampoline. Kept for the process's life and
# bounded: the stack table knows frames by their code objects, so a
# trampoline is never freed while a stack may name it; past the bound a
# thread's site is the line that started it.
_TRAMPOLINES: dict[types.CodeType, Callable[[Callable[[Any], None], Any], None]] = {}
_MAX_TRAMPOLINES = 1024


def _created_on_the_targets_line(created, thread):  # noqa: ANN001 (the model below)
    created(thread)


def _target_code(thread: Any) -> types.CodeType | None:
    """The code object of what `thread` runs: a subclass's ``run``, or its
    target through partials, bound methods and callable objects."""
    run = type(thread).run
    func: Any = run if run is not _threading_module.Thread.run \
        else getattr(thread, "_target", None)
    for _ in range(8):  # bounded: a partial of a partial of ...
        if isinstance(func, types.FunctionType):
            return func.__code__
        if isinstance(func, functools.partial):
            func = func.func
        elif isinstance(func, types.MethodType):
            func = func.__func__
        elif func is not None and not isinstance(func, type):
            func = getattr(type(func), "__call__", None)
        else:
            return None
    return None


def _trampoline(code: types.CodeType) -> Callable[[Callable[[Any], None], Any], None] | None:
    trampoline = _TRAMPOLINES.get(code)
    if trampoline is None and len(_TRAMPOLINES) < _MAX_TRAMPOLINES:
        model = _created_on_the_targets_line.__code__
        # The call is on the model's second line: one line before the
        # target's first line puts it on that line.
        renamed = model.replace(co_filename=code.co_filename, co_name=code.co_name,
                                co_qualname=code.co_qualname,
                                co_firstlineno=max(1, code.co_firstlineno - 1))
        trampoline = types.FunctionType(renamed, {})
        _TRAMPOLINES[code] = trampoline
    return trampoline


def _created(tracked: "_Lazy", thread: Any) -> None:
    code = _target_code(thread)
    trampoline = _trampoline(code) if code is not None and not is_library_file(code.co_filename) \
        else None
    if trampoline is None:
        tracked.created(thread)
    else:
        trampoline(tracked.created, thread)


def install(threading: Any) -> bool:
    tracked = _Lazy("threading.Thread")

    def start(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # Counted before the thread runs: a short thread may end (and be
        # counted closed) before start() returns. A start that raises (a
        # second start, no thread could be made) ends the count again.
        track = SWITCH.on and not instance.name.startswith("leakprobe-") \
            and not instance._started.is_set()
        if track:
            guarded(SWITCH.name, _created, tracked, instance)
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
