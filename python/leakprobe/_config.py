"""leakprobe's options: one table, read from ``LEAKPROBE_*`` variables and
overridable by keyword arguments to :func:`leakprobe.start`.

Every option is listed in ``OPTIONS`` and documented in
``docs/configuration.md`` (a test checks both directions). Parsing never
raises on its own: it returns the problems found, one sentence each, naming
the variable, the value and what is accepted; the caller decides whether to
log them (default) or raise :class:`ConfigError` (``LEAKPROBE_STRICT=1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple  # not dataclasses: it costs ~19 ms to import

ENV_PREFIX = "LEAKPROBE_"
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A leakprobe option has a value leakprobe cannot use.

    ``problems`` holds one sentence per bad option.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class _Invalid(Exception):
    """Raised by a parser: the value is not accepted."""


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Invalid


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise _Invalid
        try:
            number = int(str(value).strip(), 10)
        except ValueError:
            raise _Invalid from None
        if not low <= number <= high:
            raise _Invalid
        return number

    return parse


_parse_port = _int_in(0, 65535)


def _parse_host(value: Any) -> str:
    import _socket  # the C module: cheap, unlike ipaddress

    text = str(value).strip()
    try:
        _socket.inet_pton(_socket.AF_INET, text)
    except (OSError, ValueError):
        raise _Invalid from None
    return text


def _parse_log_level(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in LOG_LEVELS:
        raise _Invalid
    return text


def _number_in(low: float, high: float) -> Callable[[Any], float]:
    """A parser of a finite number from `low` to `high` (seconds, shares)."""
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise _Invalid
        try:
            number = float(str(value).strip())
        except ValueError:
            raise _Invalid from None
        if not (math.isfinite(number) and low <= number <= high):
            raise _Invalid
        return number

    return parse


_seconds_in = _number_in
_parse_interval = _seconds_in(0.01, 3600)
_parse_cpu_share = _number_in(0.001, 1)


def _parse_run_dir(value: Any) -> str | None:
    """An absolute path of a directory (not checked for existence here: the
    run file's writer reports a directory it cannot write to); unset or
    empty: no run file."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid
    text = str(value)
    if not text.strip():
        return None
    if not text.startswith("/"):
        raise _Invalid
    return text


def _parse_targets_file(value: Any) -> str | None:
    """An absolute path ending in ``.json`` (the Prometheus ``file_sd``
    targets file; its directory is checked when leakprobe starts); unset or
    empty: none."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid
    text = str(value)
    if not text.strip():
        return None
    if not text.startswith("/") or not text.endswith(".json") or text.endswith("/.json") \
            or "\0" in text:
        raise _Invalid
    return text


_ROLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def _parse_role(value: Any) -> str | None:
    """A role label (lower-case letters, digits, '-', '_', '.'; at most 64),
    or unset/empty (None): detected from the command line and parentage."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid
    text = str(value).strip()
    if len(text) > 64 or not set(text) <= _ROLE_CHARS:
        raise _Invalid
    return text or None


# The built-in adapters (leakprobe.adapters.ADAPTERS; kept here so that
# parsing the option imports nothing).
ADAPTER_NAMES = ("httpx", "requests", "urllib", "sqlalchemy", "sqlite3", "threading",
                 "subprocess", "celery", "asgi")


def _parse_adapters(value: Any) -> str:
    """Canonical form: "all", "none", or the names listed, comma-separated,
    in ADAPTER_NAMES order (see adapter_names)."""
    if isinstance(value, bool):
        return "all" if value else "none"
    text = str(value).strip().lower()
    if text in ("all", *_TRUE):
        return "all"
    if text in ("none", "", *_FALSE):
        return "none"
    names = {name.strip() for name in text.split(",") if name.strip()}
    if not names or not names <= set(ADAPTER_NAMES):
        raise _Invalid
    return ",".join(name for name in ADAPTER_NAMES if name in names)


def adapter_names(value: str) -> tuple[str, ...]:
    """The adapters a canonical ``adapters`` value switches on."""
    if value == "all":
        return ADAPTER_NAMES
    if value == "none":
        return ()
    return tuple(value.split(","))


class Option(NamedTuple):
    name: str  # keyword for start(); the variable is LEAKPROBE_<NAME>
    default: Any
    parse: Callable[[Any], Any]
    accepted: str  # what the error message says is accepted
    startable: bool = True  # may be passed to start()

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("disable", False, _parse_bool,
           "1/true/yes/on or 0/false/no/off", startable=False),
    Option("host", "127.0.0.1", _parse_host,
           "an IPv4 address of this host, e.g. 127.0.0.1 or 0.0.0.0 (no IPv6: "
           "Debian's civetweb, the HTTP server, is built without it)"),
    Option("port", 9464, _parse_port,
           "an integer from 0 to 65535 (0: any free port)"),
    Option("group", True, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("exporter_cpu_share", 0.02, _parse_cpu_share,
           "a share of one CPU from 0.001 to 1 (0.02: 2 %)"),
    Option("role", None, _parse_role,
           "empty (detected) or up to 64 of a-z, 0-9, '-', '_' and '.'"),
    Option("targets_file", None, _parse_targets_file,
           "an absolute path of a file ending in .json, in a directory this user can "
           "write to, or empty (no targets file)"),
    Option("log_level", "info", _parse_log_level, "one of " + ", ".join(LOG_LEVELS)),
    Option("strict", False, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("sample_interval", 1.0, _parse_interval,
           "a number of seconds from 0.01 to 3600"),
    Option("run_dir", None, _parse_run_dir,
           "an absolute path of a directory, or empty (no run file)"),
    Option("heap", True, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("heap_sample_bytes", 128 * 1024, _int_in(1, 1 << 30),
           "an integer number of bytes from 1 to 1073741824"),
    Option("heap_frames", 32, _int_in(1, 128), "an integer from 1 to 128"),
    Option("heap_top_sites", 10, _int_in(1, 100), "an integer from 1 to 100"),
    Option("native", False, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("native_sample_bytes", 256 * 1024, _int_in(1, 1 << 30),
           "an integer number of bytes from 1 to 1073741824"),
    Option("native_top_sites", 10, _int_in(1, 100), "an integer from 1 to 100"),
    Option("fds", True, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("fd_frames", 32, _int_in(1, 128), "an integer from 1 to 128"),
    Option("fd_top_sites", 10, _int_in(1, 100), "an integer from 1 to 100"),
    Option("fd_reconcile_interval", 5.0, _seconds_in(0.05, 3600),
           "a number of seconds from 0.05 to 3600"),
    Option("objects", True, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("object_frames", 32, _int_in(1, 128), "an integer from 1 to 128"),
    Option("object_top_sites", 5, _int_in(1, 100), "an integer from 1 to 100"),
    Option("object_records", 100000, _int_in(0, 100_000_000),
           "an integer from 0 to 100000000"),
    Option("adapters", "all", _parse_adapters,
           "all, none, 1/true/yes/on, 0/false/no/off, or a comma-separated list of "
           + ", ".join(ADAPTER_NAMES)),
    Option("container_discover", True, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("container_discover_interval", 30.0, _seconds_in(0.05, 3600),
           "a number of seconds from 0.05 to 3600"),
    Option("census", False, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("census_interval", 60.0, _seconds_in(0.05, 3600),
           "a number of seconds from 0.05 to 3600"),
    Option("census_top_types", 20, _int_in(1, 100), "an integer from 1 to 100"),
    Option("census_max_pause", 0.25, _seconds_in(0.001, 60),
           "a number of seconds from 0.001 to 60"),
    Option("trends", True, _parse_bool, "1/true/yes/on or 0/false/no/off"),
    Option("trend_interval", 10.0, _seconds_in(0.05, 3600),
           "a number of seconds from 0.05 to 3600"),
    Option("trend_warmup", 300.0, _seconds_in(0, 86400),
           "a number of seconds from 0 to 86400"),
)
_BY_NAME = {option.name: option for option in OPTIONS}
_BY_VARIABLE = {option.variable: option for option in OPTIONS}


class Config(NamedTuple):
    disable: bool = False
    host: str = "127.0.0.1"
    port: int = 9464
    group: bool = True  # processes of one fixed port share one scrape target
    exporter_cpu_share: float = 0.02  # the server threads' CPU cap (exporter.h)
    role: str | None = None  # None: detected (leakprobe._group.detect_role)
    targets_file: str | None = None  # a file_sd targets file (leakprobe._targets)
    log_level: str = "info"
    strict: bool = False
    sample_interval: float = 1.0
    run_dir: str | None = None  # set by `leakprobe run`: where the run file goes
    heap: bool = True
    heap_sample_bytes: int = 128 * 1024
    heap_frames: int = 32
    heap_top_sites: int = 10
    native: bool = False  # malloc-family tracking (docs/native.md)
    native_sample_bytes: int = 256 * 1024
    native_top_sites: int = 10
    fds: bool = True
    fd_frames: int = 32
    fd_top_sites: int = 10
    fd_reconcile_interval: float = 5.0
    objects: bool = True
    object_frames: int = 32
    object_top_sites: int = 5
    object_records: int = 100000
    adapters: str = "all"
    container_discover: bool = True
    container_discover_interval: float = 30.0
    census: bool = False
    census_interval: float = 60.0
    census_top_types: int = 20
    census_max_pause: float = 0.25
    trends: bool = True
    trend_interval: float = 10.0
    trend_warmup: float = 300.0


def _unknown(what: str, name: str, known: list[str]) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{what} is not a leakprobe option{hint}; known: {', '.join(known)}"


def resolve(
    environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> tuple[Config, list[str]]:
    """Builds the configuration from ``environ`` and keyword ``overrides``.

    Returns the configuration (defaults where a value was bad) and the list of
    problems, one sentence each. An empty list means the configuration is
    exactly what was asked for.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []

    def take(option: Option, raw: Any, source: str) -> None:
        try:
            values[option.name] = option.parse(raw)
        except _Invalid:
            problems.append(f"{source}={raw!r} is not valid; accepted: {option.accepted}")

    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        option = _BY_VARIABLE.get(variable)
        if option is None:
            problems.append(_unknown(variable, variable, list(_BY_VARIABLE)))
        else:
            take(option, environ[variable], variable)

    for name, raw in (overrides or {}).items():
        option = _BY_NAME.get(name)
        if option is None or not option.startable:
            startable = [o.name for o in OPTIONS if o.startable]
            problems.append(_unknown(f"start({name}=...)", name, startable))
        else:
            take(option, raw, f"start({name}=...)")

    defaults = {option.name: option.default for option in OPTIONS}
    return Config(**{**defaults, **values}), problems
