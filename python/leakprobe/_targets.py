"""The Prometheus ``file_sd`` targets file (``LEAKPROBE_TARGETS_FILE``,
docs/multiprocess.md#one-target-per-process-file_sd).

With a targets file, every leakprobe process serves its own exporter on a
free port and lists itself in the file, one target group per process::

    [{"targets": ["127.0.0.1:40315"],
      "labels": {"__meta_leakprobe_pid": "4242", "__meta_leakprobe_role": "main",
                 "__meta_leakprobe_start": "1234567"}}, ...]

The labels are ``__meta_`` labels, for relabelling only: Prometheus drops
them after relabelling, so they never clash with the ``pid`` and ``role``
labels that every series already carries (a target label of the same name
would rename the series' own to ``exported_pid``). ``__meta_leakprobe_start``
is the process's start time (``/proc/<pid>/stat``, clock ticks after boot):
with the pid it names one process, so a reused pid is not taken for a live
entry.

Every process of the host that uses the same file keeps it: at start it adds
itself; at every sampler tick it re-asserts its entry and sweeps out the
entries of processes that are gone (no ``/proc/<pid>/stat``, a zombie, or
another start time: SIGKILL included); at stop and at exit it removes
itself. A tick that finds nothing to change only reads the file (and each
listed process's ``/proc/<pid>/stat``). A change is made under a POSIX
record lock (``fcntl.lockf``) on ``<file>.lock``, re-reading the file under
the lock, and written to a temporary file in the same directory that is
renamed over the file, so concurrent writers never lose an entry and
Prometheus never reads half a file. POSIX locks, not ``flock``: a forked
child does not inherit them, so a fork while the sampler holds the lock
cannot leave the lock held by a child that never releases it. The lock is
tried, never waited on without a deadline: a writer stopped while holding
it delays the others' updates, never their host.

A file that is not a JSON list of target groups is replaced (logged once
per process), and so is an entry that Prometheus could not read; entries
without leakprobe's labels (written by hand) are kept as they are.

Shared state: ``_writer`` is replaced under ``leakprobe._runtime._lock``
(``sampler_tasks`` and ``stop`` are called from start() and stop()); a
``_Writer``'s fields are protected by its own ``lock``.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _files

PID_LABEL = "__meta_leakprobe_pid"
ROLE_LABEL = "__meta_leakprobe_role"
START_LABEL = "__meta_leakprobe_start"
LOCK_SUFFIX = ".lock"
_LOCK_RETRY = 0.01  # seconds between tries of a held lock

_writer: _Writer | None = None
_atexit_registered = False


def start_time(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/<pid>/stat), or
    None when no such process runs (none, or a zombie: killed and not yet
    reaped). Raises PermissionError when /proc hides it (hidepid)."""
    try:  # os.open, not open(): no buffered file object, at every tick
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        stat = os.read(fd, 4096)
    except ProcessLookupError:  # exited between the open and the read
        return None
    finally:
        os.close(fd)
    # comm, in parentheses, may hold spaces and parentheses: split after it.
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode("ascii")


def _alive(labels: dict[str, str]) -> bool:
    """Whether the process of a leakprobe entry still runs."""
    try:
        return start_time(int(labels[PID_LABEL])) == labels[START_LABEL]
    except PermissionError:
        return True  # cannot tell: kept, its owner removes it at exit
    except (ValueError, OSError):
        return False


def _valid(entry: Any) -> bool:
    """Whether Prometheus can read this target group."""
    if not isinstance(entry, dict) or not entry.keys() <= {"targets", "labels"}:
        return False
    targets, labels = entry.get("targets"), entry.get("labels", {})
    if not isinstance(targets, list) or not isinstance(labels, dict):
        return False
    for target in targets:
        if not isinstance(target, str):
            return False
    for key, value in labels.items():  # JSON keys are strings
        if not isinstance(value, str):
            return False
    return True


def _ours(entry: dict[str, Any]) -> bool:
    labels = entry.get("labels", {})
    return PID_LABEL in labels and START_LABEL in labels


def _pid_of(entry: dict[str, Any]) -> int:
    try:
        return int(entry["labels"][PID_LABEL])
    except (KeyError, ValueError):
        return -1


def _in_order(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """leakprobe's entries by pid, then the others as they were."""
    return sorted(entries, key=lambda e: (not _ours(e), _pid_of(e)))


def render(entries: list[dict[str, Any]]) -> str:
    """The file's text: one target group a line, leakprobe's by pid."""
    entries = _in_order(entries)
    lines = ",\n ".join(json.dumps(e, sort_keys=True, separators=(", ", ": ")) for e in entries)
    return f"[{lines}]\n"


class TargetsFile:
    """One targets file, shared with the other processes that use it.
    `log(level, message)` reports a file that had to be replaced."""

    def __init__(self, path: str, log: Callable[[str, str], None],
                 lock_timeout: float = 2.0) -> None:
        self.path = path
        self.lock_path = path + LOCK_SUFFIX
        self.log = log
        self.lock_timeout = lock_timeout
        self._replaced_logged = False

    def _read(self) -> tuple[str | None, list[Any] | None]:
        """(text, parsed list); text None when there is no file, list None
        when the text is not a JSON list."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None, []
        except UnicodeDecodeError:
            return "", None
        if not text.strip():
            return text, []  # made empty beforehand (touch): nothing listed yet
        try:
            parsed = json.loads(text)
        except ValueError:
            return text, None
        return text, parsed if isinstance(parsed, list) else None

    def _wanted(self, pid: int, own: dict[str, Any] | None) -> tuple[str | None, str]:
        """(text wanted, or None when the file is as wanted; why the file is
        replaced, or '')."""
        text, parsed = self._read()
        why = ""
        if parsed is None:
            why = "it is not a JSON list of target groups"
            parsed = []
        kept = []
        for entry in parsed:
            if not _valid(entry):
                why = why or f"it holds an entry Prometheus cannot read: {entry!r:.200}"
                continue
            if _ours(entry) and (_pid_of(entry) == pid or not _alive(entry["labels"])):
                continue  # this process's (re-asserted below) or a dead one's
            kept.append(entry)
        if own is not None:
            kept.append(own)
        if not why and (_in_order(kept) == parsed if text is not None else own is None):
            # The same entries in the same order (no file, and nothing to
            # list): unchanged, and not rendered (the cheap path of a tick).
            # Only a file leakprobe wrote could differ from its rendering.
            return None, why
        return render(kept), why

    def update(self, pid: int, own: dict[str, Any] | None) -> bool:
        """Makes the file list `own` (the entry of process `pid`; None:
        removes it) and no process that is gone; True when it was
        rewritten, False when nothing had to change. Raises OSError when
        the file cannot be written, TimeoutError when the lock stays held
        for lock_timeout seconds."""
        if self._wanted(pid, own)[0] is None:
            return False  # the cheap path: no lock, no write
        with self._locked():
            wanted, why = self._wanted(pid, own)  # as it is now, under the lock
            if wanted is None:
                return False
            if why and not self._replaced_logged:
                self._replaced_logged = True
                self.log("warning", f"targets file {self.path} replaced: {why}; "
                         "accepted: a JSON list of Prometheus file_sd target groups "
                         "(leakprobe writes it; other processes re-add themselves)")
            self._write(wanted)
        return True

    def _write(self, text: str) -> None:
        # The temporary file, .<name>.<pid>.<thread>.tmp, does not end in
        # .json: a file_sd pattern such as *.json never reads it.
        _files.write_atomically(self.path, text)

    class _Lock:
        def __init__(self, owner: TargetsFile) -> None:
            self.owner = owner
            self.fd = -1

        def __enter__(self) -> None:
            fd = os.open(self.owner.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            deadline = time.monotonic() + self.owner.lock_timeout
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EAGAIN) \
                            or time.monotonic() > deadline:
                        os.close(fd)
                        if exc.errno in (errno.EACCES, errno.EAGAIN):
                            raise TimeoutError(
                                f"{self.owner.lock_path} stayed locked for "
                                f"{self.owner.lock_timeout} s") from None
                        raise
                    time.sleep(_LOCK_RETRY)
            self.fd = fd

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)  # releases the lock

    def _locked(self) -> TargetsFile._Lock:
        return TargetsFile._Lock(self)


def check(path: str) -> str | None:
    """Why `path` cannot be the targets file (its directory is missing, is
    not a directory or is not writable, or the path is a directory), or
    None."""
    directory = os.path.dirname(path) or "/"
    if not os.path.isdir(directory):
        what = "does not exist" if not os.path.exists(directory) else "is not a directory"
        reason = f"its directory {directory} {what}"
    elif not os.access(directory, os.W_OK | os.X_OK):
        reason = f"its directory {directory} is not writable by this user"
    elif os.path.isdir(path):
        reason = "it is a directory"
    else:
        return None
    return (f"LEAKPROBE_TARGETS_FILE={path!r} cannot be written: {reason}; accepted: an "
            "absolute path of a file ending in .json, in a directory this user can write to")


class _Writer:
    """This process's entry in the targets file. Made at each start() (so
    a forked child gets its own, for its own pid)."""

    def __init__(self, path: str, address: str, role: Callable[[], str],
                 log: Callable[[str, str], None]) -> None:
        self.file = TargetsFile(path, log)
        self.address = address  # host:port of this process's exporter
        self.role = role
        self.pid = os.getpid()
        self.start = start_time(self.pid) or "0"
        self.lock = threading.Lock()  # taken by the sampler, stop() and exit
        self.closed = False  # removed: later ticks add nothing
        self.listed = False  # the last tick's write (or check) succeeded

    def entry(self) -> dict[str, Any]:
        return {"targets": [self.address],
                "labels": {PID_LABEL: str(self.pid), ROLE_LABEL: self.role(),
                           START_LABEL: self.start}}

    def tick(self) -> None:
        """The sampler task: re-assert this entry, sweep out the dead."""
        if self.pid != os.getpid():
            return
        with self.lock:
            if not self.closed:
                self.listed = False
                self.file.update(self.pid, self.entry())
                self.listed = True

    def remove(self, timeout: float) -> None:
        """Takes this process out of the file (stop, exit); waits at most
        about `timeout` seconds for a tick in progress and for the lock."""
        if self.pid != os.getpid():
            return  # a forked child that never restarted leakprobe: not its entry
        if not self.lock.acquire(timeout=timeout):
            return
        try:
            self.closed = True
            self.file.lock_timeout = timeout
            self.file.update(self.pid, None)
        finally:
            self.lock.release()


def _at_exit() -> None:
    writer = _writer
    if writer is None:
        return
    try:
        writer.remove(timeout=0.5)
    except Exception:  # never fail the host's exit
        pass


def target_address(host: str, port: int) -> str:
    """What Prometheus, reading the file on this host, connects to."""
    return f"{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"


def sampler_tasks(native: Any, config: Any, port: int | None,
                  role: Callable[[], str]) -> list[tuple[str, float, Callable[[], None]]]:
    """Lists this process in the targets file now, and returns the sampler
    task that keeps it listed (none without a targets file or without an
    exporter), for start()."""
    global _writer, _atexit_registered
    stop()
    if config.targets_file is None or port is None:
        return []
    writer = _Writer(config.targets_file, target_address(config.host, port), role, native.log)
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_at_exit)  # runs before _runtime's (atexit is last in, first out)
    try:
        writer.tick()
    except Exception as exc:
        why = check(config.targets_file) or \
            f"targets file {config.targets_file} could not be written: {exc!r}"
        native.log("error", f"{why}; this process (pid {writer.pid}, serving "
                   f"{writer.address}) is not listed; retrying every "
                   f"{config.sample_interval:g} s; profiling continues")
    _writer = writer
    return [("targets file", config.sample_interval, writer.tick)]


def listed_path() -> str | None:
    """The targets file this process keeps its entry in, if any."""
    writer = _writer
    return writer.file.path if writer is not None and writer.pid == os.getpid() \
        and writer.listed and not writer.closed else None


def stop() -> None:
    """Removes this process's entry (leakprobe.stop(), or a restart)."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        try:
            writer.remove(timeout=2.0)
        except Exception:  # the host runs on; a dead entry is swept by the others
            pass
