"""Per-unit-of-work attribution (leakprobe._work): exact retained figures
for sequential runs, the exported families, the cap on names, the trend
verdict, and bad input. Each program runs in its own interpreter."""

from __future__ import annotations

import json
import textwrap

from conftest import run_python, without_process_labels
from test_multiprocess import promtool_check

PRELUDE = """\
import json, os, socket, time, urllib.request
import leakprobe
from leakprobe import _work
leakprobe.start(port=0, trend_interval=0.2, trend_warmup=1)

def scrape():
    return urllib.request.urlopen(leakprobe.status()["url"], timeout=10).read().decode()
"""


def run(code: str, **env: str) -> dict:
    result = run_python(PRELUDE + textwrap.dedent(code), **env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    out["scrape"] = without_process_labels(out.get("scrape", ""))
    return out


def test_overlapping_runs_are_counted_and_a_forked_child_starts_from_none():
    out = run("""
        outer = _work.begin("task", "outer")
        inner = _work.begin("task", "inner")   # begins while outer runs: 1
        _work.end(inner)
        _work.end(outer)
        after_both = _work.overlapped()
        _work.end(_work.begin("task", "alone"))  # nothing in progress: still 1
        a, b, c = (_work.begin("route", f"GET /{i}") for i in range(3))  # +2
        for token in (c, a, b):
            _work.end(token)
        _work.end(_work.begin("task", "alone"))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child's runs are its own: none in progress, none overlapped
            _work.end(_work.begin("task", "child"))
            os.write(write, str(_work.overlapped()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"after_both": after_both, "total": _work.overlapped(),
                          "child": int(os.read(read, 16))}))
    """)
    assert (out["after_both"], out["total"], out["child"]) == (1, 3, 0)


def test_retained_fds_objects_and_runs_are_exact_for_sequential_runs():
    out = run("""
        kept = []

        @leakprobe.track_type
        class Handle:
            def close(self): pass

        def leaky():
            kept.append(socket.socket())
            kept.append(Handle())

        def clean():
            with socket.socket():
                Handle().close()

        for _ in range(7):
            for kind, name, body in (("task", "leaky", leaky), ("task", "clean", clean),
                                     ("route", "GET /items", clean)):
                token = _work.begin(kind, name)
                body()
                _work.end(token)
        stats = {s.name: s._asdict() for s in _work.stats()}
        print(json.dumps({"stats": stats, "scrape": scrape(),
                          "overlapped": _work.overlapped()}))
    """)
    leaky, clean = out["stats"]["leaky"], out["stats"]["clean"]
    assert (leaky["runs"], leaky["retained_fds"], leaky["retained_objects"]) == (7, 7, 7)
    assert leaky["fds_by_kind"] == {"tcp": 7}
    assert (clean["runs"], clean["retained_fds"], clean["retained_objects"]) == (7, 0, 0)
    assert out["stats"]["GET /items"]["runs"] == 7
    assert out["overlapped"] == 0
    text = out["scrape"]
    assert 'leakprobe_work_runs_total{kind="task",name="leaky"} 7' in text
    assert 'leakprobe_work_retained_fds{kind="task",name="leaky"} 7' in text
    assert 'leakprobe_work_retained_fds{kind="task",name="clean"} 0' in text
    assert 'leakprobe_work_retained_objects{kind="task",name="leaky"} 7' in text
    assert 'leakprobe_work_runs_total{kind="route",name="GET /items"} 7' in text
    promtool_check(text)


def test_closing_what_an_earlier_run_kept_gives_it_back_and_the_log_is_kept_only_in_runs():
    out = run("""
        from leakprobe import _native
        kept = []

        def open_one():
            kept.append(socket.socket())

        def replace():  # a keep-alive connection replaced: one closed, one opened
            kept.pop().close()
            kept.append(socket.socket())

        def release():
            kept.pop().close()

        for name, body in (("open", open_one), ("replace", replace), ("release", release)):
            token = _work.begin("task", name)
            body()
            _work.end(token)
        stats = {s.name: s.retained_fds for s in _work.stats()}
        # No run in progress: closes are not logged (the mark stays).
        mark = _native.fd_sequence()[1]
        for _ in range(5):
            socket.socket().close()
        idle = _native.fd_sequence()[1] - mark
        token = _work.begin("task", "churn")
        for _ in range(5):
            socket.socket().close()
        during = _native.fd_sequence()[1] - mark
        _work.end(token)
        print(json.dumps({"stats": stats, "idle": idle, "during": during}))
    """)
    assert out["stats"] == {"open": 1, "replace": 0, "release": -1}, out["stats"]
    assert out["idle"] == 0 and out["during"] == 5, out


def test_names_beyond_the_cap_are_counted_under_other():
    out = run("""
        for i in range(_work.MAX_NAMES + 5):
            _work.end(_work.begin("task", f"t{i}"))
        stats = _work.stats("task")
        print(json.dumps({"names": [s.name for s in stats],
                          "other": [s.runs for s in stats if s.name == "<other>"],
                          "scrape": scrape()}))
    """)
    assert len(out["names"]) == 31  # MAX_NAMES, and <other>
    assert out["other"] == [5]
    assert 'leakprobe_work_runs_total{kind="task",name="<other>"} 5' in out["scrape"]
    promtool_check(out["scrape"])


def test_a_unit_that_leaves_a_socket_per_run_is_flagged_and_its_twin_is_not():
    out = run("""
        kept = []
        deadline = time.monotonic() + 13
        while time.monotonic() < deadline:
            token = _work.begin("task", "app.leaky")
            kept.append(socket.socket())
            _work.end(token)
            token = _work.begin("task", "app.clean")
            socket.socket().close()
            _work.end(token)
            time.sleep(0.1)
        time.sleep(0.3)
        verdicts = {v.key: (v.suspected, v.reason, v.unit) for v in leakprobe.verdicts()
                    if v.resource == "work"}
        print(json.dumps({"verdicts": verdicts, "scrape": scrape(),
                          "series": leakprobe.series("work", "task:app.leaky:fds")}))
    """)
    verdicts = out["verdicts"]
    assert verdicts["task:app.leaky:fds"][0] is True, verdicts
    assert verdicts["task:app.leaky:fds"][2] == "fds"
    assert verdicts["task:app.clean:fds"][0] is False, verdicts
    assert 'leakprobe_leak_suspected{resource="work",key="task:app.leaky:fds"' in out["scrape"]
    assert out["series"] and out["series"][-1][1] > out["series"][0][1]


def test_bad_kind_or_name_is_refused_with_what_is_accepted():
    out = run("""
        errors = []
        for kind, name in (("Task!", "x"), ("task", ""), (3, "x"), ("task", None)):
            try:
                _work.begin(kind, name)
            except ValueError as exc:
                errors.append(str(exc))
        print(json.dumps({"errors": errors}))
    """)
    assert out["errors"] == [
        "kind 'Task!' is not valid; accepted: a lower-case word ([a-z][a-z0-9_]*, at most "
        "32 characters), e.g. 'task' or 'route'",
        "name '' is not valid; accepted: a non-empty str",
        "kind 3 is not valid; accepted: a lower-case word ([a-z][a-z0-9_]*, at most "
        "32 characters), e.g. 'task' or 'route'",
        "name None is not valid; accepted: a non-empty str",
    ]


def test_the_native_calls_refuse_bad_arguments_and_name_what_is_accepted():
    out = run("""
        from leakprobe import _native
        errors = []
        for call in (lambda: _native.work_end((1, 2), None, False),
                     lambda: _native.work_end(None, [1], False),
                     lambda: _native.work_end((1, -2, 3), None, False),
                     lambda: _native.work_figures(True, True),
                     lambda: _native.set_work_counts(-1, 1, 0, 0, 0.0),
                     lambda: _native.set_work_counts(0, 1, 0, 0, "x")):
            try:
                call()
            except (TypeError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        # A run still begins and ends after them, its logs released.
        token = _work.begin("task", "after")
        _work.end(token)

        def logged_opens():  # creations the fd table's log took for one os.open
            before = _native.fd_sequence()[2]
            os.close(os.open(os.devnull, os.O_RDONLY))
            return _native.fd_sequence()[2] - before

        # An end refused for a bad argument still ends the logging its
        # begin started (else every later creation is logged for good).
        mark = _native.work_figures(True, False, False)[0]
        kept = logged_opens()
        try:
            _native.work_end(mark, [1], True)
        except TypeError:
            pass
        print(json.dumps({"errors": errors, "runs": _work.stats()[0].runs,
                          "kept": kept, "after": logged_opens()}))
    """)
    assert out["errors"] == [
        "TypeError: fds must be work_figures()'s mark (a tuple of 3 ints) or None, "
        "not (1, 2)",
        "TypeError: live must be work_figures()'s live counts (a tuple) or None, not [1]",
        "ValueError: the mark's close-log position must be a non-negative int, not -2",
        "TypeError: work_figures() takes 3 arguments (2 given)",
        "ValueError: index must be a non-negative int, not -1",
        "ValueError: bytes must be a float, not 'x'",
    ]
    assert out["runs"] == 1
    assert (out["kept"], out["after"]) == (1, 0)
