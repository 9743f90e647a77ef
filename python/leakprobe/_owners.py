"""Fds attributed to the resource object they were created for.

Adapters (docs/objects.md) name an owner by its type and its creation stack
(``owner_id``) and give it the fds it makes, in one of two ways:

- ``with owning(owner):`` around synchronous code that creates the owner's
  fds (a pool connecting): every fd created on this thread meanwhile carries
  the owner. Not across ``await``: other tasks run on the thread then.
- ``attach_fd(owner, fd)`` once the fd is known (a connection's socket after
  an async connect).

Both are cheap and never raise into the application: when fd tracking is
off they do nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NO_OWNER = 0

_native: Any = None


def _bind(native: Any) -> None:
    """Called by the runtime once the extension is loaded."""
    global _native
    _native = native


def owner_id(type_name: str, stack_id: int) -> int:
    """The owner id of objects of type `type_name` created at stack
    `stack_id` (a stack table id; 0 for none). Interned: one id per pair."""
    if _native is None:
        return NO_OWNER
    return int(_native.fd_owner_intern(type_name, stack_id))


@contextmanager
def owning(owner: int) -> Iterator[None]:
    """Fds created on this thread inside the block carry `owner`."""
    if _native is None or owner == NO_OWNER:
        yield
        return
    previous = _native.fd_owner_set_thread(owner)
    try:
        yield
    finally:
        _native.fd_owner_set_thread(previous)


def attach_fd(owner: int, fd: int) -> bool:
    """Give the open fd `fd` the owner `owner`; False if leakprobe has no
    record of it (fd tracking off, or not an fd it saw)."""
    if _native is None or owner == NO_OWNER or fd < 0:
        return False
    return bool(_native.fd_set_owner(fd, owner))
