"""Fork and exit never hang or crash: a forked child abandons the inherited
exporter, closes its listening socket and serves its own; exits with
leakprobe are prompt even while being scraped."""

from __future__ import annotations

import json

import pytest

from conftest import leakprobe_lines, run_python, scrape, value

FORK_AND_REPORT = """
import json, os, sys, warnings, httpx, leakprobe
warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
parent = leakprobe.status()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    held = [open(os.devnull) for _ in range(100)]   # only the child has these
    child = leakprobe.status()
    families_ok = httpx.get(child["url"], timeout=10).status_code
    os.write(w, (json.dumps([child, families_ok]) + "\\n").encode())
    sys.stdin.read()  # keep serving until the test is done
    os._exit(0)
os.close(w)
line = os.fdopen(r).readline()
print(json.dumps([parent, pid] + json.loads(line)), flush=True)
sys.stdin.read()
os.kill(pid, 9); os.waitpid(pid, 0)
"""


def test_fork_then_scrape_parent_and_child(server_factory):
    import subprocess
    import sys

    from conftest import child_env

    proc = subprocess.Popen([sys.executable, "-c", FORK_AND_REPORT], env=child_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        parent, child_pid, child, child_code = json.loads(proc.stdout.readline())
        assert child_code == 200
        assert child["pid"] == child_pid != parent["pid"]
        assert child["running"] and child["port"] != parent["port"]
        parent_families = scrape(parent["url"])
        child_families = scrape(child["url"])
        # Each exporter describes its own process.
        assert value(child_families, "process_open_fds") >= value(parent_families, "process_open_fds") + 100
        # The child closed the listening socket it inherited: only the parent
        # listens on the parent's port.
        fds = subprocess.run(["ss", "-Hltnp", f"sport = :{parent['port']}"],
                             capture_output=True, text=True).stdout
        assert f"pid={parent['pid']}," in fds and f"pid={child_pid}," not in fds, fds
    finally:
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, stderr
    assert len(leakprobe_lines(stderr)) == 2  # one start line per process


def test_twenty_fork_exit_cycles_do_not_hang():
    proc = run_python(
        """
        import os, sys, warnings, httpx, leakprobe
        warnings.simplefilter("ignore", DeprecationWarning)
        url = leakprobe.status()["url"]
        for i in range(20):
            pid = os.fork()
            if pid == 0:
                httpx.get(leakprobe.status()["url"], timeout=10).raise_for_status()
                if i % 2:
                    os._exit(7)
                sys.exit(7)  # through atexit and interpreter finalization
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 7, status
            httpx.get(url, timeout=10).raise_for_status()
        print("ok")
        """,
        timeout=120, LEAKPROBE_LOG_LEVEL="warning",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert leakprobe_lines(proc.stderr) == []


def test_child_with_fixed_port_and_no_group_runs_without_exporter_and_parent_is_unharmed():
    # With LEAKPROBE_GROUP=0 (tests/test_multiprocess.py has the default).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_python(
        """
        import os, warnings, httpx, leakprobe
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            s = leakprobe.status()
            print("child", s["running"], s["port"], flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent", httpx.get(leakprobe.status()["url"]).status_code)
        """,
        LEAKPROBE_PORT=str(port), LEAKPROBE_GROUP="0",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["child True None", "parent 200"]
    assert any("Address already in use" in line for line in leakprobe_lines(proc.stderr))


def test_multiprocessing_fork_pool():
    proc = run_python(
        """
        import multiprocessing as mp, warnings, leakprobe
        warnings.simplefilter("ignore", DeprecationWarning)
        def work(x):
            return leakprobe.status()["running"], x * x
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(4) as pool:
                print(pool.map(work, range(8)))
        """,
        timeout=120, LEAKPROBE_LOG_LEVEL="warning",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([(True, x * x) for x in range(8)])


@pytest.mark.parametrize("how", ["return", "sys.exit", "exception", "os._exit"])
def test_exit_under_scrape_load_is_clean(how):
    body = {
        "return": "pass",
        "sys.exit": "sys.exit(3)",
        # A real uncaught exception: sys.excepthook prints it, then the
        # interpreter finalizes and exits with status 1.
        "exception": "raise RuntimeError('uncaught at exit')",
        "os._exit": "os._exit(3)",
    }[how]
    proc = run_python(
        f"""
        import os, sys, threading, httpx, leakprobe
        url = leakprobe.status()["url"]
        def hammer():
            with httpx.Client() as c:
                while True:
                    try:
                        c.get(url, timeout=5)
                    except httpx.HTTPError:
                        pass
        for _ in range(4):
            threading.Thread(target=hammer, daemon=True).start()
        import time; time.sleep(0.5)
        {body}
        """,
        timeout=30, LEAKPROBE_LOG_LEVEL="warning",
    )
    assert proc.returncode == {"return": 0, "exception": 1}.get(how, 3), proc.stderr
    assert "Fatal" not in proc.stderr and leakprobe_lines(proc.stderr) == [], proc.stderr
    if how == "exception":
        # The exception's own traceback, once, and nothing after it.
        assert proc.stderr.count("Traceback") == 1, proc.stderr
        assert proc.stderr.rstrip().endswith("RuntimeError: uncaught at exit"), proc.stderr
    else:
        assert "Traceback" not in proc.stderr, proc.stderr


# What a subprocess child sees in its preexec_fn, between fork and exec: its
# threads and the TCP sockets it listens on (its own fds whose inode is in
# LISTEN state in /proc/self/net/tcp{,6}).
PREEXEC_PROBE = """
import json, os, subprocess, sys, threading, leakprobe

def listening():
    inodes = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/self/net/{table}") as f:
            next(f)
            inodes.update(row.split()[9] for row in f if row.split()[3] == "0A")
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[len("socket:["):-1])
    return sorted(mine & inodes)

def probe():
    return {"threads": threading.active_count(),
            "tasks": len(os.listdir("/proc/self/task")),
            "listening": listening(),
            "running": leakprobe.status()["running"]}

r, w = os.pipe()
def preexec():
    os.write(w, json.dumps(probe()).encode())
    os.close(w)

assert leakprobe.status()["port"]
parent = probe()
ran = subprocess.run([sys.executable, "-c", "print('exec ok')"], preexec_fn=preexec,
                     capture_output=True, text=True, timeout=30)
os.close(w)
child = json.loads(os.read(r, 65536))
print(json.dumps({"parent": parent, "child": child, "stdout": ran.stdout,
                  "code": ran.returncode, "after": probe()}))
"""


def test_subprocess_preexec_fn_child_starts_no_thread_and_no_exporter():
    proc = run_python(PREEXEC_PROBE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # The parent serves (a listening socket) and samples (a thread).
    assert len(result["parent"]["listening"]) >= 1 and result["parent"]["threads"] >= 2
    # Between fork and exec the child has the forking thread only, and
    # listens on nothing: the inherited listener is closed and none is made.
    assert result["child"] == {"threads": 1, "tasks": 1, "listening": [],
                               "running": False}, result["child"]
    # The exec'd program ran; the parent is unharmed.
    assert (result["code"], result["stdout"]) == (0, "exec ok\n")
    assert result["after"]["listening"] == result["parent"]["listening"]
    assert len(leakprobe_lines(proc.stderr)) == 1, proc.stderr  # the parent's start only


def test_fork_from_a_thread_child_serves_without_running_more_python():
    # The child forks on a non-main thread and then only sleeps in C: its
    # exporter starts all the same (the parent finds it with ss and scrapes it).
    proc = run_python(
        """
        import os, subprocess, threading, time, warnings, httpx, leakprobe
        warnings.simplefilter("ignore", DeprecationWarning)
        pids = []
        def fork():
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            pids.append(pid)
        t = threading.Thread(target=fork); t.start(); t.join()
        pid = pids[0]
        try:
            for _ in range(200):
                ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
                ports = [line.split()[3].rsplit(":", 1)[1] for line in ss.splitlines()
                         if f"pid={pid}," in line]
                if ports:
                    break
                time.sleep(0.05)
            print(ports[0] != str(leakprobe.status()["port"]),
                  httpx.get(f"http://127.0.0.1:{ports[0]}/metrics", timeout=10).status_code)
        finally:
            os.kill(pid, 9); os.waitpid(pid, 0)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "200"]


def test_exit_while_the_sampler_is_in_native_code_without_the_gil():
    """At exit CPython ends a daemon thread that takes the GIL back with
    pthread_exit, a forced unwind. The sampler spends most of its time in
    native calls that release the GIL (trend_sample, fd_reconcile); when it
    took the GIL back in py::gil_scoped_release's noexcept destructor, the
    unwind met it and std::terminate aborted the process ("terminate called
    without an active exception", about 1 exit in 5 at these intervals)."""
    from concurrent.futures import ThreadPoolExecutor

    code = """\
        import time, leakprobe
        time.sleep(0.3)
        print(leakprobe.status()["running"])
        """
    env = {"LEAKPROBE_TREND_INTERVAL": "0.05", "LEAKPROBE_SAMPLE_INTERVAL": "0.05",
           "LEAKPROBE_FD_RECONCILE_INTERVAL": "0.05"}
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: run_python(code, **env), range(24)))
    failed = [(r.returncode, r.stderr[-300:]) for r in runs
              if r.returncode != 0 or "terminate" in r.stderr or r.stdout != "True\n"]
    assert failed == []
