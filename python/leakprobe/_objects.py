"""Tracked resource owners: the registry's Python API (see docs/objects.md).

Adapters and applications name a type once and report its instances::

    from leakprobe import _objects
    t = _objects.register_type("httpx.Client")   # idempotent per name
    t.created(client)    # tracked weakly, with the caller's stack
    t.closed(client)     # counted closed; idempotent

An instance garbage-collected while tracked and not closed is counted as
*collected while open*. ``track_type`` does this for a class: it wraps
``__init__`` (created) and the close methods (closed)::

    @leakprobe.track_type(close=("close", "aclose"))
    class AIClient: ...

Snapshots (``object_snapshot().compare_to(old)``) have the shape of heap and
fd snapshots. Every call is a cheap no-op while leakprobe is stopped, and
nothing here raises into the application once a class is tracked: an
internal error is counted (``leakprobe_object_tracking_errors_total``) and
logged once.
"""

from __future__ import annotations

import functools
import time
import types
from collections.abc import Callable, Hashable, Iterable
from typing import Any, NamedTuple, TypeVar  # not dataclasses: slow to import

from ._heap import Frame, KeyType, _check_key_type, _frames, _group, _pairs

_C = TypeVar("_C", bound=type)
_ATTR = "__leakprobe_tracked__"  # on a tracked class: its TrackedType
_WRAPPED = "__leakprobe_wrapped__"  # on a wrapper function: True
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
MAX_NAME_BYTES = 200

# name -> TrackedType. No lock: a lock held by another thread at a fork
# would be held for ever in the child; dict.setdefault is atomic under the
# GIL, and the native registration is idempotent.
_types: dict[str, Any] = {}
_error_logged = False


def _native() -> Any:
    from . import _native as native

    return native


def register_type(name: str) -> Any:
    """The tracked type called `name` (e.g. ``"httpx.Client"``), registered
    on first use; the same object for the same name. Its ``created(obj)``
    and ``closed(obj)`` report instances. Registering works whether or not
    leakprobe runs; the calls count only while it does."""
    if not isinstance(name, str):
        raise TypeError(f"register_type() takes the type's name as a str, "
                        f"not {type(name).__name__}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"register_type(): the name {name!r} is not valid text "
                         "(lone surrogates); accepted: a printable str") from None
    if not name.strip() or size > MAX_NAME_BYTES or not name.isprintable():
        raise ValueError(f"register_type(): the name {name!r} is not accepted; accepted: "
                         f"a non-empty printable str of at most {MAX_NAME_BYTES} bytes "
                         "in UTF-8, e.g. 'httpx.Client'")
    tracked = _types.get(name)
    if tracked is None:
        tracked = _types.setdefault(name, _native().object_register_type(name))
    return tracked


def tracked_type_names() -> list[str]:
    """Every registered type's name (for container discovery)."""
    return list(_types)


def live_objects(type_name: str, limit: int) -> list[Any]:
    """Up to `limit` live, not closed, tracked objects of the type called
    `type_name`, oldest first: strong references, to drop after use. ``[]``
    for an unknown name or when leakprobe is not loaded; never raises."""
    tracked = _types.get(type_name)
    if tracked is None:
        return []
    try:
        return list(_native().object_live(tracked, limit))
    except Exception:
        return []


def fd_owner(obj: Any) -> int:
    """The fd owner id (leakprobe._owners) of a tracked object: its type and
    creation stack; 0 when `obj` is not tracked."""
    from . import _owners

    try:
        found = _native().object_record_of(obj)
    except Exception:
        return _owners.NO_OWNER
    if found is None:
        return _owners.NO_OWNER
    return _owners.owner_id(found[0], found[1])


def _internal_error(tracked: Any, where: str, exc: BaseException) -> None:
    """Counts an error of our own wrapper code; logs the first one."""
    global _error_logged
    try:
        tracked.count_error()
        if not _error_logged:
            _error_logged = True
            _native().log("warning", f"object tracking: internal error in {where} "
                          f"({tracked.name}): {exc!r}; counted in "
                          "leakprobe_object_tracking_errors_total, logged once")
    except Exception:  # never raise into the application
        pass


# A plain function gets the C wrapper (_native_wrapper below). The others
# (a coroutine function, a C method) get a Python wrapper generated with
# the wrapped function's own parameters (and its defaults), so a call costs
# one plain Python call more: a generic (*args, **kwargs) wrapper costs ~3x
# that on CPython 3.11 (docs/objects.md).
_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08
_INIT_BODY = """\
    __lp_wrapped({call})
    try:
        if type({self}).__leakprobe_tracked__ is __lp_tracked:
            __lp_created({self})
    except Exception as __lp_exc:
        __lp_error(__lp_tracked, "__init__", __lp_exc)
"""
_CLOSE_BODY = """\
    __lp_result = {await_}__lp_wrapped({call})
    __lp_closed({self})
    return __lp_result
"""


def _signature(fn: Any) -> tuple[str, str, str] | None:
    """(parameters, call arguments, first parameter) to forward every
    argument of Python function `fn` unchanged; None when it has no plain
    first parameter, uses our names, or is not a Python function."""
    code = getattr(fn, "__code__", None)
    if code is None or not isinstance(getattr(fn, "__defaults__", ()), (tuple, type(None))):
        return None
    argc, posonly, kwonly = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    names = list(code.co_varnames[:argc + kwonly])
    varargs = varkw = None
    extra = argc + kwonly
    if code.co_flags & _CO_VARARGS:
        varargs = code.co_varnames[extra]
        extra += 1
    if code.co_flags & _CO_VARKEYWORDS:
        varkw = code.co_varnames[extra]
    if argc == 0 or any(n.startswith("__lp_") for n in names + [varargs or "", varkw or ""]):
        return None
    params = names[:posonly] + (["/"] if posonly else []) + names[posonly:argc]
    call = names[:argc]
    if _positional_twin(fn) is not None:
        call += names[argc:]  # the twin takes them positionally (see below)
    if varargs:
        params.append("*" + varargs)
        call.append("*" + varargs)
    elif kwonly:
        params.append("*")
    params += names[argc:]
    if _positional_twin(fn) is None:
        call += [f"{n}={n}" for n in names[argc:]]
    if varkw:
        params.append("**" + varkw)
        call.append("**" + varkw)
    return ", ".join(params), ", ".join(call), names[0]


_TWINS: dict[Any, Any] = {}  # fn -> its positional twin, or None


def _positional_twin(fn: Any) -> Any:
    """Python function `fn` with its keyword-only parameters made positional,
    or None when it has none. The twin runs fn's own code (the same bytecode,
    globals, closure and names; only the code object's argument counts
    differ), so a wrapper passes every argument by position: passing a
    dozen keyword-only arguments by name costs CPython a name match each
    (ORM Session.__init__ has 12, httpx.Client.__init__ 20), about as much
    as the rest of the wrapper."""
    if fn in _TWINS:
        return _TWINS[fn]
    twin = None
    code = getattr(fn, "__code__", None)
    if type(fn) is types.FunctionType and code is not None and code.co_kwonlyargcount:
        try:
            twin = types.FunctionType(
                code.replace(co_argcount=code.co_argcount + code.co_kwonlyargcount,
                             co_kwonlyargcount=0),
                fn.__globals__, fn.__name__, None, fn.__closure__)
            twin.__qualname__ = fn.__qualname__
        except (TypeError, ValueError):
            twin = None
    _TWINS[fn] = twin
    return twin


def _make_wrapper(fn: Any, name: str, body: str, is_async: bool,
                  namespace: dict[str, Any], fallback: str) -> Any:
    """A function `name` running `body` around `fn` (as __lp_wrapped), with
    fn's parameters and defaults when it is a Python function, else
    `fallback`'s ((self, *args, **kwargs) forms)."""
    signature = _signature(fn)
    params, call, self_name = signature or fallback.split("|")
    source = (f"{'async ' if is_async else ''}def {name}({params}):\n"
              + body.format(call=call, self=self_name, await_="await " if is_async else ""))
    twin = _positional_twin(fn) if signature is not None else None
    namespace = dict(namespace, __lp_wrapped=fn if twin is None else twin)
    # Compiled as this file's code, so attribution sites skip the wrapper's
    # frame as leakprobe's own (library) code.
    exec(compile(source, __file__, "exec"), namespace)
    wrapper = namespace[name]
    if signature is not None:
        wrapper.__defaults__ = fn.__defaults__
        wrapper.__kwdefaults__ = fn.__kwdefaults__
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, _WRAPPED, True)
    return wrapper


def _native_wrapper(fn: Any, tracked: Any, owner: type | None) -> Any:
    """The C wrapper (``_native.tracked_method``) for a plain function
    (or one of these wrappers, inherited from a tracked base class), or
    None when `fn` needs a generated one (a coroutine function, a C
    method). It forwards the call's arguments as they came and adds no
    Python frame: the cheapest wrapper (docs/objects.md)."""
    native = _native()
    plain = type(fn) is types.FunctionType and not fn.__code__.co_flags & _CO_COROUTINE
    if not plain and type(fn) is not native.TrackedMethod:
        return None
    wrapper = native.tracked_method(fn, tracked, owner)
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, _WRAPPED, True)
    return wrapper


def _wrap_init(cls: type, tracked: Any) -> None:
    init = cls.__init__
    wrapper = _native_wrapper(init, tracked, cls)
    if wrapper is not None:
        cls.__init__ = wrapper  # type: ignore[misc]
        return
    if init is object.__init__:
        # object.__init__ must not see the arguments a custom __new__ took;
        # without a custom __new__, a call with arguments fails as before.
        if cls.__new__ is object.__new__:
            params = "self|self|self"
        else:
            params = "self, *args, **kwargs|self|self"
    else:
        params = "self, *args, **kwargs|self, *args, **kwargs|self"
    # An instance counts under the nearest tracked class of its type
    # (type(self).__leakprobe_tracked__): only that class's wrapper reports
    # it, not those of tracked base classes whose __init__ it calls.
    namespace = {"__lp_tracked": tracked, "__lp_created": tracked.created,
                 "__lp_error": _internal_error}
    cls.__init__ = _make_wrapper(  # type: ignore[misc]
        init, "__init__", _INIT_BODY, False, namespace, params)


def _wrap_close(cls: type, name: str, method: Callable[..., Any], tracked: Any) -> None:
    wrapper = _native_wrapper(method, tracked, None)
    if wrapper is not None:
        setattr(cls, name, wrapper)
        return
    is_async = bool(getattr(getattr(method, "__code__", None), "co_flags", 0) & _CO_COROUTINE)
    wrapper = _make_wrapper(method, name if name.isidentifier() else "close", _CLOSE_BODY,
                            is_async, {"__lp_closed": tracked.closed},
                            "self, *args, **kwargs|self, *args, **kwargs|self")
    setattr(cls, name, wrapper)


def _static_attr(cls: type, name: str) -> Any:
    """cls's attribute `name` as stored in the class dicts of its MRO
    (no descriptor call), or None."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None


def _close_names(close: Any) -> tuple[str, ...]:
    names = (close,) if isinstance(close, str) else close
    if not isinstance(names, (tuple, list)) or not names or \
            not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"track_type(): close must be a method name or a tuple of method "
                        f"names, e.g. 'close' or ('close', 'aclose'), not {close!r}")
    return tuple(names)


def track_type(cls: _C | None = None, /, close: str | tuple[str, ...] = "close",
               name: str | None = None) -> Any:
    """Track the instances of class `cls`: ``__init__`` counts a creation,
    each method named in `close` (and ``__exit__``/``__aexit__`` if the
    class has them) a close; an instance collected without being closed is
    counted as collected while open. Subclasses are counted under the
    nearest tracked class. `name` defaults to ``module.qualname``. Returns
    `cls` itself (modified in place), so it also works as a decorator::

        @track_type
        class Pool: ...

        @track_type(close=("close", "aclose"), name="app.AIClient")
        class AIClient: ...

    Raises TypeError or ValueError, naming what is accepted, for something
    that is not a class, a class whose instances cannot be weakly referenced
    or whose attributes cannot be set (built-in and extension types), a
    close method it lacks, or a bad name."""
    close_names = _close_names(close)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"track_type(): name must be a str or None, not {type(name).__name__}")
    if cls is None:
        return functools.partial(track_type, close=close_names, name=name)
    if not isinstance(cls, type):
        raise TypeError(f"track_type() takes a class, not {type(cls).__name__} ({cls!r}); "
                        "use it as track_type(MyClass) or as a class decorator")
    full_name = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__weakrefoffset__ == 0:
        raise TypeError(f"track_type(): instances of {full_name} cannot be weakly "
                        "referenced, so leakprobe cannot see them collected; accepted: "
                        "classes whose instances support weak references (with __slots__, "
                        "add '__weakref__' to them)")
    methods = {}
    for method_name in close_names:
        method = _static_attr(cls, method_name)
        if not callable(method) or isinstance(method, (staticmethod, classmethod)):
            raise ValueError(f"track_type(): {full_name} has no method {method_name!r} "
                             f"to wrap; pass close= the name(s) of the methods that close an "
                             f"instance, e.g. close=('close', 'aclose')")
        methods[method_name] = method
    for exit_name in ("__exit__", "__aexit__"):
        method = _static_attr(cls, exit_name)
        if callable(method) and exit_name not in methods:
            methods[exit_name] = method
    tracked = register_type(full_name if name is None else name)
    existing = cls.__dict__.get(_ATTR)
    if existing is not None:
        if existing is not tracked:
            raise ValueError(f"track_type(): {full_name} is tracked already, as "
                             f"{existing.name!r}; it cannot also be {tracked.name!r}")
    else:
        try:
            setattr(cls, _ATTR, tracked)
        except TypeError:
            raise TypeError(f"track_type(): {full_name} is a built-in or extension type "
                            "whose attributes cannot be set; accepted: classes defined in "
                            "Python (subclass it, and track the subclass)") from None
        _wrap_init(cls, tracked)
    for method_name, method in methods.items():
        if not getattr(method, _WRAPPED, False):
            _wrap_close(cls, method_name, method, tracked)
    return cls


# Snapshots: the live records at one moment, in the shape of FdSnapshot.

NATIVE = "<native>"


class ObjectRecord(NamedTuple):
    """One live tracked object, as leakprobe recorded its creation."""

    type: str  # the tracked type's name
    sequence: int  # creation order, process-wide
    created_ns: int  # time.monotonic_ns() clock at creation, at tick resolution
    age_seconds: float  # at the time the record was read
    site: Frame | None  # innermost application frame; None: no Python frame
    stack: tuple[Frame, ...]  # creating Python stack, innermost first

    @property
    def site_name(self) -> str:
        return str(self.site) if self.site is not None else NATIVE

    def __str__(self) -> str:
        return f"{self.type} created at {self.site_name}, {self.age_seconds:.1f} s ago"


class ObjectStat(NamedTuple):
    """The live objects of one type made at one site (or one full stack)."""

    type: str
    site: Frame | None
    traceback: tuple[Frame, ...]
    count: int
    records: tuple[ObjectRecord, ...]  # oldest first

    @property
    def site_name(self) -> str:
        return str(self.site) if self.site is not None else NATIVE

    def __str__(self) -> str:
        return f"{self.type} at {self.site_name}: count={self.count}"


class ObjectStatDiff(NamedTuple):
    """One type's objects from one site (or stack): what changed between
    two snapshots. ``created`` are live now and were not then; ``released``
    were live then and are not now (closed or collected)."""

    type: str
    site: Frame | None
    traceback: tuple[Frame, ...]
    count: int
    count_diff: int
    created: tuple[ObjectRecord, ...]
    released: tuple[ObjectRecord, ...]

    @property
    def site_name(self) -> str:
        return str(self.site) if self.site is not None else NATIVE

    def __str__(self) -> str:
        return (f"{self.type} at {self.site_name}: count={self.count} "
                f"({self.count_diff:+d}): {len(self.created)} created, "
                f"{len(self.released)} released")


class ObjectTypeStats(NamedTuple):
    """One tracked type's figures (what the metrics show), with its live
    objects grouped by creation site, most first."""

    name: str
    live: int
    created: int
    closed: int
    collected_while_open: int
    dropped: int  # creations beyond the record cap: counted, not tracked
    errors: int
    oldest_age_seconds: float  # 0 when none is live
    sites: tuple[ObjectStat, ...]

    def __str__(self) -> str:
        return (f"{self.name}: live={self.live} created={self.created} closed={self.closed} "
                f"collected_while_open={self.collected_while_open} "
                f"oldest={self.oldest_age_seconds:.1f}s")


class ObjectSnapshot:
    """The live tracked objects at one moment, with their creation stacks,
    and each type's counters."""

    def __init__(self, records: Iterable[ObjectRecord],
                 counters: Iterable[dict[str, Any]] = ()) -> None:
        self.timestamp = time.time()
        self.records: tuple[ObjectRecord, ...] = tuple(
            sorted(records, key=lambda r: r.sequence))
        self._counters = {c["name"]: c for c in counters}

    @classmethod
    def _take(cls, native: Any) -> ObjectSnapshot:
        counters = native.object_summary()["types"]
        raw_records, stacks, now = native.object_records()
        parsed = {}
        for stack_id, (_site, site_index, frames) in stacks.items():
            stack = _frames(frames)
            parsed[stack_id] = (stack[site_index] if stack else None, stack)
        records = [ObjectRecord(type_name, sequence, created_ns, (now - created_ns) / 1e9,
                                *parsed[stack_id])
                   for type_name, stack_id, created_ns, sequence in raw_records]
        return cls(records, counters)

    def __len__(self) -> int:
        return len(self.records)

    def _grouped(self, key_type: KeyType) -> dict[Hashable, ObjectStat]:
        _check_key_type(key_type)
        by_site = key_type == "site"
        groups = _group(self.records, lambda r: (r.type, r.site if by_site else r.stack))
        return {key: ObjectStat(records[0].type, records[0].site, records[0].stack,
                                len(records), tuple(records))
                for key, records in groups.items()}

    def statistics(self, key_type: KeyType = "site") -> list[ObjectStat]:
        """Live objects per type and site (or full stack), most first."""
        return sorted(self._grouped(key_type).values(),
                      key=lambda s: (-s.count, s.type, s.site_name))

    def compare_to(self, old: ObjectSnapshot,
                   key_type: KeyType = "site") -> list[ObjectStatDiff]:
        """Per type and site (or full stack), the objects created and
        released since the older snapshot `old`; largest growth first."""
        diffs = []
        for new, before in _pairs(self._grouped(key_type), old._grouped(key_type)):
            ref = new or before
            assert ref is not None
            now = {r.sequence: r for r in new.records} if new else {}
            then = {r.sequence: r for r in before.records} if before else {}
            created = tuple(r for seq, r in now.items() if seq not in then)
            released = tuple(r for seq, r in then.items() if seq not in now)
            diffs.append(ObjectStatDiff(ref.type, ref.site, ref.traceback, len(now),
                                        len(now) - len(then), created, released))
        return sorted(diffs, key=lambda d: (-d.count_diff, -len(d.created), d.type,
                                            d.site_name))

    def types(self) -> list[ObjectTypeStats]:
        """Every registered type's counters and live sites, most live
        first (types never used included, at 0)."""
        sites: dict[str, list[ObjectStat]] = {}
        for stat in self.statistics("site"):
            sites.setdefault(stat.type, []).append(stat)
        out = []
        for name, c in self._counters.items():
            if name == "[type table full]" and not (c["created"] or c["errors"]):
                continue
            out.append(ObjectTypeStats(
                name, c["live"], c["created"], c["closed"], c["collected_while_open"],
                c["dropped"], c["errors"], c["oldest_age_seconds"],
                tuple(sites.get(name, ()))))
        return sorted(out, key=lambda t: (-t.live, t.name))
