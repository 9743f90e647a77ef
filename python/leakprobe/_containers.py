"""Containers and caches: :func:`watch`, automatic discovery, and the
optional object census (docs/containers.md).

The sampler thread (``_runtime._Sampler``) calls :func:`sample` every
``LEAKPROBE_SAMPLE_INTERVAL`` seconds, :func:`discover` every
``LEAKPROBE_CONTAINER_DISCOVER_INTERVAL`` seconds and, when
``LEAKPROBE_CENSUS=1``, :func:`census_once` every
``LEAKPROBE_CENSUS_INTERVAL`` seconds. What they measure under the GIL is
pushed to the native container store, which the exporter reads without
the GIL.

Shared state (``_entries``, ``_growth``, ``_census_*``) is protected by
``_lock``; the lock is made anew in a forked child (``_after_fork``).
Application threads call :func:`watch`/:func:`unwatch`; only the sampler
measures.
"""

from __future__ import annotations

import collections
import functools
import gc
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

# Kinds, each a fixed label value of leakprobe_container_size.
ACCEPTED = ("dict", "list", "set", "collections.deque", "collections.OrderedDict",
            "a cachetools cache (cachetools.Cache and its subclasses)",
            "a functools.lru_cache / functools.cache wrapper")
HISTORY = 120  # sizes kept per container, one per sampler pass
MAX_DISCOVERED = 256  # discovered containers kept at once (watch() has no cap)
MAX_NAME_BYTES = 127  # the native store's cut
_INT64_MAX = (1 << 63) - 1  # the native store's maxsize type
MAX_EXPORTED = 64  # the native store's rows: the largest containers
MAX_FOLLOWED = 4096  # owner attributes and module globals followed by discovery's growth rule
GROWTH_PASSES = 3  # an owner attribute is discovered after growing at this many passes in a row
OWNER_LIMIT = 1000  # live instances of one tracked type inspected per discovery pass
CENSUS_CHUNK = 50_000  # objects counted per GIL hold by the census

_lock = threading.Lock()


class ContainerStat(NamedTuple):
    """One watched or discovered container, as of the sampler's last pass."""

    name: str  # watch()'s name, "module:qualname" or "OwnerType.attribute"
    kind: str  # "dict", "list", "set", "deque", "OrderedDict", "lru_cache", "cachetools.LRUCache"...
    size: int  # len(), the lru_cache's currsize, the cachetools cache's currsize
    maxsize: int | None  # None: unbounded
    origin: str  # "watch", "lru_cache", "cachetools", "global", "attribute"
    held: str  # "strong" (kept alive until unwatch) or "weak"
    history: tuple[int, ...]  # sizes at the last passes, oldest first


class CensusStat(NamedTuple):
    """One type of the last census: live gc-tracked objects of that type."""

    type: str  # "dict", "app.models.Order"
    objects: int
    growth: int  # objects now minus at the first census


class _Entry:
    __slots__ = ("name", "kind", "origin", "ref", "strong", "size", "maxsize", "history",
                 "measure")

    def __init__(self, name: str, kind: str, origin: str, obj: Any,
                 measure: Callable[[Any], tuple[int, int | None]]) -> None:
        self.name = name
        self.kind = kind
        self.origin = origin
        self.measure = measure
        try:
            self.ref: Callable[[], Any] = weakref.ref(obj)
            self.strong = False
        except TypeError:  # plain dict and list: no weak references
            self.ref = _Strong(obj)
            self.strong = True
        self.size, self.maxsize = measure(obj)
        self.history: collections.deque[int] = collections.deque([self.size], maxlen=HISTORY)

    def release(self) -> None:
        """Drops the reference (strong or weak) to the container: after
        unwatch, a Watch handle the application keeps holds nothing."""
        self.ref = _gone

    def stat(self) -> ContainerStat:
        return ContainerStat(self.name, self.kind, self.size, self.maxsize, self.origin,
                             "strong" if self.strong else "weak", tuple(self.history))


def _gone() -> None:
    return None


class _Strong:
    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


class Watch:
    """What :func:`watch` returns: ``name``, ``kind``, ``held`` ("strong"
    or "weak"); :meth:`unwatch` (idempotent) stops watching and drops a
    strong reference. Also a context manager that unwatches on exit."""

    __slots__ = ("name", "kind", "held", "_entry")

    def __init__(self, entry: _Entry) -> None:
        self.name = entry.name
        self.kind = entry.kind
        self.held = "strong" if entry.strong else "weak"
        self._entry = entry

    def unwatch(self) -> None:
        with _lock:
            if _entries.get(self.name) is self._entry:
                del _entries[self.name]
        self._entry.release()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unwatch()

    def __repr__(self) -> str:
        return f"<leakprobe.Watch {self.name!r} {self.kind} held={self.held}>"


_entries: dict[str, _Entry] = {}  # by name; watched and discovered
# Growing containers followed by discovery: (origin, name) -> (last size, passes grown in a row);
# origin "attribute" (OwnerType.attribute) or "global" (module:NAME).
_growth: dict[tuple[str, str], tuple[int, int]] = {}
_census_baseline: dict[str, int] | None = None
_census_last: list[CensusStat] = []
_census_figures = [0, 0, 0.0, 0.0]  # runs, objects, pause, duration
_census_stopped = False  # by _census_task, after a pause above census_max_pause


# --- what a container is -----------------------------------------------------

def _len(obj: Any) -> tuple[int, int | None]:
    return len(obj), None


def _deque_size(obj: Any) -> tuple[int, int | None]:
    return len(obj), obj.maxlen


def _lru_size(obj: Any) -> tuple[int, int | None]:
    info = obj.cache_info()
    return info.currsize, info.maxsize


def _cachetools_size(obj: Any) -> tuple[int, int | None]:
    maxsize = obj.maxsize
    # currsize and maxsize are in the cache's getsizeof units (1 per item by default).
    bounded = isinstance(maxsize, int) or (isinstance(maxsize, float) and maxsize != float("inf"))
    return int(obj.currsize), int(maxsize) if bounded else None


def _is_lru_wrapper(obj: Any) -> bool:
    lru_type = getattr(functools, "_lru_cache_wrapper", None)
    return isinstance(obj, lru_type) if isinstance(lru_type, type) else False


def _cachetools_cache(obj: Any) -> bool:
    # Never imported by leakprobe: only if the application did.
    cachetools = sys.modules.get("cachetools")
    cache_type = getattr(cachetools, "Cache", None)
    return isinstance(cache_type, type) and isinstance(obj, cache_type)


def _cachetools_kind(obj: Any) -> str:
    # Bounded: cachetools' own classes by name, any subclass of the application's as "cachetools.Cache".
    cls = type(obj)
    if cls.__module__.split(".")[0] == "cachetools":
        return f"cachetools.{cls.__name__}"
    return "cachetools.Cache"


def _classify(obj: Any) -> tuple[str, Callable[[Any], tuple[int, int | None]]] | None:
    if isinstance(obj, collections.OrderedDict):
        return "OrderedDict", _len
    if _cachetools_cache(obj):
        return _cachetools_kind(obj), _cachetools_size
    if _is_lru_wrapper(obj):
        return "lru_cache", _lru_size
    if isinstance(obj, collections.deque):
        return "deque", _deque_size
    if isinstance(obj, dict):
        return "dict", _len
    if isinstance(obj, list):
        return "list", _len
    if isinstance(obj, set):
        return "set", _len
    return None


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"watch(): name must be a non-empty str, got {name!r}")
    if not name.isprintable():
        raise ValueError(f"watch(): name {name!r} has non-printable characters; "
                         "accepted: printable text, e.g. 'app.sessions' or 'module:qualname'")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:  # printable: no lone surrogates
        raise ValueError(f"watch(): name {name[:40]!r}... is longer than {MAX_NAME_BYTES} "
                         "bytes of UTF-8 (a Prometheus label value leakprobe keeps short)")
    return name


# --- the public API ----------------------------------------------------------

def watch(obj: Any, name: str) -> Watch:
    """Watches the length of ``obj`` over time, exported as
    ``leakprobe_container_size{name=..., kind=...}`` (and
    ``leakprobe_container_maxsize`` when it has a bound).

    Accepted: dict, list, set, collections.deque, collections.OrderedDict
    (and their subclasses), cachetools caches, and functools.lru_cache /
    functools.cache wrappers (their ``cache_info()``). Objects that support
    weak references (set, deque, OrderedDict, caches, lru_cache wrappers,
    subclasses of dict and list) are held weakly and dropped from the watch
    when collected; plain ``dict`` and ``list`` cannot be, so **they are
    held strongly until** :func:`unwatch` (or the returned handle's
    ``unwatch()``). ``Watch.held`` says which.

    Raises TypeError for other objects, ValueError for an empty or
    over-long name or one already watched.
    """
    name = _check_name(name)
    classified = _classify(obj)
    if classified is None:
        raise TypeError(f"watch(): cannot watch a {type(obj).__module__}.{type(obj).__qualname__}; "
                        f"accepted: {', '.join(ACCEPTED)}")
    kind, measure = classified
    entry = _Entry(name, kind, "watch", obj, measure)
    with _lock:
        if name in _entries:
            raise ValueError(f"watch(): the name {name!r} is already watched "
                             f"({_entries[name].kind}); unwatch it first or choose another name")
        _entries[name] = entry
    return Watch(entry)


def unwatch(name: str | Watch) -> None:
    """Stops watching the container watched as ``name`` (or by the handle
    :func:`watch` returned), dropping the reference leakprobe held. Raises
    KeyError for a name that is not watched (discovered containers included)."""
    if isinstance(name, Watch):
        name.unwatch()
        return
    with _lock:
        if name not in _entries:
            raise KeyError(f"unwatch(): {name!r} is not watched; watched: {sorted(_entries)}")
        _entries.pop(name).release()


def containers() -> list[ContainerStat]:
    """Every watched and discovered container as of the sampler's last pass
    (sizes over time in ``history``), largest first."""
    with _lock:
        stats = [entry.stat() for entry in _entries.values()]
    return sorted(stats, key=lambda s: (-s.size, s.name))


def census() -> list[CensusStat]:
    """The types of the last census (``LEAKPROBE_CENSUS=1``), most grown
    first; empty before the first census."""
    with _lock:
        return list(_census_last)


# --- the sampler's tasks -----------------------------------------------------

def sample(native: Any) -> None:
    """Measures every container (GIL held) and pushes the largest to the
    native store; forgets containers that were collected."""
    with _lock:
        entries = list(_entries.values())
    for entry in entries:
        obj = entry.ref()
        if obj is None:
            with _lock:
                if _entries.get(entry.name) is entry:
                    del _entries[entry.name]
            continue
        if entry.origin in ("attribute", "global"):
            continue  # measured by discover(): no reference is kept between passes
        try:
            entry.size, entry.maxsize = entry.measure(obj)
        except Exception:  # a broken __len__ of the application's: keep the last size
            continue
        entry.history.append(entry.size)
        del obj
    push(native)


def _label(text: str) -> str:
    """`text` as a label value the native store keeps whole: valid UTF-8
    (a lone surrogate of a module name becomes \\xNN), at most
    MAX_NAME_BYTES bytes, cut at a character boundary."""
    data = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    encoded = data.encode("utf-8")
    if len(encoded) <= MAX_NAME_BYTES:
        return data
    return encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore")


def push(native: Any) -> None:
    with _lock:
        entries = sorted(_entries.values(), key=lambda e: (-e.size, e.name))
    rows = []
    labels: set[tuple[str, str]] = set()
    for e in entries:  # largest first; a name cut to another's is exported once
        key = (_label(e.name), e.kind)
        if key not in labels:
            labels.add(key)
            maxsize = -1 if e.maxsize is None else min(e.maxsize, _INT64_MAX)
            rows.append((key[0], key[1], min(e.size, _INT64_MAX), maxsize))
            if len(rows) == MAX_EXPORTED:
                break
    native.set_containers(rows, len(entries))


def _application_modules() -> Iterable[Any]:
    from ._runtime import is_library_file

    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path is None:
            if getattr(module, "__name__", None) == "__main__":
                yield module  # python -c, the REPL
            continue
        if isinstance(path, str) and not is_library_file(path):
            yield module


def _cache_finder() -> Callable[[Any], tuple[Any, str] | None]:
    """A function telling the cache a module- or class-level value is, or
    holds: an unbounded lru_cache wrapper, a cachetools cache, or a
    cachetools-decorated function (its ``cache`` attribute). By exact types
    (``type()``, never ``__class__``): cheap, and safe on lazy proxies."""
    lru_type = getattr(functools, "_lru_cache_wrapper", None)
    cache_type = getattr(sys.modules.get("cachetools"), "Cache", None)
    if not isinstance(cache_type, type):
        cache_type = None

    def find(value: Any) -> tuple[Any, str] | None:
        cls = type(value)
        if cls is staticmethod or cls is classmethod:
            value = value.__func__
            cls = type(value)
        if cls is lru_type:
            return (value, "lru_cache") if value.cache_info().maxsize is None else None
        if cache_type is None:
            return None
        if issubclass(cls, cache_type):
            return value, "cachetools"
        if callable(value):  # cachetools.cached(cache): a function, or a wrapper object (8.x)
            namespace = getattr(value, "__dict__", None)
            held = namespace.get("cache") if type(namespace) is dict else None
            if held is not None and issubclass(type(held), cache_type):
                return held, "cachetools"
        return None

    return find


class _Found:
    """What one discovery pass found: caches by name, and the sizes of
    unbounded containers bound to names of modules and classes."""

    def __init__(self, find: Callable[[Any], tuple[Any, str] | None]) -> None:
        self.find = find
        self.caches: dict[str, tuple[Any, str]] = {}
        self.containers: dict[str, tuple[int, str]] = {}
        self.seen: set[int] = set()  # containers already counted (bound twice)


def _scan_namespace(module_name: str, prefix: str, namespace: dict[str, Any],
                    found: _Found, depth: int) -> None:
    for attr, value in list(namespace.items()):
        try:
            _scan_value(module_name, prefix, attr, value, found, depth)
        except Exception:  # a lazy proxy whose attributes raise, and the like: skip it
            continue


def _scan_value(module_name: str, prefix: str, attr: str, value: Any,
                found: _Found, depth: int) -> None:
    cls = type(value)
    if cls in _PLAIN_CONTAINERS or (cls is collections.deque and value.maxlen is None):
        if not (attr.startswith("__") and attr.endswith("__")) and id(value) not in found.seen:
            found.seen.add(id(value))
            found.containers[f"{module_name}:{prefix}{attr}"] = (len(value), _PLAIN_CONTAINERS.get(
                cls, "deque"))
        return
    cache = found.find(value)
    if cache is not None:
        qualname = getattr(value, "__qualname__", None)
        owner_module = getattr(value, "__module__", module_name)
        if not isinstance(qualname, str) or cache[1] == "cachetools" and value is cache[0]:
            qualname = prefix + attr  # a cache instance: where it is bound
            owner_module = module_name
        if owner_module == module_name:  # defined here, not imported
            found.caches.setdefault(f"{module_name}:{qualname}", cache)
    elif depth == 0 and issubclass(cls, type) and value.__module__ == module_name:
        _scan_namespace(module_name, f"{value.__qualname__}.", dict(vars(value)), found, 1)


# Exact types only: a subclass may be anything (a cache, a registry with its own bound).
_PLAIN_CONTAINERS = {dict: "dict", list: "list", set: "set",
                     collections.OrderedDict: "OrderedDict"}


def _discover_caches(known: set[int]) -> tuple[dict[str, tuple[Any, str]],
                                               dict[str, tuple[int, str]]]:
    """Caches by name, and the unbounded containers bound to names of
    application modules and their classes (size, kind), except the
    containers whose id is in `known` (watched already)."""
    found = _Found(_cache_finder())
    found.seen |= known
    for module in _application_modules():
        try:
            namespace = vars(module)
        except TypeError:
            continue
        name = namespace.get("__name__")
        if isinstance(name, str):
            _scan_namespace(name, "", dict(namespace), found, 0)
    return found.caches, found.containers


def _unbounded_container(value: Any) -> bool:
    if isinstance(value, collections.deque):
        return value.maxlen is None
    return isinstance(value, (dict, list, set))  # cachetools caches are bounded


def _owner_attributes(owners: dict[str, list[Any]]) -> dict[str, tuple[int, str, int]]:
    """"OwnerType.attribute" -> (total length over live owners, kind, the
    largest length of one owner's) for the unbounded container attributes
    of the given owners. Growth is judged on the largest one: a total grows
    with the number of owners too (each httpx.Client has an `_event_hooks`
    dict of 2), which the owner counts already show."""
    totals: dict[str, tuple[int, str, int]] = {}
    for type_name, objects in owners.items():
        for obj in objects:
            try:
                namespace = vars(obj)
            except TypeError:
                continue
            for attr, value in list(namespace.items()):
                try:
                    if not isinstance(attr, str) or not _unbounded_container(value):
                        continue
                    kind = _classify(value)
                    length = len(value)
                except Exception:  # an application __len__ or __class__ that raises
                    continue
                key = f"{type_name}.{attr}"
                total, _, largest = totals.get(key, (0, "", 0))
                totals[key] = (total + length, kind[0] if kind else "dict",
                               max(largest, length))
    return totals


def _tracked_owners() -> dict[str, list[Any]]:
    """Live tracked objects by registered type name, from the objects
    registry (``leakprobe._objects``: ``tracked_type_names()`` and
    ``live_objects(type_name, limit)``). Empty when the registry is not
    available."""
    try:
        from . import _objects  # type: ignore[attr-defined]
    except ImportError:
        return {}
    names = getattr(_objects, "tracked_type_names", None)
    live = getattr(_objects, "live_objects", None)
    if names is None or live is None:
        return {}
    return {name: list(live(name, OWNER_LIMIT)) for name in names()}


# The source of owners for discovery; tests may give their own objects.
owner_source: Callable[[], dict[str, list[Any]]] = _tracked_owners


def discover(native: Any | None = None) -> None:
    """One discovery pass: unbounded lru_cache wrappers and cachetools
    caches of application modules (named ``module:qualname``), and the
    container attributes of tracked owners that grew at GROWTH_PASSES
    passes in a row (named ``OwnerType.attribute``, sized as the total over
    live owners)."""
    with _lock:
        known = {id(obj) for obj in (e.ref() for e in _entries.values()) if obj is not None}
        room = MAX_DISCOVERED - _discovered_count()
    caches, globals_ = _discover_caches(set(known))
    for name, (cache, origin) in caches.items():
        if id(cache) in known or name in _entries:
            continue  # watched, or found before (under this name or another)
        known.add(id(cache))
        classified = _classify(cache)
        if classified is None or room <= 0:
            continue
        entry = _Entry(name, classified[0], origin, cache, classified[1])
        with _lock:
            if _entries.setdefault(name, entry) is entry:
                room -= 1
    _follow_growth("global", globals_)
    _follow_growth("attribute", _owner_attributes(owner_source()))
    if native is not None:
        push(native)


def _discovered_count() -> int:
    return sum(1 for e in _entries.values() if e.origin != "watch")


def _follow_growth(origin: str, totals: dict[str, tuple[Any, ...]]) -> None:
    """One pass of the growth rule over containers of one origin, by name:
    (size, kind) now, or (size, kind, measure) when growth is judged on
    another figure than the size. A name whose measure grew at
    GROWTH_PASSES passes in a row becomes a discovered entry, sized at each
    pass; it leaves when it is no longer found."""
    with _lock:
        for key in [k for k in _growth if k[0] == origin and k[1] not in totals]:
            del _growth[key]
            entry = _entries.get(key[1])
            if entry is not None and entry.origin == origin:
                del _entries[key[1]]  # no live owner or module holds it any more
        for name, figures in totals.items():
            total, kind = figures[0], figures[1]
            measure = figures[2] if len(figures) > 2 else total
            key = (origin, name)
            if key not in _growth and len(_growth) >= MAX_FOLLOWED:
                continue  # names made on the fly: follow the first ones only
            last, streak = _growth.get(key, (None, 0))
            streak = streak + 1 if last is not None and measure > last else 0
            _growth[key] = (measure, streak)
            entry = _entries.get(name)
            if entry is not None and entry.origin == origin:
                entry.size = total
                entry.history.append(total)
            elif entry is None and streak >= GROWTH_PASSES and \
                    _discovered_count() < MAX_DISCOVERED:
                entry = _Entry(name, kind, origin, _ATTRIBUTE, _const(total))
                _entries[name] = entry


class _AttributeMarker:
    """Stands for a followed container (owners' attribute, module global):
    the entry's object is never None, so sample() keeps it; its size comes
    from discover(), which holds no reference between passes."""


_ATTRIBUTE = _AttributeMarker()


def _const(total: int) -> Callable[[Any], tuple[int, int | None]]:
    return lambda _obj: (total, None)


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", cls.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def census_once(native: Any | None, top: int, chunk: int = CENSUS_CHUNK) -> list[CensusStat]:
    """Counts live gc-tracked objects per type, without gc.collect(). The
    GIL is held while gc.get_objects() lists them, then for `chunk`
    objects at a time, with a switch to other threads in between; the
    longest such hold is the census's pause. Returns the `top` types that
    grew most since the first census (then the largest)."""
    global _census_baseline, _census_last
    started = time.perf_counter()
    objects = gc.get_objects()
    pause = time.perf_counter() - started
    by_type: collections.Counter[type] = collections.Counter()
    total = len(objects)
    for first in range(0, total, chunk):
        time.sleep(0)  # another thread waiting for the GIL takes it here
        began = time.perf_counter()
        by_type.update(map(type, objects[first:first + chunk]))
        pause = max(pause, time.perf_counter() - began)
    del objects
    counts: dict[str, int] = {}
    for cls, n in by_type.items():
        name = _label(_type_name(cls))
        counts[name] = counts.get(name, 0) + n
    del by_type
    with _lock:
        if _census_baseline is None:
            _census_baseline = counts
        baseline = _census_baseline
        ranked = sorted(counts.items(),
                        key=lambda kv: (-max(kv[1] - baseline.get(kv[0], 0), 0), -kv[1], kv[0]))
        _census_last = [CensusStat(name, n, n - baseline.get(name, 0))
                        for name, n in ranked[:top]]
        figures = _census_figures
        figures[0] += 1
        figures[1:] = [total, pause, time.perf_counter() - started]
        result = list(_census_last)
        runs, pause_s, duration = figures[0], figures[2], figures[3]
    if native is not None:
        native.set_census([(s.type, s.objects, s.growth) for s in result], runs, total,
                          pause_s, duration)
    return result


def push_pools(native: Any) -> None:
    """The adapters' pool connections by state and each pool's size limit
    (leakprobe.adapters), for leakprobe_pool_connections(_limit) and the
    pool trend series; nothing until an adapter with pools is
    loaded."""
    adapters = sys.modules.get("leakprobe.adapters")
    if adapters is None:
        return
    limits = {(library, pool): limit for library, pool, limit in adapters.pool_limits()}
    rows = [(_label(library), _label(pool), _label(state), max(0, int(count)),
             _pool_limit(limits.get((library, pool))))
            for library, pool, state, count in adapters.pool_connections()]
    native.set_pools(rows)


def _pool_limit(limit: int | None) -> int:
    return -1 if limit is None or limit < 0 else int(limit)


def sampler_tasks(native: Any, config: Any) -> list[tuple[str, float, Callable[[], None]]]:
    """The sampler's tasks for this configuration: (name, period, call)."""
    tasks: list[tuple[str, float, Callable[[], None]]] = [
        ("containers", config.sample_interval, lambda: sample(native)),
        ("pool connections", config.sample_interval, lambda: push_pools(native))]
    if config.container_discover:
        tasks.append(("container discovery", config.container_discover_interval,
                      lambda: discover(native)))
    if config.census:
        tasks.append(("census", config.census_interval,
                      lambda: _census_task(native, config.census_top_types,
                                           config.census_max_pause)))
    try:
        push(native)  # the first scrape already has what is watched
    except Exception as exc:  # never fail start(); the sampler retries and logs
        native.log("error", f"containers failed: {exc!r}; will retry")
    return tasks


def _census_task(native: Any, top: int, max_pause: float) -> None:
    """The sampler's census: switched off for good (until the next start)
    after one whose pause exceeded `max_pause`, so a process too large for
    it pays that pause once."""
    global _census_stopped
    if _census_stopped:
        return
    census_once(native, top)
    runs, objects, pause, _ = _census_figures
    if pause > max_pause:
        _census_stopped = True
        native.log("warning", f"object census paused the process for {pause * 1e3:.0f} ms "
                   f"counting {objects} objects, more than LEAKPROBE_CENSUS_MAX_PAUSE="
                   f"{max_pause:g} s; census switched off until the next start")


def reset() -> None:
    """Forgets discovered containers and the census (start() after stop()).
    Watched containers stay watched."""
    global _census_baseline, _census_last, _census_stopped
    with _lock:
        _census_stopped = False
        for name in [n for n, e in _entries.items() if e.origin != "watch"]:
            del _entries[name]
        _growth.clear()
        _census_baseline = None
        _census_last = []
        _census_figures[:] = [0, 0, 0.0, 0.0]


def _after_fork() -> None:
    global _lock, _census_baseline, _census_last, _census_stopped
    _lock = threading.Lock()  # another thread may have held it at the fork
    # The child's census measures the child's growth, from its own baseline.
    _census_baseline = None
    _census_last = []
    _census_stopped = False
    _census_figures[:] = [0, 0, 0.0, 0.0]


os.register_at_fork(after_in_child=_after_fork)
