"""Built-in adapters: resource owners of common libraries, tracked through
the objects registry (``leakprobe._objects``) as the application uses them.

leakprobe never imports these libraries itself. At start it registers one
post-import hook per library (``wrapt.register_post_import_hook``): the hook
runs at once for a library the application imported already, or when the
application imports it later. Each library is instrumented once per process
and stays so; while leakprobe is stopped the wrappers only call through.
A later ``start()`` with another ``LEAKPROBE_ADAPTERS`` list decides which
libraries are instrumented from then on. docs/objects.md lists what each
adapter counts and how it hooks.

    import leakprobe.adapters as adapters
    adapters.installed()          # ['httpx', 'sqlite3', 'subprocess', 'threading']
    adapters.pool_connections()   # [('sqlalchemy', 'sqlite:///app.db', 'checked_out', 1), ...]
    adapters.pool_limits()        # [('sqlalchemy', 'sqlite:///app.db', 15), ...]

Thread-safety: ``activate``/``deactivate`` are called under the runtime's
lock; the hooks run under the import lock of the module they instrument.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

from . import _common

# adapter name -> (module whose import triggers it, our module, its docs name)
ADAPTERS: dict[str, tuple[str, str]] = {
    "httpx": ("httpx", "._httpx"),
    "requests": ("requests", "._requests"),
    "urllib": ("urllib.request", "._urllib"),
    "sqlalchemy": ("sqlalchemy", "._sqlalchemy"),
    "sqlite3": ("sqlite3", "._sqlite3"),
    "threading": ("threading", "._threading"),
    "subprocess": ("subprocess", "._subprocess"),
    "celery": ("celery", "._celery"),
    "asgi": ("starlette", "._asgi"),
}

_lock = threading.Lock()
_registered: set[str] = set()  # post-import hooks registered (once per process)
_installed: set[str] = set()  # adapters whose wrappers are in place
_failed: set[str] = set()  # adapters whose installation raised
_wanted: frozenset[str] = frozenset()  # adapters switched on now


def _module(name: str) -> Any:
    return importlib.import_module(ADAPTERS[name][1], __name__)


def _hook(name: str) -> Any:
    def on_import(library: Any) -> None:
        # Called by wrapt with the library module, under its import; must
        # never raise into the application's import.
        with _lock:
            if name in _installed or name in _failed or name not in _wanted:
                return  # (not wanted now: activate() installs it if it is later)
            try:
                adapter = _module(name)
                if adapter.install(library) is False:
                    _failed.add(name)  # unsupported version: logged by install
                    return
                _installed.add(name)
                adapter.SWITCH.on = True
            except Exception as exc:
                _failed.add(name)
                _common.internal_error(name, exc)

    return on_import


def activate(names: frozenset[str] | set[str] | tuple[str, ...]) -> None:
    """Switches on the adapters `names` (a subset of ``ADAPTERS``): those
    whose library is imported are instrumented now, the others when the
    application imports their library."""
    global _wanted
    with _lock:
        _wanted = frozenset(names)
        for name in _installed:
            _module(name).SWITCH.on = True
        # a hook that fired while its adapter was not wanted did nothing
        late = [name for name in _wanted & _registered
                if name not in _installed and ADAPTERS[name][0] in sys.modules]
    for name in late:
        _hook(name)(sys.modules[ADAPTERS[name][0]])
    if not _wanted - _registered:
        return
    import wrapt  # only when a hook is to be registered: ~20 ms of imports

    for name in sorted(_wanted - _registered):
        _registered.add(name)
        wrapt.register_post_import_hook(_hook(name), ADAPTERS[name][0])


def deactivate() -> None:
    """Every adapter's wrappers become pass-through (leakprobe stopped)."""
    global _wanted
    with _lock:
        _wanted = frozenset()
        for name in _installed:
            _module(name).SWITCH.on = False


def installed() -> list[str]:
    """Adapters whose wrappers are in place (their library was imported)."""
    with _lock:
        return sorted(_installed)


def active() -> list[str]:
    """Adapters installed and recording now (leakprobe running)."""
    with _lock:
        return sorted(name for name in _installed if _module(name).SWITCH.on)


def pool_connections() -> list[tuple[str, str, str, int]]:
    """Connections of the instrumented pools by state, as rows
    ``(library, pool, state, count)``:

    - ``sqlalchemy``, per engine (its URL without password): ``open`` (DBAPI
      connections the pool holds), ``checked_out``, ``checked_in``, and
      ``invalidated`` (a running total);
    - ``httpcore`` (the pools of httpx clients) and ``urllib3`` (the pools
      of requests sessions), all pools together (pool ``"all"``):
      ``active`` (serving a request, or connecting) and ``idle``.

    Only libraries that the application imported are listed."""
    rows: list[tuple[str, str, str, int]] = []
    with _lock:
        names = sorted(_installed)
    for name in names:
        gauges = getattr(_module(name), "GAUGES", ())
        for gauge in gauges:
            try:
                rows.extend(gauge.rows())
            except Exception as exc:  # a pool changed under us: skip this round
                _common.internal_error(name, exc)
    return rows


def pool_limits() -> list[tuple[str, str, int | None]]:
    """The size limit of each pool label of :func:`pool_connections`, as rows
    ``(library, pool, limit)``: the connections in use (``checked_out``,
    ``active``) at which the pool runs out, or None when it has none
    (docs/objects.md, "Pool size limits"):

    - ``sqlalchemy``: ``QueuePool`` (and its asyncio variants) ``pool_size +
      max_overflow`` (none when either is unlimited: 0 and -1),
      ``AssertionPool`` 1, ``NullPool``, ``StaticPool`` and
      ``SingletonThreadPool`` none (they never make a caller wait); engines
      sharing a label add up;
    - ``httpcore`` ``"all"``: the sum of the live pools' ``max_connections``
      (none when one has no limit, or no pool is alive);
    - ``urllib3`` ``"all"``: the sum of the live pools' ``maxsize`` when every
      one blocks (``block=True``), else none."""
    rows: list[tuple[str, str, int | None]] = []
    with _lock:
        names = sorted(_installed)
    for name in names:
        for gauge in getattr(_module(name), "GAUGES", ()):
            try:
                rows.extend(gauge.limits())
            except Exception as exc:  # a pool changed under us: skip this round
                _common.internal_error(name, exc)
    return rows


def errors() -> dict[str, int]:
    """Internal errors caught per adapter (each logged once): the
    application's calls are never affected by them."""
    return _common.errors()


NAMES = tuple(ADAPTERS)
