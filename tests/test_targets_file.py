"""The file_sd targets file (LEAKPROBE_TARGETS_FILE, docs/multiprocess.md):
its writer with real concurrent processes, dead ones (SIGKILLed, zombies,
reused pids) swept out, malformed files replaced; and leakprobe keeping it
(add at start, a forked child with its own port, removal at stop and exit,
bad paths)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import child_env, leakprobe_lines, run_python
from leakprobe import _config, _targets
from leakprobe._targets import PID_LABEL, ROLE_LABEL, START_LABEL, TargetsFile


def entry(pid: int, port: int, role: str = "main", start: str | None = None) -> dict:
    return {"targets": [f"127.0.0.1:{port}"],
            "labels": {PID_LABEL: str(pid), ROLE_LABEL: role,
                       START_LABEL: start if start is not None else _targets.start_time(pid)}}


def listed(path: Path) -> dict[str, dict]:
    """{pid: entry} of leakprobe's entries in the file."""
    return {e["labels"][PID_LABEL]: e for e in json.loads(path.read_text())
            if PID_LABEL in e.get("labels", {})}


def test_concurrent_writers_never_lose_an_entry(tmp_path):
    # 8 processes released together each rewrite their own entry 30 times
    # (a new role each time, so every update is a write), then a last time
    # with role "done"; all stay alive until the file is read. A lost update
    # shows as a missing entry or a role other than "done". (Without the
    # lock, made a no-op, this loses entries in every run tried.)
    path = tmp_path / "targets.json"
    script = tmp_path / "writers.py"
    script.write_text(textwrap.dedent(
        """
        import json, os, sys, time
        from leakprobe import _targets
        path, n = sys.argv[1], 8
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        kids = []
        for i in range(n):
            pid = os.fork()
            if pid == 0:
                os.close(go_w)
                os.read(go_r, 1)  # released together
                file = _targets.TargetsFile(path, lambda level, message: None)
                me, start = os.getpid(), _targets.start_time(os.getpid())
                for k in range(31):
                    role = "done" if k == 30 else f"r{k}"
                    file.update(me, {"targets": [f"127.0.0.1:{20000 + i}"],
                                     "labels": {_targets.PID_LABEL: str(me),
                                                _targets.ROLE_LABEL: role,
                                                _targets.START_LABEL: start}})
                os.write(done_w, b"x")
                time.sleep(60)
                os._exit(0)
            kids.append(pid)
        os.write(go_w, b"x" * n)
        for _ in range(n):
            os.read(done_r, 1)
        print(json.dumps({"kids": kids, "file": json.load(open(path))}), flush=True)
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        """))
    result = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                            text=True, timeout=120, env=child_env())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    roles = {e["labels"][PID_LABEL]: e["labels"][ROLE_LABEL] for e in out["file"]}
    assert roles == {str(pid): "done" for pid in out["kids"]}
    assert len(out["file"]) == 8
    assert not list(tmp_path.glob(".targets.json.*.tmp"))  # no temporary file left


def test_gone_processes_are_swept_out_and_foreign_entries_kept(tmp_path):
    path = tmp_path / "targets.json"
    reaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        by_hand = {"targets": ["10.0.0.7:9100"], "labels": {"job_hint": "node"}}
        reused = entry(alive.pid, 3, start="1")  # a pid now running another process
        path.write_text(json.dumps([by_hand, entry(reaped.pid, 1), entry(zombie.pid, 2),
                                    reused, entry(alive.pid, 4)]))
        file = TargetsFile(str(path), lambda level, message: None)
        # Nothing is gone yet but the reused pid's entry (another start time).
        assert file.update(os.getpid(), entry(os.getpid(), 5))
        assert set(listed(path)) == {str(p) for p in
                                     (reaped.pid, zombie.pid, alive.pid, os.getpid())}
        assert [e["targets"] for e in json.loads(path.read_text())
                if e["labels"].get(PID_LABEL) == str(alive.pid)] == [["127.0.0.1:4"]]
        assert not file.update(os.getpid(), entry(os.getpid(), 5))  # unchanged: not rewritten
        reaped.kill()
        reaped.wait()
        os.kill(zombie.pid, signal.SIGKILL)  # killed, not reaped: a zombie
        deadline = time.monotonic() + 10
        while _targets.start_time(zombie.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert file.update(os.getpid(), entry(os.getpid(), 5))
        assert set(listed(path)) == {str(alive.pid), str(os.getpid())}
        assert json.loads(path.read_text())[-1] == by_hand
        assert file.update(os.getpid(), None)  # removes this process's entry
        assert set(listed(path)) == {str(alive.pid)}
    finally:
        for proc in (reaped, zombie, alive):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("content", ["not json {", '{"targets": []}', "\xff\xfe",
                                     '[{"targets": "127.0.0.1:1"}]', "[1]"])
def test_a_malformed_file_is_replaced_and_logged_once(tmp_path, content):
    path = tmp_path / "targets.json"
    path.write_bytes(content.encode("latin-1"))
    logged: list[tuple[str, str]] = []
    file = TargetsFile(str(path), lambda level, message: logged.append((level, message)))
    assert file.update(os.getpid(), entry(os.getpid(), 5))
    assert json.loads(path.read_text()) == [entry(os.getpid(), 5)]
    assert len(logged) == 1 and logged[0][0] == "warning", logged
    assert f"targets file {path} replaced: " in logged[0][1]
    assert "accepted: a JSON list of Prometheus file_sd target groups" in logged[0][1]
    path.write_text("again not json")
    assert file.update(os.getpid(), entry(os.getpid(), 5))
    assert len(logged) == 1  # once per process


def test_an_empty_file_made_beforehand_is_filled_without_a_warning(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text("\n")  # as `touch` or a provisioning tool leaves it
    logged: list[tuple[str, str]] = []
    file = TargetsFile(str(path), lambda level, message: logged.append((level, message)))
    assert not file.update(os.getpid(), None)  # nothing to list: left alone
    assert path.read_text() == "\n"
    assert file.update(os.getpid(), entry(os.getpid(), 5))
    assert json.loads(path.read_text()) == [entry(os.getpid(), 5)] and logged == []


def test_a_held_lock_delays_an_update_for_a_bounded_time(tmp_path):
    # Another process holds the lock (stopped, say): the update gives up
    # after its lock timeout instead of waiting for ever; it succeeds once
    # the holder is gone.
    path = tmp_path / "targets.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import fcntl, os, sys, time
            fd = os.open({str(path) + '.lock'!r}, os.O_RDWR | os.O_CREAT)
            fcntl.lockf(fd, fcntl.LOCK_EX)
            print("locked", flush=True)
            time.sleep(60)
            """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        file = TargetsFile(str(path), lambda level, message: None, lock_timeout=0.3)
        with pytest.raises(TimeoutError, match=r"targets\.json\.lock stayed locked for 0\.3 s"):
            file.update(os.getpid(), entry(os.getpid(), 5))
        assert not path.exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert file.update(os.getpid(), entry(os.getpid(), 5))
    assert list(listed(path)) == [str(os.getpid())]


def test_targets_file_option_parsing():
    config, problems = _config.resolve({"LEAKPROBE_TARGETS_FILE": "/run/lp/targets.json"})
    assert problems == [] and config.targets_file == "/run/lp/targets.json"
    assert _config.resolve({"LEAKPROBE_TARGETS_FILE": ""})[0].targets_file is None
    for bad in ("targets.json", "/run/lp/targets.yml", "/run/lp/", "/run/lp/.json"):
        _, problems = _config.resolve({"LEAKPROBE_TARGETS_FILE": bad})
        assert problems == [
            f"LEAKPROBE_TARGETS_FILE={bad!r} is not valid; accepted: an absolute path of a "
            "file ending in .json, in a directory this user can write to, or empty (no "
            "targets file)"], problems


PROGRAM = """
import json, os, signal, sys, time
import leakprobe

def show(tag):
    status = leakprobe.status()
    print(json.dumps({"tag": tag, "pid": os.getpid(), "port": status["port"],
                      "targets_file": status["targets_file"], "role": status["role"],
                      "group": status["group"],
                      "file": json.load(open(os.environ["LEAKPROBE_TARGETS_FILE"]))}),
          flush=True)
"""


def test_leakprobe_lists_each_process_with_its_own_port_and_removes_it(tmp_path):
    path = tmp_path / "run" / "targets.json"
    path.parent.mkdir()
    result = run_python(PROGRAM + textwrap.dedent(
        """
        show("start")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            time.sleep(0.05)  # leakprobe restarts in the child, listing it
            os.write(w, json.dumps(leakprobe.status()).encode() + b"\\n")
            time.sleep(60)
            os._exit(0)
        os.close(w)
        child = json.loads(os.fdopen(r).readline())
        show("forked")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        deadline = time.monotonic() + 10  # swept by this process's next tick
        while str(pid) in open(os.environ["LEAKPROBE_TARGETS_FILE"]).read() \\
                and time.monotonic() < deadline:
            time.sleep(0.05)
        show("swept")
        leakprobe.stop()
        show("stopped")
        leakprobe.start()
        show("restarted")
        print(json.dumps(child), flush=True)
        """), LEAKPROBE_TARGETS_FILE=str(path), LEAKPROBE_PORT="9464", LEAKPROBE_ROLE="web",
        LEAKPROBE_SAMPLE_INTERVAL="0.1")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    start, forked, swept, stopped, restarted, child = lines
    me = str(start["pid"])

    def targets(document):
        return {e["labels"][PID_LABEL]: (e["targets"], e["labels"][ROLE_LABEL])
                for e in document["file"]}

    assert start["targets_file"] == str(path) and start["group"] is None
    assert start["port"] not in (None, 9464)  # any free port, not LEAKPROBE_PORT
    assert targets(start) == {me: ([f"127.0.0.1:{start['port']}"], "web")}
    assert child["targets_file"] == str(path) and child["port"] not in (None, start["port"])
    assert targets(forked) == {me: ([f"127.0.0.1:{start['port']}"], "web"),
                               str(child["pid"]): ([f"127.0.0.1:{child['port']}"], "web")}
    assert targets(swept) == targets(start)
    assert stopped["file"] == [] and stopped["targets_file"] is None
    assert targets(restarted) == {me: ([f"127.0.0.1:{restarted['port']}"], "web")}
    assert json.loads(path.read_text()) == []  # removed at exit
    assert not list(path.parent.glob(".*.tmp"))


def test_each_listed_target_serves_its_own_process(tmp_path):
    path = tmp_path / "targets.json"
    result = run_python(PROGRAM + textwrap.dedent(
        """
        import httpx
        kids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            kids.append(pid)
        deadline = time.monotonic() + 20
        while len(json.load(open(os.environ["LEAKPROBE_TARGETS_FILE"]))) < 3 \\
                and time.monotonic() < deadline:
            time.sleep(0.05)
        served = {}
        for group in json.load(open(os.environ["LEAKPROBE_TARGETS_FILE"])):
            text = httpx.get(f"http://{group['targets'][0]}/metrics", timeout=10).text
            served[group["labels"]["__meta_leakprobe_pid"]] = sorted(
                {line.split('pid="')[1].split('"')[0] for line in text.splitlines()
                 if 'pid="' in line})
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(json.dumps({"me": os.getpid(), "kids": kids, "served": served}))
        """), LEAKPROBE_TARGETS_FILE=str(path), LEAKPROBE_SAMPLE_INTERVAL="0.1")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    pids = [str(out["me"])] + [str(pid) for pid in out["kids"]]
    # Each process's exporter serves its own series only (no group).
    assert out["served"] == {pid: [pid] for pid in pids}


def test_a_directory_that_cannot_be_written_is_reported_and_the_host_runs_on(tmp_path):
    missing = tmp_path / "no-such-dir" / "targets.json"
    result = run_python(
        """
        import json, leakprobe
        print(json.dumps(leakprobe.status()))
        """, LEAKPROBE_TARGETS_FILE=str(missing), LEAKPROBE_SAMPLE_INTERVAL="0.1")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] and status["port"] not in (None, 9464)
    assert status["targets_file"] is None
    lines = leakprobe_lines(result.stderr)
    assert any(
        f"LEAKPROBE_TARGETS_FILE={str(missing)!r} cannot be written: its directory "
        f"{missing.parent} does not exist; accepted: an absolute path of a file ending in "
        ".json, in a directory this user can write to; this process" in line
        and "profiling continues" in line for line in lines), lines

    strict = run_python(
        """
        import leakprobe
        """, LEAKPROBE_TARGETS_FILE=str(missing), LEAKPROBE_STRICT="1")
    assert strict.returncode != 0
    assert f"ConfigError: LEAKPROBE_TARGETS_FILE={str(missing)!r} cannot " \
        "be written: its directory" in strict.stderr, strict.stderr

    a_dir = tmp_path / "a-dir.json"
    a_dir.mkdir()
    assert _targets.check(str(a_dir)).endswith(
        "cannot be written: it is a directory; accepted: an absolute path of a file ending "
        "in .json, in a directory this user can write to")


def test_bad_path_leaves_leakprobe_stopped_with_one_clear_line():
    result = run_python(
        """
        import json, leakprobe
        print(json.dumps(leakprobe.status()))
        """, LEAKPROBE_TARGETS_FILE="targets.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["running"] is False
    assert leakprobe_lines(result.stderr) == [
        "[leakprobe] [warning] LEAKPROBE_TARGETS_FILE='targets.json' is not valid; accepted: "
        "an absolute path of a file ending in .json, in a directory this user can write to, "
        "or empty (no targets file); leakprobe is not running"]

