"""`leakprobe run` (docs/cli.md) on real programs: usage errors, exit
statuses, stopping PROGRAM (SIGTERM, SIGKILL after the grace period,
Ctrl-C), children covered (fork, multiprocessing spawn, Python
subprocesses, a chained sitecustomize), real leaks flagged and a flat
program not, the terminal summary and progress, and every JSON report
validated against docs/report-schema.json."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import ROOT, child_env

PY = sys.executable
SCHEMA = json.loads((ROOT / "docs" / "report-schema.json").read_text())
FAST = ["--interval", "0.3", "--warmup", "1"]


def validate(report: dict) -> dict:
    jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(report)
    return report


def script(directory: Path, name: str, code: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(code))
    return path


def peak(series: dict) -> float:
    return max(value for _, value in series["points"])


def cli_command(*args: str) -> list[str]:
    return [PY, "-m", "leakprobe", "run", *args]


def start_cli(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(cli_command(*args), cwd=cwd, env=child_env(**env), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


class Result:
    def __init__(self, process: subprocess.Popen[str], json_path: Path | None,
                 timeout: float = 60) -> None:
        self.stdout, self.stderr = process.communicate(timeout=timeout)
        self.status = process.returncode
        self.cli_pid = process.pid
        self.report = validate(json.loads(json_path.read_text())) \
            if json_path is not None and json_path.exists() else None

    def process(self, role: str) -> list[dict]:
        return [p for p in self.report["processes"] if p["role"] == role]

    def series_of(self, pid: int) -> list[dict]:
        return [s for s in self.report["series"] if s["pid"] == pid]


def run_cli(cwd: Path, *args: str, json_name: str | None = "report.json",
            timeout: float = 60, **env: str) -> Result:
    extra = ["--json", str(cwd / json_name)] if json_name else []
    return Result(start_cli(cwd, *extra, *args, **env),
                  cwd / json_name if json_name else None, timeout)


# -- usage errors and PROGRAM that cannot run ------------------------------

@pytest.mark.parametrize("args, message", [
    ([], "missing PROGRAM: give the program to run after --"),
    (["--"], "missing PROGRAM"),
    (["--interval", "0", "--", PY], "argument --interval: '0' is not valid; accepted: "
     "a number of seconds from 0.05 to 3600"),
    (["--interval", "-1", "--", PY], "argument --interval: '-1' is not valid"),
    (["--interval", "fast", "--", PY], "argument --interval: 'fast' is not valid"),
    (["--warmup", "-5", "--", PY], "argument --warmup: '-5' is not valid; accepted: "
     "a number of seconds from 0 to 86400"),
    (["--duration", "0", "--", PY], "argument --duration: '0' is not valid; accepted: "
     "a number of seconds greater than 0"),
    (["--duration", "nan", "--", PY], "argument --duration: 'nan' is not valid"),
    (["--json", "{tmp}/no/such/dir/r.json", "--", PY], "argument --json: "
     "'{tmp}/no/such/dir/r.json': directory '{tmp}/no/such/dir' does not exist"),
    (["--json", "{tmp}", "--", PY], "argument --json: '{tmp}' is a directory"),
    (["--html", "{tmp}/no/r.html", "--", PY], "argument --html: '{tmp}/no/r.html': directory"),
    (["--json", "/proc/leakprobe-report.json", "--", PY], "argument --json: "
     "'/proc/leakprobe-report.json' cannot be written (No such file or directory)"),
    (["--bogus", "--", PY], "unrecognized arguments: --bogus"),
])
def test_usage_errors_exit_2_with_the_message_and_run_nothing(tmp_path, args, message,
                                                               env=None):
    marker = tmp_path / "ran"
    program = script(tmp_path, "p.py", f"open({str(marker)!r}, 'w').close()\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args and args[-1] == PY:
        args.append(str(program))
    result = run_cli(tmp_path, *args, json_name=None, **(env or {}))
    assert result.status == 2, result.stderr
    assert message.replace("{tmp}", str(tmp_path)) in result.stderr
    assert "usage: leakprobe" in result.stderr
    assert not marker.exists()


def test_a_leakprobe_variable_every_process_would_reject_is_a_usage_error(tmp_path):
    test_usage_errors_exit_2_with_the_message_and_run_nothing(
        tmp_path, ["--", PY], "PROGRAM's leakprobe would not start: LEAKPROBE_PORT='abc' is "
        "not valid; accepted: an integer from 0 to 65535", env={"LEAKPROBE_PORT": "abc"})


def test_program_not_found_127_and_not_executable_126(tmp_path):
    result = run_cli(tmp_path, "--", "no-such-program-leakprobe", json_name=None)
    assert result.status == 127
    assert "leakprobe run: PROGRAM not found: 'no-such-program-leakprobe' is not on PATH" \
        in result.stderr
    plain = script(tmp_path, "plain.py", "print('hi')\n")  # no execute bit
    result = run_cli(tmp_path, "--", str(plain), json_name=None)
    assert result.status == 126
    assert f"PROGRAM cannot be executed: {str(plain)!r} is not executable" in result.stderr


# -- exit statuses, stopping PROGRAM ---------------------------------------

def test_program_failing_by_itself_gives_its_status(tmp_path):
    program = script(tmp_path, "fail.py", """\
        import sys, leakprobe
        print("running", leakprobe.status()["running"], "rich" in sys.modules, flush=True)
        sys.exit(5)
        """)
    result = run_cli(tmp_path, *FAST, "--", PY, str(program))
    assert result.status == 5, result.stderr
    # PROGRAM's stdout is its own; the CLI's terminal library is not loaded in it.
    assert result.stdout == "running True False\n"
    assert result.report["exit"] == {"program_status": 5, "stopped_by": "exited",
                                     "leak_found": False, "status": 5}
    [main] = result.process("main")
    assert main["exited"] is True and main["cmdline"] == [PY, str(program)]
    # python -m leakprobe does not profile itself: only PROGRAM serves metrics.
    served = [line for line in result.stderr.splitlines() if "serving metrics" in line]
    assert len(served) == 1 and f"(pid {main['pid']})" in served[0]
    assert f"(pid {result.cli_pid})" not in result.stderr


def test_duration_stops_a_sleeping_program_with_sigterm(tmp_path):
    program = script(tmp_path, "sleep.py", "import time\ntime.sleep(60)\n")
    result = run_cli(tmp_path, *FAST, "--duration", "2", "--", PY, str(program))
    assert result.status == 0, result.stderr
    assert "--duration reached: stopping PROGRAM (SIGTERM to it, then to its process " \
        "group, SIGKILL after 5 s)" in result.stderr
    assert "still running" not in result.stderr  # it went at SIGTERM
    exit_ = result.report["exit"]
    assert exit_ == {"program_status": 128 + signal.SIGTERM, "stopped_by": "duration",
                     "leak_found": False, "status": 0}
    [main] = result.process("main")
    assert main["exited"] is False  # killed by SIGTERM: its last periodic run file stands
    series = result.series_of(main["pid"])
    assert {(s["resource"], s["key"]) for s in series} >= {("rss", "total"), ("fd", "total")}
    assert all(len(s["points"]) >= 3 for s in series if s["key"] == "total")
    assert result.report["settings"] == {"interval": 0.3, "warmup": 1.0, "duration": 2.0,
                                         "fail_on_leak": False, "grace": 5.0}


def test_duration_kills_a_group_that_ignores_sigterm_after_the_grace(tmp_path):
    # PROGRAM and a grandchild both ignore SIGTERM: both are SIGKILLed.
    pids = tmp_path / "pids"
    program = script(tmp_path, "stubborn.py", f"""\
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        with open({str(pids)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(60)
        """)
    result = run_cli(tmp_path, *FAST, "--duration", "2", "--grace", "1", "--",
                     PY, str(program))
    assert result.status == 0, result.stderr
    assert "still running 1 s after SIGTERM: SIGKILL" in result.stderr
    assert result.report["exit"]["program_status"] == 128 + signal.SIGKILL
    assert result.report["exit"]["stopped_by"] == "duration"
    main_pid, grandchild = map(int, pids.read_text().split())
    assert result.process("main")[0]["pid"] == main_pid
    assert [p["pid"] for p in result.process("child")] == [grandchild]  # profiled too
    with pytest.raises(ProcessLookupError):
        os.kill(grandchild, 0)


def test_program_alone_gets_sigterm_first_and_stops_its_workers_in_order(tmp_path):
    # As a Celery or gunicorn master: on SIGTERM, PROGRAM tells its worker
    # to stop (SIGUSR1) and waits for it. The worker must hear from its
    # master first, not get SIGTERM from leakprobe beside it.
    heard = tmp_path / "heard"
    worker = script(tmp_path, "worker.py", f"""\
        import signal, sys, time
        def note(signum, frame):
            with open({str(heard)!r}, "a") as f:
                f.write(signal.Signals(signum).name + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGUSR1, note)
        signal.signal(signal.SIGTERM, note)
        time.sleep(60)
        """)
    program = script(tmp_path, "master.py", f"""\
        import signal, subprocess, sys, time
        worker = subprocess.Popen([sys.executable, {str(worker)!r}])
        def stop(signum, frame):
            worker.send_signal(signal.SIGUSR1)
            worker.wait()
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        while True:
            time.sleep(1)
        """)
    result = run_cli(tmp_path, *FAST, "--duration", "2", "--", PY, str(program))
    assert result.status == 0, result.stderr
    assert heard.read_text() == "SIGUSR1\n"
    assert result.report["exit"]["program_status"] == 0
    assert "still running" not in result.stderr


def test_what_program_leaves_in_its_group_gets_sigterm_once_it_is_gone(tmp_path):
    heard = tmp_path / "heard"
    child = script(tmp_path, "child.py", f"""\
        import signal, sys, time
        def note(signum, frame):
            with open({str(heard)!r}, "a") as f:
                f.write(signal.Signals(signum).name + "\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, note)
        time.sleep(60)
        """)
    program = script(tmp_path, "leaves.py", f"""\
        import subprocess, sys, time
        subprocess.Popen([sys.executable, {str(child)!r}])
        time.sleep(60)  # SIGTERM ends it at once, its child left behind
        """)
    result = run_cli(tmp_path, *FAST, "--duration", "2", "--grace", "20", "--",
                     PY, str(program))
    assert result.status == 0, result.stderr
    assert result.report["exit"]["program_status"] == 128 + signal.SIGTERM
    assert heard.read_text() == "SIGTERM\n"
    assert "still running" not in result.stderr
    assert result.report["duration_seconds"] < 15  # not the 20 s grace


def test_a_stopped_program_gets_sigterm_too(tmp_path):
    # A program stopped by SIGTSTP/SIGTTIN (it is not in the terminal's
    # foreground group) is continued after SIGTERM, so SIGTERM ends it.
    program = script(tmp_path, "stops.py", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n")
    result = run_cli(tmp_path, *FAST, "--duration", "1.5", "--grace", "20", "--",
                     PY, str(program))
    assert result.status == 0, result.stderr
    assert result.report["exit"]["program_status"] == 128 + signal.SIGTERM
    assert "still running" not in result.stderr


def test_ctrl_c_stops_program_and_still_reports(tmp_path):
    ready = tmp_path / "ready"
    program = script(tmp_path, "serve.py", f"""\
        import time
        open({str(ready)!r}, "w").close()
        time.sleep(60)
        """)
    report = tmp_path / "report.json"
    cli = start_cli(tmp_path, *FAST, "--json", str(report), "--fail-on-leak", "--",
                    PY, str(program))
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # its first trend samples
    cli.send_signal(signal.SIGINT)
    result = Result(cli, report)
    assert result.status == 0, result.stderr
    assert "leakprobe run: interrupted: stopping PROGRAM" in result.stderr
    assert result.report["exit"] == {"program_status": 128 + signal.SIGTERM,
                                     "stopped_by": "interrupted", "leak_found": False,
                                     "status": 0}


# -- children: fork, spawn, subprocess, a chained sitecustomize ------------

def test_forked_child_has_its_own_run_file_and_series(tmp_path):
    program = script(tmp_path, "forks.py", """\
        import os, socket, time
        keep = []
        pid = os.fork()
        if pid == 0:
            for _ in range(15):
                keep.append(socket.socket())
                time.sleep(0.1)
            time.sleep(1)
            os._exit(0)
        os.waitpid(pid, 0)
        """)
    result = run_cli(tmp_path, *FAST, "--", PY, str(program))
    assert result.status == 0, result.stderr
    [main] = result.process("main")
    [child] = result.process("child")
    assert child["ppid"] == main["pid"] and child["cmdline"] == main["cmdline"]
    assert main["exited"] is True
    child_fds = {s["key"]: s for s in result.series_of(child["pid"]) if s["resource"] == "fd"}
    main_fds = {s["key"]: s for s in result.series_of(main["pid"]) if s["resource"] == "fd"}
    # Each describes itself: the child's 15 sockets are in its series, not the
    # main's (each holds one more TCP socket: its own exporter's).
    assert peak(main_fds["tcp"]) == 1
    assert peak(child_fds["tcp"]) == 1 + 15
    assert len(child_fds["tcp"]["points"]) >= 3


def test_spawned_and_subprocess_children_are_profiled(tmp_path):
    helper = script(tmp_path, "helper.py", "import socket, time\ns = socket.socket()\n"
                    "time.sleep(1.5)\n")
    program = script(tmp_path, "spawns.py", f"""\
        import multiprocessing, socket, subprocess, sys, time

        def work():
            keep = [socket.socket() for _ in range(7)]
            time.sleep(1.5)

        if __name__ == "__main__":
            p = multiprocessing.get_context("spawn").Process(target=work)
            p.start()
            subprocess.run([sys.executable, {str(helper)!r}], check=True)
            p.join()
        """)
    result = run_cli(tmp_path, *FAST, "--", PY, str(program))
    assert result.status == 0, result.stderr
    [main] = result.process("main")
    [main_tcp] = [s for s in result.series_of(main["pid"]) if (s["resource"], s["key"])
                  == ("fd", "tcp")]
    assert peak(main_tcp) == 1  # its exporter's socket
    children = result.process("child")
    spawned = [p for p in children if any("spawn_main" in a for a in p["cmdline"])]
    helpers = [p for p in children if p["cmdline"] == [PY, str(helper)]]
    assert len(spawned) == 1 and len(helpers) == 1, children
    assert spawned[0]["ppid"] == main["pid"] and helpers[0]["ppid"] == main["pid"]
    for process, sockets in ((spawned[0], 7), (helpers[0], 1)):
        assert process["exited"] is True
        tcp = [s for s in result.series_of(process["pid"]) if (s["resource"], s["key"])
               == ("fd", "tcp")]
        assert tcp and peak(tcp[0]) == 1 + sockets  # and its exporter's


def test_an_existing_sitecustomize_still_runs(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    script(theirs, "sitecustomize.py", "import os\nos.environ['THEIRS_RAN'] = 'yes'\n")
    program = script(tmp_path, "show.py", """\
        import os, sys, leakprobe
        print(os.environ.get("THEIRS_RAN"), leakprobe.status()["running"],
              sys.modules["sitecustomize"].__file__)
        """)
    result = run_cli(tmp_path, *FAST, "--", PY, str(program), PYTHONPATH=str(theirs))
    assert result.status == 0, result.stderr
    assert result.stdout == f"yes True {theirs / 'sitecustomize.py'}\n"
    assert len(result.process("main")) == 1


# -- verdicts: a real leak, a flat program, the summary --------------------
# The three runs need the warm-up plus the engine's minimum window (10 s):
# they run side by side, started once for the tests below.

LEAKY = """\
    import socket, sys, time, leakprobe

    @leakprobe.track_type(close="close")
    class Conn:
        def close(self):
            pass

    keep = []

    def leak():
        keep.append(socket.socket())
        keep.append(Conn())

    for _ in range(130):
        leak()
        time.sleep(0.1)
    sys.exit(int(sys.argv[1]))
    """
LEAK_LINE = 11  # keep.append(socket.socket()); Conn() on the next line

FLAT = """\
    import socket, time
    cache = {i: bytearray(50_000) for i in range(10)}
    for i in range(150):
        s = socket.socket()
        scratch = bytearray(50_000)
        s.close()
        del scratch
        time.sleep(0.1)
    """


@pytest.fixture(scope="module")
def verdict_runs(tmp_path_factory):
    runs = {}
    for name, code, warmup, args in (("leak", LEAKY, "1.5", ["0"]),
                                     ("leak_fails", LEAKY, "1.5", ["5"]),
                                     ("flat", FLAT, "2.5", [])):
        directory = tmp_path_factory.mktemp(name)
        program = script(directory, "app.py", code)
        html = ["--html", str(directory / "report.html")] if name == "leak" else []
        runs[name] = (directory, start_cli(
            directory, "--interval", "0.3", "--warmup", warmup, "--fail-on-leak",
            "--json", str(directory / "report.json"), *html, "--", PY, str(program), *args))
    return {name: Result(process, directory / "report.json", timeout=90)
            for name, (directory, process) in runs.items()}


def test_real_leak_fails_with_3_naming_resource_key_and_site(verdict_runs):
    result = verdict_runs["leak"]
    assert result.status == 3, result.stderr
    report = result.report
    assert report["exit"] == {"program_status": 0, "stopped_by": "exited",
                              "leak_found": True, "status": 3}
    [main] = result.process("main")
    leaks = {(leak["resource"], leak["key"]): leak for leak in report["leaks"]}
    program = report["command"][1]
    fd = leaks[("fd", "tcp")]
    assert fd["site"] == f"{program}:{LEAK_LINE} in leak"
    assert fd["pid"] == main["pid"] and fd["unit"] == "fds" and fd["suspected"]
    assert {"filename": program, "lineno": LEAK_LINE, "function": "leak"} in fd["stack"]
    assert 20000 < fd["growth_per_hour"] < 45000  # 10 sockets a second: 36000/h
    assert fd["time_to_exhaustion_seconds"] > 0 and fd["limit"] > 0
    obj = leaks[("object", "__main__.Conn")]
    assert obj["site"] == f"{program}:{LEAK_LINE + 1} in leak" and obj["unit"] == "objects"
    # The generated sitecustomize (it imports leakprobe) is never an attribution site.
    assert not [s for s in report["series"]
                if "leakprobe-run-" in f"{s['key']} {s['site']} {s['stack']}"]
    # Every leak is a flagged series entry, listed first among the series.
    flagged = [s for s in report["series"] if s["suspected"]]
    assert report["series"][:len(flagged)] == flagged
    assert [{k: v for k, v in s.items() if k != "points"} for s in flagged] == report["leaks"]


def test_program_failure_status_wins_over_the_leak_status(verdict_runs):
    result = verdict_runs["leak_fails"]
    assert result.status == 5, result.stderr
    assert result.report["exit"] == {"program_status": 5, "stopped_by": "exited",
                                     "leak_found": True, "status": 5}


def test_flat_program_exits_0_with_no_leak(verdict_runs):
    result = verdict_runs["flat"]
    assert result.status == 0, result.stderr
    report = result.report
    assert [(s["resource"], s["key"], s["growth_per_hour"]) for s in report["leaks"]] == []
    assert report["exit"]["leak_found"] is False
    evaluated = [s for s in report["series"] if s["reason"] != "warmup"]
    assert {(s["resource"], s["key"]) for s in evaluated} >= {("rss", "total"), ("fd", "tcp")}
    assert "no leak suspected; exit status 0" in result.stderr


def test_terminal_summary_shows_the_verdict_table(verdict_runs):
    result = verdict_runs["leak"]
    lines = result.stderr.splitlines()
    header = next(line for line in lines if "verdict" in line and "growth/hour" in line)
    for column in ("resource", "key", "pid", "confidence", "exhausted in", "site"):
        assert column in header
    pid = result.process("main")[0]["pid"]
    # Sites are shown relative to the current directory (the CLI ran in the program's).
    row = next(line for line in lines if " tcp " in line)
    assert "LEAK" in row and "fd" in row and str(pid) in row and "fds/h" in row
    assert f"app.py:{LEAK_LINE} in leak" in row and "%" in row
    row = next(line for line in lines if "__main__.Conn" in line)
    assert "LEAK" in row and "objects/h" in row
    row = next(line for line in lines if " site:(its site) " in line)  # key site:<site>
    assert "LEAK" in row and f"app.py:{LEAK_LINE} in leak" in row
    rows = [line for line in lines if line.startswith("│")]
    flagged = [i for i, line in enumerate(rows) if "LEAK" in line]
    assert flagged == list(range(len(flagged)))  # flagged first
    assert "leak suspected; exit status 3" in result.stderr
    directory = Path(result.report["command"][1]).parent
    assert f"JSON report: {directory / 'report.json'}" in result.stderr
    assert f"HTML report: {directory / 'report.html'}" in result.stderr


def test_html_report_is_written_from_the_same_report(verdict_runs):
    result = verdict_runs["leak"]
    html = (Path(result.report["command"][1]).parent / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 4
    for leak in result.report["leaks"]:  # every leak is named in it, with its site
        assert leak["key"].replace("<", "&lt;") in html
        assert leak["site"] in html


def test_html_without_matplotlib_is_a_usage_error(tmp_path):
    marker = tmp_path / "ran"
    program = script(tmp_path, "p.py", f"open({str(marker)!r}, 'w').close()\n")
    cli = subprocess.run(
        [PY, "-c", "import sys; sys.modules['matplotlib'] = None\n"
         "from leakprobe.cli import main; sys.exit(main())", "run", "--html",
         str(tmp_path / "r.html"), "--", PY, str(program)],
        env=child_env(), capture_output=True, text=True, timeout=30)
    assert cli.returncode == 2
    assert "--html needs matplotlib, which is not installed: " \
        "pip install 'leakprobe[report]'" in cli.stderr
    assert not marker.exists()


# -- the console script, and progress on a terminal ------------------------

def test_console_script_shows_progress_on_a_terminal(tmp_path):
    program = script(tmp_path, "wait.py", "import time\ntime.sleep(3)\n")
    leakprobe = Path(PY).parent / "leakprobe"
    master, slave = pty.openpty()
    cli = subprocess.Popen([str(leakprobe), "run", *FAST, "--", PY, str(program)],
                           cwd=tmp_path, env=child_env(TERM="xterm", COLUMNS="200"),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the CLI closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert cli.wait(timeout=30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert "leakprobe run: " in text and " elapsed, 1 process (1 running), " in text
    assert " series evaluated (past warm-up), 0 suspected" in text
    assert "no leak suspected; exit status 0" in text
    assert f"(pid {cli.pid})" not in text  # the CLI itself is not profiled


# -- the schema and the run-dir option -------------------------------------

def test_schema_is_strict_and_every_field_is_documented(verdict_runs):
    report = verdict_runs["leak"].report
    broken = [
        {k: v for k, v in report.items() if k != "processes"},  # a field missing
        {**report, "leaks": [{**report["leaks"][0], "points": []}]},  # points in a leak
        {**report, "series": [{**report["series"][0], "suspected": "yes"}]},
        {**report, "exit": {**report["exit"], "stopped_by": "timeout"}},
        {**report, "extra": 1},
    ]
    for document in broken:
        with pytest.raises(jsonschema.ValidationError):
            validate(document)
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "report-schema.md")
                                .read_text(), re.M))
    fields = set(SCHEMA["properties"]) | set(SCHEMA["$defs"]["process"]["properties"]) \
        | set(SCHEMA["$defs"]["verdict"]["properties"]) | {"points"} \
        | set(SCHEMA["properties"]["settings"]["properties"]) \
        | set(SCHEMA["properties"]["exit"]["properties"])
    assert fields - documented == set()


def test_shutdown_reports_of_run_files_reach_the_report_and_the_summary():
    from rich.console import Console

    from leakprobe.cli import _report, _terminal

    base = {"ppid": 1, "cmdline": ["celery"], "role": "child", "started_at": 1.8e9,
            "updated_at": 1.8e9 + 5, "exited": True, "series": []}
    engine = {"type": "sqlalchemy.Engine", "site": "/srv/tasks.py:12 in engine", "count": 1}
    files = [
        {**base, "pid": 10},  # made no shutdown report
        {**base, "pid": 11, "unreleased": []},  # reported, held nothing
        {**base, "pid": 12, "unreleased": [
            engine, {"type": "httpx.Client", "site": None, "count": 3},
            {"type": "x", "count": "3"}, {"site": "a.py:1"}, "junk",  # not rows: left out
            {"type": "y", "site": "a.py:1", "count": True}]},
        {**base, "pid": 13, "unreleased": "junk"},
    ]
    report = validate(_report.build(
        files, main_pid=None, command=["celery"], started_at=1.8e9, ended_at=1.8e9 + 6,
        settings={"interval": 1.0, "warmup": 0.0, "duration": None, "fail_on_leak": True,
                  "grace": 5.0},
        program_status=0, stopped_by="exited", fail_on_leak=True))
    assert [p["unreleased"] for p in report["processes"]] == [
        None, [], [engine, {"type": "httpx.Client", "site": None, "count": 3}], None]
    assert report["exit"]["leak_found"] is False and report["exit"]["status"] == 0
    out = Console(record=True, width=200)
    _terminal.summary(out, report, None, None)
    text = out.export_text()
    assert "still open at shutdown (2 entries):" in text, text
    assert "pid 12: 1 x sqlalchemy.Engine created at /srv/tasks.py:12 in engine" in text
    assert "pid 12: 3 x httpx.Client created at an unknown site" in text


def test_run_dir_that_cannot_be_written_costs_two_lines_not_the_program(tmp_path):
    from conftest import leakprobe_lines, run_python

    code = """\
        import time, leakprobe
        time.sleep(0.5)
        print(leakprobe.status()["running"])
        """
    missing = tmp_path / "gone"
    result = run_python(code, LEAKPROBE_RUN_DIR=str(missing), LEAKPROBE_TREND_INTERVAL="0.1")
    assert result.returncode == 0 and result.stdout == "True\n", result.stderr
    errors = [line for line in leakprobe_lines(result.stderr) if "[error]" in line]
    assert len(errors) == 2, result.stderr  # at start, then once from the sampler
    assert f"run file {missing}/" in errors[0] and "profiling continues" in errors[0]
    assert "run file failed" in errors[1] and "will retry" in errors[1]
    result = run_python(code, LEAKPROBE_RUN_DIR="relative/dir")
    assert "LEAKPROBE_RUN_DIR='relative/dir' is not valid; accepted: an absolute path " \
        "of a directory, or empty (no run file)" in result.stderr


def test_run_file_at_exit_after_stop_keeps_the_last_series(tmp_path):
    from conftest import run_python

    result = run_python("""\
        import os, time, leakprobe
        time.sleep(0.6)
        leakprobe.stop()  # the trend state is gone: the exit write rereads the file
        print(os.getpid())
        """, LEAKPROBE_RUN_DIR=str(tmp_path), LEAKPROBE_TREND_INTERVAL="0.1")
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / f"{result.stdout.strip()}.json").read_text())
    assert document["exited"] is True and document["role"] == "child"  # no CLI here
    assert {(s["resource"], s["key"]) for s in document["series"]} >= {("fd", "total")}
    assert all(s["points"] for s in document["series"] if s["key"] == "total")
    assert [p.name for p in tmp_path.iterdir()] == [f"{result.stdout.strip()}.json"]
