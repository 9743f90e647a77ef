"""How the adapters come in: lazily, once, by post-import hooks (leakprobe
imports none of the libraries), switched by LEAKPROBE_ADAPTERS and by
stop()/start(), and never raising into the application."""

from __future__ import annotations

from adapter_support import run_child
from conftest import leakprobe_lines

LIBRARIES = ["httpx", "httpcore", "requests", "urllib3", "sqlalchemy", "sqlite3",
             "urllib.request", "subprocess", "celery", "starlette", "fastapi"]


def test_leakprobe_imports_none_of_the_libraries():
    result = run_child(f"""
    emit(imported=[m for m in {LIBRARIES!r} if m in sys.modules],
         installed=adapters.installed(), status=leakprobe.status()["running"])
    """)
    assert result["status"] is True
    assert result["imported"] == []
    assert result["installed"] == ["threading"]  # imported by the interpreter's start-up


def wrapper_layers(expression: str) -> str:
    """Child code: how many layers (wrapt's, or track_type's) wrap the
    function at `expression`."""
    return f"""
    import wrapt
    layers, function = 0, {expression}
    while isinstance(function, wrapt.ObjectProxy) or \\
            getattr(function, "__leakprobe_wrapped__", False):
        layers, function = layers + 1, function.__wrapped__
    """


def test_library_imported_before_leakprobe_is_instrumented_once():
    # httpx first, then the prelude's import leakprobe; a restart must not wrap again
    result = run_child("""
    import subprocess
    before = adapters.installed()
    leakprobe.stop()
    leakprobe.start(port=0, log_level="warning")
    for _ in range(3):
        httpx.Client().close()
    """ + wrapper_layers('httpx.Client.__dict__["__init__"]') + """
    init_layers = layers
    """ + wrapper_layers('__import__("subprocess").Popen.__dict__["__init__"]') + """
    emit(counts=counts("httpx.Client"), layers=[init_layers, layers], before=before)
    """, first="import httpx")
    assert "httpx" in result["before"]
    assert result["layers"] == [1, 1]  # track_type's for httpx, wrapt's for Popen
    assert result["counts"] == {"live": 0, "created": 3, "closed": 3, "collected_while_open": 0}


def test_library_imported_after_leakprobe_is_instrumented_at_its_import():
    result = run_child("""
    before = adapters.installed()
    import sqlite3
    after = adapters.installed()
    sqlite3.connect(":memory:").close()
    emit(before=before, after=after, counts=counts("sqlite3.Connection"))
    """)
    assert "sqlite3" not in result["before"] and "sqlite3" in result["after"]
    assert result["counts"] == {"live": 0, "created": 1, "closed": 1, "collected_while_open": 0}


def test_stopped_leakprobe_passes_calls_through_and_counts_again_after_start():
    result = run_child("""
    import subprocess
    subprocess.run(["true"])
    first = counts("subprocess.Popen")
    leakprobe.stop()
    stopped_active = adapters.active()
    subprocess.run(["true"])
    leakprobe.start(port=0, log_level="warning")
    subprocess.run(["true"])
    emit(first=first, counts=counts("subprocess.Popen"), stopped_active=stopped_active,
         active=adapters.active())
    """)
    assert result["first"] == {"live": 0, "created": 1, "closed": 1, "collected_while_open": 0}
    assert result["stopped_active"] == []
    assert "subprocess" in result["active"]
    # a restarted registry counts from its start: the run made after it
    assert result["counts"] == {"live": 0, "created": 1, "closed": 1, "collected_while_open": 0}


def test_adapters_none_leaves_every_library_untouched():
    result = run_child(wrapper_layers('__import__("httpx").Client.__dict__["__init__"]') + """
    import httpx, sqlite3, subprocess
    emit(layers=layers, installed=adapters.installed(), connect=type(sqlite3.connect).__name__,
         tracked=hasattr(httpx.Client, "__leakprobe_tracked__"))
    """, LEAKPROBE_ADAPTERS="none")
    assert result == {"layers": 0, "installed": [], "connect": "builtin_function_or_method",
                      "tracked": False, "__stderr__": ""}


def test_disabled_leakprobe_registers_no_hook():
    result = run_child(wrapper_layers('__import__("httpx").Client.__dict__["__init__"]') + """
    emit(layers=layers, installed=adapters.installed())
    """, LEAKPROBE_DISABLE="1")
    assert result["layers"] == 0 and result["installed"] == []


def test_a_list_of_adapters_installs_only_those():
    result = run_child("""
    import httpx, sqlite3, subprocess
    emit(installed=adapters.installed())
    """, LEAKPROBE_ADAPTERS="httpx, sqlite3")
    assert result["installed"] == ["httpx", "sqlite3"]


def test_a_bad_adapters_value_is_named_with_what_is_accepted():
    result = run_child("""
    emit(running=leakprobe.status()["running"], problems=leakprobe.status()["problems"])
    """, LEAKPROBE_ADAPTERS="httpx,redis")
    assert result["running"] is False
    assert result["problems"] == [
        "LEAKPROBE_ADAPTERS='httpx,redis' is not valid; accepted: all, none, "
        "1/true/yes/on, 0/false/no/off, or a comma-separated list of httpx, requests, "
        "urllib, sqlalchemy, sqlite3, threading, subprocess, celery, asgi"]


def test_an_internal_error_never_reaches_the_application():
    result = run_child("""
    from leakprobe import _objects

    class Broken:
        def created(self, obj):
            raise RuntimeError("registry broken")

        closed = created

    _objects.register_type = lambda name: Broken()
    import subprocess
    codes = [subprocess.Popen(["sh", "-c", f"exit {i}"]).wait() for i in range(5)]
    emit(errors=adapters.errors(), codes=codes)
    """)
    assert result["codes"] == [0, 1, 2, 3, 4]
    assert result["errors"] == {"subprocess": 10}  # 5 creations and 5 waits, counted
    lines = leakprobe_lines(result["__stderr__"])
    assert len(lines) == 1 and \
        "the subprocess adapter failed: RuntimeError('registry broken')" in lines[0]


def test_a_later_start_instruments_a_library_that_was_not_wanted_at_its_import():
    result = run_child("""
    import httpx
    before = adapters.installed()
    leakprobe.start(port=0, log_level="warning", adapters="all")
    after = adapters.installed()
    httpx.Client().close()
    emit(before=before, after=after, counts=counts("httpx.Client"))
    """, LEAKPROBE_ADAPTERS="sqlite3")
    assert "httpx" not in result["before"] and "httpx" in result["after"]
    assert result["counts"] == {"live": 0, "created": 1, "closed": 1, "collected_while_open": 0}


def test_a_hook_that_fired_while_its_adapter_was_unwanted_installs_it_at_a_later_start():
    result = run_child("""
    leakprobe.start(port=0, log_level="warning", adapters="none")
    import requests  # its hook (registered by the first start) fires: not wanted now
    before = adapters.installed()
    leakprobe.start(port=0, log_level="warning", adapters="requests")
    with requests.Session():
        pass
    emit(before=before, after=adapters.installed(), counts=counts("requests.Session"))
    """)
    assert "requests" not in result["before"] and "requests" in result["after"]
    assert result["counts"] == {"live": 0, "created": 1, "closed": 1, "collected_while_open": 0}
