"""`import leakprobe` starts profiling from the environment; start, stop and
status behave as documented; LEAKPROBE_DISABLE=1 makes import do nothing."""

from __future__ import annotations

import re

import httpx

from conftest import leakprobe_lines, run_python, scrape, value


def test_import_serves_metrics_and_logs_the_port_once(server_factory):
    server = server_factory()
    status = server.status
    assert status["running"] is True
    assert status["host"] == "127.0.0.1"
    assert status["port"] > 0
    assert status["url"] == f"http://127.0.0.1:{status['port']}/metrics"
    assert status["features"] == ["process", "gc", "heap", "fds", "objects", "trends",
                                  "exporter"]
    families = scrape(server.url)
    assert value(families, "process_open_fds") > 0
    code, stderr = server.close()
    assert code == 0
    lines = leakprobe_lines(stderr)
    assert lines == [f"[leakprobe] [info] serving metrics on {server.url} (pid {status['pid']})"]


def test_import_is_idempotent_and_start_with_same_config_is_a_no_op():
    proc = run_python(
        """
        import importlib, leakprobe
        first = leakprobe.status()
        import leakprobe
        importlib.reload(leakprobe)
        assert leakprobe.start() == first, (leakprobe.start(), first)
        print(first["port"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert len(leakprobe_lines(proc.stderr)) == 1, proc.stderr


def test_stop_closes_the_port_and_start_reopens_with_new_options():
    proc = run_python(
        """
        import httpx, leakprobe, socket
        url = leakprobe.status()["url"]
        httpx.get(url).raise_for_status()
        leakprobe.stop()
        s = leakprobe.status()
        print(s["running"], s["port"], s["features"])
        try:
            httpx.get(url, timeout=2)
            print("still serving")
        except httpx.ConnectError:
            print("refused")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
        s = leakprobe.start(port=port, log_level="warning")
        print(s["port"] == port, httpx.get(s["url"]).status_code)
        s2 = leakprobe.start(port=0, log_level="warning")   # a different config restarts
        print(s2["port"] != port, httpx.get(s2["url"]).status_code)
        leakprobe.stop(); leakprobe.stop()  # stopping twice is harmless
        print(leakprobe.status()["running"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "False None []", "refused", "True 200", "True 200", "False"]


DISABLED = """
import sys, threading, leakprobe
print(leakprobe.status()["running"], "leakprobe._native" in sys.modules)
s = leakprobe.start()
print(s["running"], "leakprobe._native" in sys.modules, threading.active_count())
"""


def test_disable_makes_import_and_start_do_nothing():
    proc = run_python(DISABLED, LEAKPROBE_DISABLE="1")
    assert proc.returncode == 0, proc.stderr
    # Neither import nor start() loads the native module or starts a thread.
    assert proc.stdout.splitlines() == ["False False", "False False 1"]
    assert leakprobe_lines(proc.stderr) == []


def test_disable_does_not_check_other_values_at_import_but_start_reports_them():
    proc = run_python(DISABLED, LEAKPROBE_DISABLE="1",
                      LEAKPROBE_PORT="not even checked at import")
    assert proc.returncode == 0, proc.stderr
    # start() loads the native module to log the bad value, and starts nothing.
    assert proc.stdout.splitlines() == ["False False", "False True 1"]
    (line,) = leakprobe_lines(proc.stderr)
    assert line.startswith("[leakprobe] [warning] LEAKPROBE_PORT='not even checked at import'")
    assert line.endswith("; leakprobe is not running")


def test_log_level_off_silences_the_start_line():
    proc = run_python("import leakprobe; print(leakprobe.status()['running'])",
                      LEAKPROBE_LOG_LEVEL="off")
    assert proc.stdout.strip() == "True"
    assert leakprobe_lines(proc.stderr) == []


def test_ipv6_is_refused_with_the_reason():
    proc = run_python("import leakprobe; print(leakprobe.status()['running'])",
                      LEAKPROBE_HOST="::1")
    assert proc.stdout.strip() == "False"
    (line,) = leakprobe_lines(proc.stderr)
    assert "LEAKPROBE_HOST='::1' is not valid" in line and "no IPv6" in line


def test_versions_agree():
    import tomllib
    from pathlib import Path

    import leakprobe
    from leakprobe import _native

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert leakprobe.__version__ == _native.__version__ == pyproject["project"]["version"]
    assert "leakprobe_build_info" in _native.collect_text()
    assert f'version="{leakprobe.__version__}"' in _native.collect_text()


def test_native_stack_is_walked_by_libunwind():
    from leakprobe import _native

    frames = _native.native_stack(16)
    assert 2 <= len(frames) <= 16
    # The innermost frame is inside the extension, the outer ones in Python.
    assert "_native" in frames[0]
    assert any("python" in f or "_PyEval" in f for f in frames[1:]), frames


THROWER = r"""
#include <stdexcept>
#include <string>
struct Guard { std::string s{"cleanup"}; ~Guard() { s.clear(); } };
__attribute__((noinline)) void Inner(int n) {
  Guard g;  // a frame with a cleanup: unwinding it calls _Unwind_Resume
  if (n >= 0) throw std::runtime_error("from the test library");
}
extern "C" int throw_and_catch(int n) {
  try { Inner(n); } catch (const std::runtime_error&) { return 1; }
  return 0;
}
"""


def test_cxx_exceptions_of_other_extensions(tmp_path):
    """A C++ library loaded after leakprobe throws and catches through a
    frame with a cleanup. When libunwind came before libgcc_s in the
    extension's dependencies, libstdc++'s `throw` went to libunwind's
    _Unwind_RaiseException and the library's cleanup to libgcc_s's
    _Unwind_Resume: the process aborted (it did on `import matplotlib`)."""
    import shutil
    import subprocess

    cxx = shutil.which("g++")
    assert cxx, "a C++ compiler is required (Debian: g++)"
    source = tmp_path / "thrower.cpp"
    source.write_text(THROWER)
    library = tmp_path / "libthrower.so"
    subprocess.run([cxx, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)],
                   check=True, timeout=120)
    code = f"""
        import ctypes, leakprobe
        from leakprobe import _native  # loaded whether or not leakprobe runs
        lib = ctypes.CDLL({str(library)!r})
        print(lib.throw_and_catch(1), lib.throw_and_catch(-1), leakprobe.status()["running"])
    """
    for env, running in (({"LEAKPROBE_DISABLE": "1"}, "False"), ({"LEAKPROBE_PORT": "0"}, "True")):
        proc = run_python(code, **env)
        assert proc.returncode == 0, (env, proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.split() == ["1", "0", running]
