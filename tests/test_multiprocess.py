"""One scrape target per host: processes sharing a fixed LEAKPROBE_PORT are
served by the one holding it, each series labelled with pid and role
(docs/multiprocess.md). Real processes: os.fork, multiprocessing with spawn
and forkserver, SIGKILL, and promtool on the merged exposition."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import child_env, group_processes

# Scrapes the group and waits for a set of pids: shared by the programs below.
PRELUDE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    URL = f"http://127.0.0.1:{os.environ['LEAKPROBE_PORT']}/metrics"

    def processes():
        text = httpx.get(URL, timeout=10).text
        for family in text_string_to_metric_families(text):
            if family.name == "process_threads":
                return {s.labels["pid"]: s.labels["role"] for s in family.samples}, text
        return {}, text

    def wait_for(pids, deadline=30):
        end = time.monotonic() + deadline
        while True:
            rows, text = processes()
            if set(map(str, pids)) <= set(rows) or time.monotonic() > end:
                return rows, text
            time.sleep(0.1)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(code: str, tmp_path: Path, timeout: float = 90, **env: str) -> dict:
    """Runs `code` (after PRELUDE) as a script file (multiprocessing's spawn
    needs one) with a fixed port; returns the JSON of its last line."""
    script = tmp_path / "program.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=timeout, cwd=tmp_path,
                            env=child_env(LEAKPROBE_PORT=str(free_port()), **env))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_forked_children_are_served_by_the_holder_and_a_killed_one_is_gone(tmp_path):
    out = run(
        """
        import leakprobe
        kids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                junk = [bytearray(1 << 16) for _ in range(64)]  # a heap of its own
                time.sleep(120)
                os._exit(0)
            kids.append(pid)
        rows, text = wait_for(kids + [os.getpid()])
        os.kill(kids[0], signal.SIGKILL)
        os.waitpid(kids[0], 0)
        after, _ = processes()
        for pid in kids[1:]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        alone, _ = processes()
        print(json.dumps({"self": os.getpid(), "kids": kids, "rows": rows, "text": text,
                          "after": after, "alone": alone,
                          "status": leakprobe.status()}))
        """, tmp_path)
    me, kids = str(out["self"]), [str(pid) for pid in out["kids"]]
    assert out["rows"] == {me: "main", **{pid: "child" for pid in kids}}
    assert set(out["after"]) == {me, *kids[1:]}  # the killed child, gone at once
    assert out["alone"] == {me: "main"}
    assert out["status"]["group"] == {"port": out["status"]["port"], "serving": True,
                                      "processes": 1}
    families = {f.name: f for f in text_string_to_metric_families(out["text"])}
    assert [s.value for s in families["leakprobe_group_processes"].samples] == [5]
    # Every leakprobe series of every process, each process's own heap figure.
    heap_pids = {s.labels["pid"] for s in families["leakprobe_heap_live_bytes"].samples}
    assert heap_pids == {me, *kids}
    promtool_check(out["text"])


def test_a_surviving_process_takes_the_port_over_when_the_holder_is_killed(tmp_path):
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(
            """
            import leakprobe
            kids = []
            for _ in range(2):
                pid = os.fork()
                if pid == 0:
                    time.sleep(120)
                    os._exit(0)
                kids.append(pid)
            wait_for(kids)
            print(json.dumps(kids), flush=True)
            time.sleep(120)
            """)],
        env=child_env(LEAKPROBE_PORT=str(port)), stdout=subprocess.PIPE, text=True)
    kids = json.loads(holder.stdout.readline())
    holder.stdout.close()
    try:
        holder.kill()
        holder.wait(timeout=10)
        start = time.monotonic()
        rows: dict[str, str] = {}
        while time.monotonic() - start < 15:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            rows = group_processes(text)
            if set(rows) == {str(pid) for pid in kids}:
                break
            time.sleep(0.1)
        took = time.monotonic() - start
        assert rows == {str(pid): "child" for pid in kids}, rows
        assert took < 5, f"the port was served again after {took:.1f} s"
    finally:
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_multiprocessing_spawn_and_forkserver_workers_are_served(tmp_path):
    out = run(
        """
        import multiprocessing as mp
        import leakprobe

        def work(ready):
            ready.put(os.getpid())
            time.sleep(120)

        if __name__ == "__main__":
            found = {}
            for method in ("spawn", "forkserver", "fork"):
                ctx = mp.get_context(method)
                ready = ctx.Queue()
                workers = [ctx.Process(target=work, args=(ready,)) for _ in range(2)]
                for w in workers:
                    w.start()
                pids = [ready.get(timeout=60) for _ in workers]
                rows, _ = wait_for(pids)
                found[method] = {str(pid): rows.get(str(pid)) for pid in pids}
                for w in workers:
                    w.kill()
                    w.join()
            print(json.dumps(found))
        """, tmp_path, timeout=120)
    for method in ("spawn", "forkserver", "fork"):
        assert list(out[method].values()) == ["child", "child"], (method, out)


def test_role_and_group_can_be_set_and_switched_off(tmp_path):
    out = run(
        """
        import leakprobe
        rows, _ = processes()
        print(json.dumps({"rows": rows, "status": leakprobe.status()}))
        """, tmp_path, LEAKPROBE_ROLE="celery-beat")
    assert list(out["rows"].values()) == ["celery-beat"]
    assert out["status"]["role"] == "celery-beat"

    result = subprocess.run(
        [sys.executable, "-c", "import leakprobe, json; print(json.dumps(leakprobe.status()))"],
        env=child_env(LEAKPROBE_ROLE="Not A Role!"), capture_output=True, text=True,
        timeout=60)
    assert "LEAKPROBE_ROLE='Not A Role!' is not valid; accepted: empty (detected) or up to 64" \
        in result.stderr
    assert json.loads(result.stdout)["running"] is False

    out = run(
        """
        import leakprobe
        pid = os.fork()
        if pid == 0:
            time.sleep(1)
            print(json.dumps({"child": leakprobe.status()}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"parent": leakprobe.status()}))
        """, tmp_path, LEAKPROBE_GROUP="0")
    assert out["parent"]["group"] is None
    assert out["parent"]["port"] is not None


WSGI_APP = """
import os
import leakprobe

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Pid", str(os.getpid()))])
    return [b"ok"]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def _group_rows(port: int, want: int, deadline: float = 60) -> dict[str, str]:
    """pid -> role of the group on `port`, once it has `want` processes."""
    end = time.monotonic() + deadline
    rows: dict[str, str] = {}
    while time.monotonic() < end:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if response.status_code != 200:  # 503: the holder is exiting (recycled)
            time.sleep(0.2)
            continue
        rows = group_processes(response.text)
        if len(rows) >= want:
            break
        time.sleep(0.2)
    return rows


def _stop(proc: subprocess.Popen, name: str) -> str:
    """Stops a server with SIGTERM and returns its stderr; a server that does
    not stop within 30 s is killed and fails the test (a hang at exit is a
    defect leakprobe must not cause)."""
    proc.terminate()
    try:
        return proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{name} did not stop within 30 s of SIGTERM") from None


@pytest.mark.parametrize("server", ["gunicorn --preload", "gunicorn", "uvicorn --workers"])
def test_every_worker_of_a_real_server_is_served_with_its_role(tmp_path, server):
    (tmp_path / "app.py").write_text(WSGI_APP)
    bin_dir = Path(sys.executable).parent
    http_port, group_port = free_port(), free_port()
    if server.startswith("gunicorn"):
        command = [str(bin_dir / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{http_port}",
                   *(["--preload"] if "preload" in server else []), "app:app"]
        expected = (["gunicorn-master"] if "preload" in server else []) \
            + ["gunicorn-worker"] * 2
    else:
        command = [str(bin_dir / "uvicorn"), "--workers", "2", "--port", str(http_port),
                   "app:asgi"]
        expected = ["uvicorn-worker"] * 2
    proc = subprocess.Popen(command, cwd=tmp_path, env=child_env(LEAKPROBE_PORT=str(group_port)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rows = _group_rows(group_port, len(expected))
        assert sorted(rows.values()) == expected, rows
        assert httpx.get(f"http://127.0.0.1:{http_port}/", timeout=10).text == "ok"
    finally:
        stderr = _stop(proc, server)
    assert "Traceback" not in stderr, stderr


def test_gunicorn_recycling_its_workers_never_hangs_and_every_worker_is_served(tmp_path):
    # max_requests recycles each worker after 10 requests: about 30 workers
    # start, each importing leakprobe after the fork (no preload), and the
    # port passes from worker to worker as its holders are recycled. Each
    # worker is looked for in the group's scrape right after its first
    # answer: it has 9 requests to go, so it is alive until the scrape
    # finds it (no request is sent meanwhile). Every worker must be found.
    (tmp_path / "app.py").write_text(WSGI_APP)
    http_port, group_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "--max-requests", "10",
               "-b", f"127.0.0.1:{http_port}", "app:app"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=child_env(LEAKPROBE_PORT=str(group_port)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answered_by: set[str] = set()
    served: set[str] = set()
    answered = 0
    try:
        assert len(_group_rows(group_port, 2)) == 2
        with httpx.Client(timeout=10) as client:
            for _ in range(300):
                for _ in range(50):  # a worker being replaced may refuse for a moment
                    try:
                        response = client.get(f"http://127.0.0.1:{http_port}/")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                else:
                    raise AssertionError("gunicorn refused requests for 5 s")
                answered += response.text == "ok"
                pid = response.headers["X-Pid"]
                if pid in answered_by:
                    continue
                answered_by.add(pid)
                end = time.monotonic() + 10  # the port may be between holders
                while pid not in served and time.monotonic() < end:
                    rows = _group_rows(group_port, 1, deadline=10)
                    assert set(rows.values()) == {"gunicorn-worker"}, rows
                    served |= set(rows)
                    if pid not in served:
                        time.sleep(0.1)
        assert proc.poll() is None, "gunicorn died"
    finally:
        stderr = _stop(proc, "gunicorn")
    assert answered == 300
    assert len(answered_by) >= 25, answered_by  # ~30 workers: 300 requests, 10 each
    assert answered_by - served == set(), "workers never served"
    assert "Traceback" not in stderr, stderr
