"""subprocess: ``subprocess.Popen`` from a successful ``__init__`` until the
child's exit status was collected by ``wait()`` or ``poll()`` (which
``communicate()``, ``__exit__`` and ``subprocess.run`` use). A Popen that
the application drops before that counts as collected while open: its
child ran unwaited (a zombie once it exits) until Python's own clean-up
(``Popen.__del__``, ``subprocess._cleanup``) reaped it, which is not counted
as a wait."""

from __future__ import annotations

from typing import Any

import wrapt

from ._common import Switch, guarded
from ._track import register, track_init

SWITCH = Switch("subprocess")


def install(subprocess: Any) -> bool:
    tracked = register("subprocess.Popen")
    track_init(subprocess.Popen, "__init__", SWITCH, tracked)

    def reaped(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            if SWITCH.on and instance is not None and instance.returncode is not None:
                guarded(SWITCH.name, tracked.closed, instance)

    wrapt.wrap_function_wrapper(subprocess.Popen, "wait", reaped)
    wrapt.wrap_function_wrapper(subprocess.Popen, "poll", reaped)
    return True
