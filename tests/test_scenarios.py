"""The scenario suite (issue 10 point 7): every program of examples/scenarios/
runs under ``leakprobe run`` in compressed time, and its JSON report must
name exactly what leaks.

- a leak: each expected series is in ``leaks`` (flagged), from the program's
  own process, with the right ``resource``, ``key`` and ``site`` (the line
  marked ``# leak-site`` in the program, as ``path:line in function``);
- its fixed twin (``--fixed``) and every honest-growth control: nothing in
  ``leaks``, and the series that would show the leak were judged (present,
  past warm-up), so that "nothing flagged" is not "nothing looked at".

The runs are started together, a few at a time (``PARALLEL``), the first
time a test of this module needs a report; each test then waits for its
own. Failures print the flagged or missing series with their figures.
The programs mostly wait (each loop runs at a steady, low rate: 29 runs
cost 41 s of CPU in all), so 8 run at a time: the whole module takes about
2 minutes on a machine of 2 shared cores (121 s measured with a load
average of 6 from other work; 284 s with 3 at a time).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, child_env

SCENARIOS = ROOT / "examples" / "scenarios"

# Compressed time: the programs' loops run SECONDS at a steady rate; the
# trends are sampled every INTERVAL and judged after WARMUP, so each verdict
# rests on SECONDS - WARMUP seconds (40 points). DURATION only bounds a
# program that would not end by itself.
INTERVAL = 0.5
WARMUP = 5.0
SECONDS = 25.0
DURATION = 45.0
PARALLEL = 8
# Discovered containers (module globals, unbounded lru_caches) are found and
# re-measured at each discovery pass (30 s by default): compressed like the
# trend interval, or a 25-second run would never see them.
ENV = {"LEAKPROBE_CONTAINER_DISCOVER_INTERVAL": "1"}


@dataclass(frozen=True)
class Expect:
    """A series the leak must flag: `marker` names the ``# leak-site``
    comment whose line is the expected site (``None``: the series has no
    site, such as a container's length or a process total)."""

    resource: str
    key: str
    marker: str | None = "leak-site"


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    fixed: bool = False
    leaks: tuple[Expect, ...] = ()  # empty: nothing may be flagged
    # series that must be judged; a key ending in "*" names its prefix (a
    # pool whose label holds the run's temporary path)
    judged: tuple[tuple[str, str], ...] = field(default=())

    @property
    def path(self) -> Path:
        return SCENARIOS / self.script


def leak_and_twin(script: str, leaks: tuple[Expect, ...],
                  judged: tuple[tuple[str, str], ...]) -> list[Case]:
    name = script.removesuffix(".py")
    return [Case(name, script, leaks=leaks),
            Case(f"{name}-fixed", script, fixed=True, judged=judged)]


def control(script: str, judged: tuple[tuple[str, str], ...]) -> Case:
    return Case(script.removesuffix(".py"), script, judged=judged)


CASES: list[Case] = [
    # The seed's leaks.
    *leak_and_twin("httpx_client.py",
                   (Expect("object", "httpx.Client:collected_open"),),
                   judged=(("object", "httpx.Client"), ("fd", "tcp"))),
    *leak_and_twin("httpx_async_client.py",
                   (Expect("object", "httpx.AsyncClient:collected_open"),),
                   judged=(("object", "httpx.AsyncClient"), ("fd", "tcp"))),
    *leak_and_twin("ai_client_cache.py",
                   (Expect("object", "httpx.Client"),
                    Expect("fd", "tcp", "leak-site: socket"),
                    Expect("fd", "owner:httpx.Client"),
                    Expect("container", "__main__:_CLIENTS", None)),
                   judged=(("object", "httpx.Client"), ("fd", "tcp"),
                           ("fd", "owner:httpx.Client"))),
    *leak_and_twin("nullpool_session.py",
                   (Expect("object", "sqlalchemy.orm.Session:collected_open"),),
                   judged=(("object", "sqlalchemy.orm.Session"), ("fd", "file"))),
    *leak_and_twin("engine_per_task.py",
                   (Expect("object", "sqlalchemy.Engine:collected_open"),),
                   judged=(("object", "sqlalchemy.Engine"), ("fd", "file"))),
    *leak_and_twin("queuepool_session.py",
                   (Expect("pool", "sqlalchemy:sqlite://"),),
                   judged=(("pool", "sqlalchemy:sqlite://"),
                           ("object", "sqlalchemy.orm.Session"))),
    *leak_and_twin("urllib_response.py",
                   (Expect("object", "urllib.request.HTTPResponse:collected_open"),),
                   judged=(("object", "urllib.request.OpenerDirector"), ("fd", "tcp"))),
    # The classic ones.
    *leak_and_twin("lru_cache_unbounded.py",
                   (Expect("container", "__main__:render", None),
                    Expect("heap", "<site>")),
                   judged=(("heap", "total"),)),
    *leak_and_twin("global_list.py",
                   (Expect("container", "__main__:_HISTORY", None),
                    Expect("heap", "<site>")),
                   judged=(("heap", "total"),)),
    *leak_and_twin("unclosed_file.py",
                   (Expect("fd", "file"), Expect("fd", "site:<site>")),
                   judged=(("fd", "file"),)),
    *leak_and_twin("popen_pipe.py",
                   (Expect("fd", "pipe"), Expect("object", "subprocess.Popen")),
                   judged=(("fd", "pipe"), ("object", "subprocess.Popen"))),
    *leak_and_twin("thread_never_ends.py",
                   (Expect("thread", "total"), Expect("object", "threading.Thread")),
                   judged=(("thread", "total"), ("object", "threading.Thread"))),
    # Honest growth.
    control("control_bounded_cache.py", judged=(("container", "__main__:_ANSWERS"),
                                                ("heap", "total"))),
    control("control_pool_warmup.py", judged=(("fd", "file"), ("thread", "total"),
                                              ("object", "sqlite3.Connection"),
                                              ("pool", "sqlalchemy:sqlite:///*"))),
    control("control_sawtooth.py", judged=(("heap", "total"), ("rss", "total"))),
    control("control_startup_alloc.py", judged=(("heap", "total"), ("rss", "total"))),
    control("control_fd_churn.py", judged=(("fd", "file"), ("fd", "tcp"), ("fd", "total"))),
]
BY_ID = {case.id: case for case in CASES}


def marked_sites(path: Path) -> dict[str, str]:
    """Each ``# leak-site`` marker of `path` (``leak-site`` or
    ``leak-site: NAME``) -> its attribution site, ``path:line in function``
    with the function's qualified name, as leakprobe writes it."""
    source = path.read_text()
    scopes: list[tuple[int, int, str]] = []  # (first line, last line, qualname)

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                scopes.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    sites = {}
    for lineno, line in enumerate(source.splitlines(), 1):
        if "# leak-site" not in line:
            continue
        marker = line.split("# ", 1)[1].strip()
        inside = [s for s in scopes if s[0] <= lineno <= s[1]]
        function = max(inside)[2] if inside else "<module>"
        sites[marker] = f"{path}:{lineno} in {function}"
    return sites


def run_scenario(case: Case, out_dir: Path) -> dict[str, Any]:
    """Runs `case` under ``leakprobe run``; returns its JSON report, with the
    run's wall time and output under ``_wall_seconds`` and ``_output``."""
    report_path = out_dir / f"{case.id}.json"
    command = [sys.executable, "-m", "leakprobe", "run", "--interval", str(INTERVAL),
               "--warmup", str(WARMUP), "--duration", str(DURATION),
               "--json", str(report_path), "--",
               sys.executable, str(case.path), "--seconds", str(SECONDS)]
    if case.fixed:
        command.append("--fixed")
    started = time.monotonic()
    done = subprocess.run(command, env=child_env(**ENV), capture_output=True, text=True,
                          timeout=DURATION + 90, cwd=ROOT)
    output = f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, f"leakprobe run exited {done.returncode}\n{output}"
    report = json.loads(report_path.read_text())
    report["_wall_seconds"] = time.monotonic() - started
    report["_output"] = output
    return report


@pytest.fixture(scope="module")
def reports(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future]:
    """The reports of the scenarios this session selected, run PARALLEL at a
    time, started at once in the order of CASES."""
    selected = {item.callspec.params["case_id"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    out_dir = tmp_path_factory.mktemp("scenario-reports")
    pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="scenario")
    futures = {case.id: pool.submit(run_scenario, case, out_dir)
               for case in CASES if case.id in selected}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def describe(entry: dict[str, Any]) -> str:
    return (f"{entry['resource']}/{entry['key']} pid {entry['pid']}: {entry['reason']}, "
            f"{entry['growth_per_hour']:.4g} {entry['unit']}/h, "
            f"confidence {entry['confidence']:.4f} (p {entry['p_value']:.3g}), "
            f"last {entry['last_value']:g}, window {entry['window_seconds']:.1f} s "
            f"({entry['points_evaluated']} points), site {entry['site']}")


def main_pid(report: dict[str, Any]) -> int:
    mains = [p["pid"] for p in report["processes"] if p["role"] == "main"]
    assert len(mains) == 1, f"one main process expected: {report['processes']}"
    return mains[0]


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_scenario(case_id: str, reports: dict[str, Future]) -> None:
    case = BY_ID[case_id]
    report = reports[case_id].result()
    pid = main_pid(report)
    print(f"{case_id}: leakprobe run took {report['_wall_seconds']:.1f} s")
    for entry in report["leaks"]:
        print("  flagged:", describe(entry))
    assert report["exit"]["program_status"] == 0, report["_output"]
    assert report["exit"]["stopped_by"] == "exited", report["_output"]
    flagged = "\n".join(describe(e) for e in report["leaks"]) or "nothing"

    if case.leaks:
        sites = marked_sites(case.path)
        problems = []
        for expect in case.leaks:
            site = sites[expect.marker] if expect.marker else None
            key = expect.key.replace("<site>", site or "")
            found = [e for e in report["leaks"]
                     if e["pid"] == pid and e["resource"] == expect.resource
                     and e["key"] == key]
            evaluated = [describe(e) for e in report["series"]
                         if e["pid"] == pid and e["resource"] == expect.resource
                         and e["key"] == key]
            if not found:
                problems.append(f"{expect.resource}/{key} not flagged; its series: "
                                f"{evaluated or 'absent'}")
            elif found[0]["site"] != site:
                problems.append(f"{expect.resource}/{key}: site {found[0]['site']!r}, "
                                f"expected {site!r}: {describe(found[0])}")
            else:
                assert found[0]["suspected"] and found[0]["reason"] == "growing"
                assert found[0]["growth_per_hour"] > 0
        assert not problems, "\n".join(problems) + f"\nflagged: {flagged}"
    else:
        if report["leaks"]:  # the message alone: the reports' repr buries it
            pytest.fail(f"false alarm(s) on {case_id}:\n{flagged}")
        for resource, key in case.judged:
            entries = [e for e in report["series"]
                       if e["pid"] == pid and e["resource"] == resource
                       and (e["key"] == key or key.endswith("*")
                            and e["key"].startswith(key[:-1]))]
            assert entries, f"{resource}/{key} was never recorded in {case_id}"
            assert entries[0]["reason"] != "warmup", (
                f"{resource}/{key} not judged: {describe(entries[0])}")
