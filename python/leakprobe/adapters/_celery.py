"""Celery: per-task attribution and a report at worker shutdown, through
Celery's signals (docs/multiprocess.md, "Celery").

- ``task_prerun``/``task_postrun``: each task run is a unit of work of kind
  ``task`` named by the task's name (leakprobe._work): what the run left
  behind (open fds, live tracked objects, sampled heap) is added to the
  task's totals, exported as ``leakprobe_work_*{kind="task",name=...}`` and
  judged by the trend engine (series ``work/task:<name>:fds``). The prefork
  pool runs one task at a time per child, so there the figures are exact;
  in the threads, gevent and eventlet pools tasks overlap (leakprobe._work
  says what that means).
- ``worker_process_shutdown`` (a prefork child ending, recycled or not) and
  ``worker_shutdown`` (the main process), after the application's own
  handlers of these signals (moved last at ``worker_process_init`` and
  ``worker_init``): one warning line per resource owner still open
  (SQLAlchemy engines never disposed, httpx clients, ORM and requests
  sessions never closed), with the count and creation site,
  and, under ``leakprobe run``, the same in the process's run file
  (``unreleased``).

The handlers never raise into Celery (errors are counted as the adapter's,
``leakprobe.adapters.errors()``).
"""

from __future__ import annotations

import os
from typing import Any

from . import _unreleased
from ._common import Switch, internal_error

SWITCH = Switch("celery")
_tokens: dict[str, Any] = {}  # task id -> its run's token (one per run in progress)
_reported: set[int] = set()  # pids whose shutdown report was made


def _task_name(task: Any, sender: Any) -> str:
    name = getattr(task, "name", None) or getattr(sender, "name", None)
    return name if isinstance(name, str) and name else "<unnamed>"


def _prerun(sender: Any = None, task_id: Any = None, task: Any = None,
            **_kwargs: Any) -> None:
    if not SWITCH.on:
        return
    try:
        from .. import _work

        _tokens[str(task_id)] = _work.begin("task", _task_name(task, sender))
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def _postrun(sender: Any = None, task_id: Any = None, task: Any = None,
             **_kwargs: Any) -> None:
    token = _tokens.pop(str(task_id), None)
    if token is None:
        return
    try:
        from .. import _work

        _work.end(token)
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def report(role: str) -> list[dict[str, Any]]:
    """Logs (and writes to the run file) what this process still holds;
    once per process (leakprobe.adapters._unreleased). Returns the rows."""
    pid = os.getpid()
    if pid in _reported or not SWITCH.on:
        return []
    _reported.add(pid)
    return _unreleased.report(f"celery {role} shutdown (pid {pid})")


def _child_shutdown(**_kwargs: Any) -> None:
    try:
        report("child")
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def _main_shutdown(**_kwargs: Any) -> None:
    try:
        report("main")
    except Exception as exc:
        internal_error(SWITCH.name, exc)


_signals: Any = None  # celery.signals, once connected


def _move_last(signal: Any, handler: Any) -> None:
    """Reconnects `handler` after every receiver connected so far: the
    report must see what the application's own shutdown handlers release
    (an engine disposed in its worker_process_shutdown handler is not
    left open)."""
    uid = f"leakprobe.{handler.__name__}"
    signal.disconnect(handler, dispatch_uid=uid)
    signal.connect(handler, weak=False, dispatch_uid=uid)


def _child_started(**_kwargs: Any) -> None:
    # worker_process_init, in each prefork child: the app's handlers are
    # all connected by now (the app was imported before the fork).
    try:
        _move_last(_signals.worker_process_shutdown, _child_shutdown)
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def _main_started(**_kwargs: Any) -> None:
    # worker_init, in the main process, once the app is loaded.
    try:
        _move_last(_signals.worker_shutdown, _main_shutdown)
    except Exception as exc:
        internal_error(SWITCH.name, exc)


def _forked() -> None:
    _tokens.clear()
    _reported.discard(os.getpid())


def install(celery: Any) -> bool:
    # celery.signals imports billiard, kombu and more, whose own imports run
    # the other adapters' hooks: never import it here, under the adapters'
    # lock. Connect when it is imported (at once if it is already).
    import wrapt

    wrapt.register_post_import_hook(_connect, "celery.signals")
    return True


def _connect(signals: Any) -> None:
    global _signals
    _signals = signals
    try:
        # weak=False: the handlers are module functions, kept anyway;
        # dispatch_uid: connected once however often this runs.
        for signal, handler in ((signals.task_prerun, _prerun),
                                (signals.task_postrun, _postrun),
                                (signals.worker_process_shutdown, _child_shutdown),
                                (signals.worker_shutdown, _main_shutdown),
                                (signals.worker_process_init, _child_started),
                                (signals.worker_init, _main_started)):
            signal.connect(handler, weak=False, dispatch_uid=f"leakprobe.{handler.__name__}")
    except Exception as exc:
        internal_error(SWITCH.name, exc)


os.register_at_fork(after_in_child=_forked)
