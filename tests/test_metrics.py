"""The exporter's output: the required families, real values that move with
the process, valid Prometheus text (prometheus_client's parser and promtool),
gathered without the GIL, and every family documented."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, scrape, value

REQUIRED = [
    "process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds",
    "process_max_fds", "process_cpu_seconds", "process_start_time_seconds",
    "process_threads", "python_gc_collections", "python_gc_objects_collected",
    "python_gc_objects_uncollectable", "python_info", "leakprobe_build_info",
]

# Commands the child runs on request: one line in, one line out.
COMMANDS = """
import gc, os, re
held = []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "open":
        held += [open(os.devnull) for _ in range(int(cmd[1]))]
    elif cmd[0] == "alloc":
        held.append(bytearray(int(cmd[1]) << 20))
    elif cmd[0] == "gc":
        for _ in range(int(cmd[1])): gc.collect()
    elif cmd[0] == "fds":
        print(len(os.listdir("/proc/self/fd")) - 1, flush=True); continue
    elif cmd[0] == "gcstats":
        print(json.dumps(gc.get_stats()), flush=True); continue
    elif cmd[0] == "hold-gil":
        print("holding", flush=True)
        # One C call that never releases the GIL: exponential backtracking
        # (about 2.5 s at 26 on this machine).
        re.match(r"(a+)+$", "a" * int(cmd[1]) + "b")
    print("done", flush=True)
"""


def test_required_families_are_present_with_sane_values(server_factory):
    server = server_factory(COMMANDS, LEAKPROBE_SAMPLE_INTERVAL="0.05")
    server.ask("gc 3")
    time.sleep(0.5)  # > several sample intervals: the sampler has read gc.get_stats()
    families = scrape(server.url)
    gc_now = json.loads(server.ask("gcstats"))
    for name in REQUIRED:
        assert name in families, name
    assert value(families, "process_resident_memory_bytes") > 5 << 20
    assert value(families, "process_virtual_memory_bytes") > value(families, "process_resident_memory_bytes")
    assert value(families, "process_threads") >= 3  # main, sampler, server threads
    assert value(families, "process_max_fds") >= 1024
    assert value(families, "process_start_time_seconds") == pytest.approx(time.time(), abs=120)
    # At scrape time the server also holds the scrape's own connection, which
    # it may or may not have closed yet when the child lists its fds.
    assert value(families, "process_open_fds") - int(server.ask("fds")) in (0, 1)
    # One series per generation, each a figure gc.get_stats() gave: counters
    # read before the child's own read, after its three full collections.
    assert {dict(labels)["generation"] for _, labels in families["python_gc_collections"]} \
        == {"0", "1", "2"}
    for generation, stats in enumerate(gc_now):
        for family, key in (("python_gc_collections_total", "collections"),
                            ("python_gc_objects_collected_total", "collected"),
                            ("python_gc_objects_uncollectable_total", "uncollectable")):
            assert value(families, family, generation=str(generation)) <= stats[key], family
    assert value(families, "python_gc_collections_total", generation="2") >= 3
    info = families["python_info"]
    ((_, labels),) = info.keys()
    assert dict(labels)["implementation"] == "CPython"
    import sys
    assert dict(labels)["version"] == "%d.%d.%d" % sys.version_info[:3]


def test_values_follow_the_process(server_factory):
    server = server_factory(COMMANDS, LEAKPROBE_SAMPLE_INTERVAL="0.05")
    before = scrape(server.url)
    server.ask("open 50")
    server.ask("alloc 200")
    server.ask("gc 5")
    time.sleep(0.5)  # > several sample intervals: the sampler has run
    after = scrape(server.url)
    assert value(after, "process_open_fds") - value(before, "process_open_fds") == 50
    grown = value(after, "process_resident_memory_bytes") - value(before, "process_resident_memory_bytes")
    assert grown > 150 << 20
    g2 = value(after, "python_gc_collections_total", generation="2") - \
        value(before, "python_gc_collections_total", generation="2")
    assert g2 >= 5


def test_exposition_passes_promtool(server_factory):
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required; scripts/setup.sh installs it"
    server = server_factory()
    httpx.get(server.url)  # so prometheus-cpp's latency summary has values
    text = scrape(server.url)["__text__"]
    result = subprocess.run([promtool, "check", "metrics"], input=text,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # no lint warnings either


def test_scrape_does_not_need_the_gil(server_factory):
    server = server_factory(COMMANDS)
    server.proc.stdin.write("hold-gil 26\n")
    server.proc.stdin.flush()
    assert server.readline().strip() == "holding"
    families = scrape(server.url)  # while the child's main thread holds the GIL
    finished = server.proc.stdout.readable() and _line_ready(server)
    assert not finished, "the GIL-holding call finished before the scrape; make it longer"
    assert value(families, "process_open_fds") > 0
    assert server.readline().strip() == "done"


def _line_ready(server) -> bool:
    import select
    ready, _, _ = select.select([server.proc.stdout], [], [], 0)
    return bool(ready)


def test_concurrent_scrapes_under_load(server_factory):
    """16 scrapers opening a connection per request, and 3 keeping theirs
    alive, all at once: every request is answered and the host is unharmed.
    (The server has 4 threads and closes every connection after its one
    response; the storm with more persistent clients than threads is
    test_scrape_load.py.)"""
    server = server_factory()
    errors: list[BaseException] = []

    def fresh_connections() -> None:
        try:
            for _ in range(25):
                httpx.get(server.url, timeout=20).raise_for_status()
        except BaseException as exc:  # reported below
            errors.append(exc)

    def keep_alive() -> None:
        try:
            with httpx.Client(timeout=20) as client:
                for _ in range(100):
                    client.get(server.url).raise_for_status()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fresh_connections) for _ in range(16)]
    threads += [threading.Thread(target=keep_alive) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a scraper is still waiting after 120 s"
    assert errors == []
    assert value(scrape(server.url), "exposer_scrapes_total") >= 16 * 25 + 3 * 100
    code, _ = server.close()
    assert code == 0


def test_every_exported_family_is_documented_and_every_documented_one_exported(server_factory):
    # Every feature on (the defaults, a fixed port so the group's families
    # too, and native memory, off by default), and one scrape before, so
    # that the latency summary has values.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_factory(LEAKPROBE_PORT=str(port), LEAKPROBE_NATIVE="1")
    assert server.status["features"] == ["process", "gc", "heap", "native", "fds", "objects",
                                         "trends", "exporter"]
    httpx.get(server.url)
    documented = set(re.findall(r"^\| `([a-z_]+)`", (ROOT / "docs" / "metrics.md").read_text(), re.M))
    assert documented
    text = scrape(server.url)["__text__"]
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert exported, text
    missing = exported - documented
    assert not missing, f"exported but not in docs/metrics.md: {sorted(missing)}"
    stale = documented - exported
    assert not stale, f"in docs/metrics.md but not exported: {sorted(stale)}"
