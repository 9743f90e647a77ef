"""One scrape target for every leakprobe process of a host or pod
(docs/multiprocess.md).

The processes configured with the same fixed ``LEAKPROBE_PORT`` form a
group. The one that binds the port first (a Celery or gunicorn master, the
first uvicorn worker) serves, at each scrape, its own series and those of
every other process of the group, each labelled with ``pid`` and ``role``;
the others answer it on a private abstract Unix socket (native ``peers.h``:
nothing listens beyond loopback, and the kernel drops the socket with the
process, even on SIGKILL). A process that is not serving tries to take the
port over at every sampler tick, so when the holder dies another process
serves the group within a second.

The role says what the process is, from its command line and parentage:
``celery-main``/``celery-child``, ``gunicorn-master``/``gunicorn-worker``,
``uvicorn-main``/``uvicorn-worker``, ``main``/``child`` otherwise, or what
``LEAKPROBE_ROLE`` says.
"""
from __future__ import annotations

import os
import sys
from typing import Any

# A process started as one of these programs has the first role; a process
# forked or spawned from it (or sharing its command line) the second.
_ROLES = {
    "celery": ("celery-main", "celery-child"),
    "gunicorn": ("gunicorn-master", "gunicorn-worker"),
    "uvicorn": ("uvicorn-main", "uvicorn-worker"),
}
_CHILD_OF = {main: child for main, child in _ROLES.values()} | {"main": "child"}


def _program(argv: list[str] | None = None) -> str | None:
    """'celery', 'gunicorn' or 'uvicorn' when this interpreter runs that
    program (its console script, or ``python -m``), else None; or when the
    interpreter command line `argv` does."""
    if argv is None:
        argv = list(getattr(sys, "orig_argv", ())) or list(sys.argv)
        if sys.argv and os.path.basename(sys.argv[0]) in _ROLES:
            return os.path.basename(sys.argv[0])
    elif len(argv) > 1 and os.path.basename(argv[1]) in _ROLES:
        return os.path.basename(argv[1])  # python /venv/bin/celery ...
    skip = False
    for i, arg in enumerate(argv[1:], start=1):
        if skip:
            skip = False
            continue
        if arg in ("-X", "-W"):
            skip = True  # its value follows
            continue
        if arg == "-c":
            return None  # code, not a program
        if arg == "-m" and i + 1 < len(argv):
            module = argv[i + 1].split(".")[0]
            return module if module in _ROLES else None
        if arg.startswith("-m") and len(arg) > 2:
            module = arg[2:].split(".")[0]
            return module if module in _ROLES else None
        if not arg.startswith("-"):
            return os.path.basename(arg) if os.path.basename(arg) in _ROLES else None
    return None


def _spawned() -> bool:
    """A multiprocessing spawn or forkserver child (uvicorn --workers)."""
    return "--multiprocessing-fork" in getattr(sys, "orig_argv", sys.argv)


def _parent_program() -> str | None:
    """What `_program` says of the parent's command line."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
            argv = [arg.decode(errors="replace") for arg in parent.read().split(b"\0")[:-1]]
    except OSError:
        return None
    if argv and os.path.basename(argv[0]) in _ROLES:
        return os.path.basename(argv[0])  # a console script run as the program
    return _program(argv)


def _same_program_as_parent() -> bool:
    """Whether the parent runs the same command line: a worker that the
    program forked before leakprobe was imported (gunicorn without
    preload_app, whose workers import the application after the fork)."""
    try:
        with open("/proc/self/cmdline", "rb") as own, \
                open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
            return own.read() == parent.read()
    except OSError:
        return False


def detect_role(parent_role: str | None) -> str:
    """This process's role; `parent_role` is the role of the process it
    was forked from while leakprobe ran there, if it was."""
    if parent_role is not None:
        return _CHILD_OF.get(parent_role, parent_role)
    program = _program()
    if _spawned():
        # The parent's program first: an app run by uvicorn may import
        # celery too (to send tasks), and is no Celery child.
        if program is None:
            program = _parent_program()
        if program is None:
            program = next((name for name in _ROLES if name in sys.modules), None)
        return _ROLES[program][1] if program else "child"
    if program is None:
        return "child" if _same_program_as_parent() and _parent_is_python() else "main"
    return _ROLES[program][1] if _same_program_as_parent() else _ROLES[program][0]


def _parent_is_python() -> bool:
    try:
        return os.path.realpath(f"/proc/{os.getppid()}/exe") == os.path.realpath(sys.executable)
    except OSError:
        return False


class Group:
    """This process's part in its port's group: its private socket, and
    the exporter it serves once it holds the port."""

    def __init__(self, native: Any, host: str, port: int, role: str,
                 cpu_share: float) -> None:
        self.native = native
        self.host = host
        self.port = port
        self.cpu_share = cpu_share  # the exporter's CPU cap, if this process serves
        self.role = role
        self.holder = False
        native.set_process_role(role)
        native.start_peer(port)

    def try_to_serve(self) -> bool:
        """Binds the port if it is free (the holder is gone, or there was
        none); True when this process serves the group now."""
        if self.holder:
            return True
        try:
            self.native.start_exporter(self.host, self.port, group=True,
                                       cpu_share=self.cpu_share)
        except self.native.BindError:
            return False
        self.holder = True
        return True

    def others(self) -> list[int]:
        return [pid for pid in self.native.group_pids(self.port) if pid != os.getpid()]

    def stop(self) -> None:
        self.native.stop_peer()
