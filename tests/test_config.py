"""Bad configuration: one clear line naming the variable, the value and what
is accepted; the host keeps running (unprofiled, or without the exporter
where it could not bind); LEAKPROBE_STRICT=1 raises leakprobe.ConfigError."""

from __future__ import annotations

import json
import socket

import pytest

from conftest import leakprobe_lines, run_python
from leakprobe import _config

PROGRAM = """
import leakprobe
s = leakprobe.status()
print("alive", s["running"], s["port"])
"""

STRICT_PROGRAM = """
try:
    import leakprobe
except Exception as exc:
    print("raised", type(exc).__module__, type(exc).__qualname__, exc)
else:
    print("no error")
"""

# (environment, words the one warning line must contain)
BAD_VALUES = [
    ({"LEAKPROBE_PORT": "abc"}, ["LEAKPROBE_PORT='abc'", "an integer from 0 to 65535"]),
    ({"LEAKPROBE_PORT": "70000"}, ["LEAKPROBE_PORT='70000'", "an integer from 0 to 65535"]),
    ({"LEAKPROBE_PORT": "-1"}, ["LEAKPROBE_PORT='-1'", "an integer from 0 to 65535"]),
    ({"LEAKPROBE_LOG_LEVEL": "verbose"}, ["LEAKPROBE_LOG_LEVEL='verbose'", "one of trace, debug"]),
    ({"LEAKPROBE_HOST": "not-a-host"}, ["LEAKPROBE_HOST='not-a-host'", "an IPv4 address"]),
    ({"LEAKPROBE_HOST": "300.1.1.1"}, ["LEAKPROBE_HOST='300.1.1.1'", "an IPv4 address"]),
    ({"LEAKPROBE_STRICT": "perhaps"}, ["LEAKPROBE_STRICT='perhaps'", "1/true/yes/on"]),
    ({"LEAKPROBE_SAMPLE_INTERVAL": "0"}, ["LEAKPROBE_SAMPLE_INTERVAL='0'", "0.01 to 3600"]),
    ({"LEAKPROBE_EXPORTER_CPU_SHARE": "0"}, ["LEAKPROBE_EXPORTER_CPU_SHARE='0'",
                                              "a share of one CPU from 0.001 to 1"]),
    ({"LEAKPROBE_EXPORTER_CPU_SHARE": "2"}, ["LEAKPROBE_EXPORTER_CPU_SHARE='2'",
                                              "a share of one CPU from 0.001 to 1"]),
    ({"LEAKPROBE_EXPORTER_CPU_SHARE": "nan"}, ["LEAKPROBE_EXPORTER_CPU_SHARE='nan'",
                                                "a share of one CPU from 0.001 to 1"]),
    ({"LEAKPROBE_EXPORTER_CPU_SHARE": "2%"}, ["LEAKPROBE_EXPORTER_CPU_SHARE='2%'",
                                               "a share of one CPU from 0.001 to 1"]),
    ({"LEAKPROBE_PROT": "9100"}, ["LEAKPROBE_PROT is not a leakprobe option",
                                  "did you mean LEAKPROBE_PORT?", "known: LEAKPROBE_DISABLE"]),
]


@pytest.mark.parametrize("env,words", BAD_VALUES, ids=lambda p: str(p)[:40])
def test_bad_value_logs_one_line_and_host_keeps_running(env, words):
    proc = run_python(PROGRAM, **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "alive False None"
    lines = leakprobe_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("[leakprobe] [warning] ")
    for word in words:
        assert word in lines[0]
    assert "leakprobe is not running" in lines[0]


@pytest.mark.parametrize("env,words", [b for b in BAD_VALUES if "LEAKPROBE_STRICT" not in b[0]],
                         ids=lambda p: str(p)[:40])
def test_strict_mode_raises_config_error(env, words):
    proc = run_python(STRICT_PROGRAM, LEAKPROBE_STRICT="1", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("raised leakprobe._config ConfigError"), proc.stdout
    for word in words:
        assert word in proc.stdout
    assert leakprobe_lines(proc.stderr) == []


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_keeps_profiling_without_exporter(busy_port):
    proc = run_python(
        PROGRAM + "print(leakprobe.status()['features'], leakprobe.status()['error'] is not None)",
        LEAKPROBE_PORT=str(busy_port),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["alive True None", "['process', 'gc', 'heap', 'fds', 'objects', 'trends'] True"]
    lines = leakprobe_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert f"LEAKPROBE_PORT={busy_port}" in lines[0]
    assert f"cannot listen on 127.0.0.1:{busy_port}: Address already in use" in lines[0]
    assert "continues without the exporter" in lines[0]


# What a start that failed midway left running: nothing (heap, native heap
# and fd tracking started before the port was found busy).
LEFT_RUNNING = """
import json, os, sys
native = sys.modules["leakprobe._native"]  # loaded by the import that raised
left = {"heap": native.heap_summary()["enabled"], "native": native.native_summary()["enabled"],
        "fds": native.fd_active(), "threads": len(os.listdir("/proc/self/task")),
        "group_socket": any(f"-{os.getpid()}" in line and "leakprobe-" in line
                            for line in open("/proc/net/unix"))}
print(json.dumps(left))
"""


def test_port_in_use_in_strict_mode_raises_and_leaves_nothing_running(busy_port):
    proc = run_python(STRICT_PROGRAM + LEFT_RUNNING, LEAKPROBE_STRICT="1", LEAKPROBE_NATIVE="1",
                      LEAKPROBE_PORT=str(busy_port))
    assert proc.returncode == 0, proc.stderr
    first, left = proc.stdout.splitlines()[0], proc.stdout.splitlines()[-1]
    assert first.startswith("raised leakprobe._config ConfigError"), proc.stdout
    assert "Address already in use" in first
    assert json.loads(left) == {"heap": False, "native": False, "fds": False, "threads": 1,
                                "group_socket": False}, proc.stdout


def test_host_not_of_this_machine_is_reported():
    proc = run_python(PROGRAM, LEAKPROBE_HOST="192.0.2.1")
    assert proc.stdout.strip() == "alive True None"
    (line,) = leakprobe_lines(proc.stderr)
    assert "LEAKPROBE_HOST='192.0.2.1'" in line
    assert "Cannot assign requested address" in line


def test_bad_keyword_to_start_is_reported_and_strict_raises():
    proc = run_python(
        """
        import leakprobe
        leakprobe.stop()
        print(leakprobe.start(prot=1)["running"])
        try:
            leakprobe.start(port="x", strict=True)
        except leakprobe.ConfigError as exc:
            print("ConfigError", exc.problems)
        """
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "False"
    assert out[1] == "ConfigError [\"start(port=...)='x' is not valid; accepted: an integer from 0 to 65535 (0: any free port)\"]"
    (line,) = [l for l in leakprobe_lines(proc.stderr) if "prot" in l]
    assert "start(prot=...) is not a leakprobe option (did you mean port?)" in line


# Unit tests of the parser itself, on synthetic input.

def test_resolve_defaults_and_overrides():
    config, problems = _config.resolve({"LEAKPROBE_PORT": "9000", "OTHER": "x"}, {"host": "0.0.0.0"})
    assert problems == []
    assert (config.port, config.host, config.log_level, config.strict) == (9000, "0.0.0.0", "info", False)
    config, _ = _config.resolve({"LEAKPROBE_PORT": "9000"}, {"port": 0})
    assert config.port == 0


def test_resolve_collects_every_problem_and_keeps_defaults():
    config, problems = _config.resolve(
        {"LEAKPROBE_PORT": "x", "LEAKPROBE_LOG_LEVEL": "loud", "LEAKPROBE_NOPE": "1"})
    assert len(problems) == 3
    assert config.port == 9464 and config.log_level == "info"


@pytest.mark.parametrize("raw", [True, "1.5", "", " ", "0x10", 65536])
def test_port_parser_rejects(raw):
    _, problems = _config.resolve({}, {"port": raw})
    assert len(problems) == 1


def test_disable_is_not_a_start_option():
    _, problems = _config.resolve({}, {"disable": True})
    assert "start(disable=...) is not a leakprobe option" in problems[0]
