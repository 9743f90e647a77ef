"""A real Prometheus server (Debian's) scraping leakprobe, in both
configurations of docs/multiprocess.md: one target per host (the group of a
fixed port), and one target per process through a file_sd targets file.
Every process's series are found through Prometheus's HTTP API, and a
SIGKILLed process's series or target go away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import child_env
from prometheus_server import free_port, prometheus  # noqa: F401 (the fixture)

# A process with leakprobe that forks 3 children, prints its pid and theirs,
# then reaps children as they die (so a SIGKILLed one is gone, not a zombie).
FAMILY = textwrap.dedent(
    """
    import json, os, time
    import leakprobe
    kids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(300)
            os._exit(0)
        kids.append(pid)
    print(json.dumps({"main": os.getpid(), "kids": kids}), flush=True)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.1)
    """)


class Family:
    def __init__(self, **env: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", FAMILY], env=child_env(**env),
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, "the program died at start"
        pids = json.loads(line)
        self.main, self.kids = str(pids["main"]), [str(pid) for pid in pids["kids"]]

    def kill(self, pid: str) -> None:
        os.kill(int(pid), signal.SIGKILL)

    def close(self) -> None:
        for pid in self.kids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def series_pids(server, expr: str) -> dict[str, dict[str, str]]:
    """{pid: labels} of the series an instant query returns now."""
    return {r["metric"]["pid"]: r["metric"] for r in server.query(expr)}


def test_one_target_per_host_carries_every_process_and_a_killed_one_goes_stale(prometheus):
    port = free_port()
    family = Family(LEAKPROBE_PORT=str(port))
    try:
        server = prometheus([{"job_name": "leakprobe",
                              "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
        everyone = {family.main, *family.kids}
        expr = 'process_threads{job="leakprobe"}'
        found = server.wait_for(
            lambda: (lambda got: got if set(got) == everyone else None)(
                series_pids(server, expr)), what="every process's process_threads series")
        assert {pid: labels["role"] for pid, labels in found.items()} == \
            {family.main: "main", **{kid: "child" for kid in family.kids}}
        assert {labels["instance"] for labels in found.values()} == {f"127.0.0.1:{port}"}
        assert [r["value"][1] for r in server.query('up{job="leakprobe"}')] == ["1"]

        family.kill(family.kids[0])
        alive = everyone - {family.kids[0]}
        after = server.wait_for(
            lambda: (lambda got: got if set(got) == alive else None)(series_pids(server, expr)),
            what="the killed child's series to go stale")
        assert set(after) == alive
        # Its last sample is still stored, before the staleness marker.
        assert family.kids[0] in series_pids(server, f"last_over_time({expr}[1m])")
    finally:
        family.close()


def test_file_sd_discovers_every_process_and_drops_a_killed_one(prometheus, tmp_path: Path):
    directory = tmp_path / "targets"
    directory.mkdir()
    path = directory / "leakprobe.json"
    family = Family(LEAKPROBE_TARGETS_FILE=str(path), LEAKPROBE_SAMPLE_INTERVAL="0.2")
    try:
        file_sd = [{"files": [str(directory / "*.json")], "refresh_interval": "1s"}]
        server = prometheus([
            {"job_name": "leakprobe", "file_sd_configs": file_sd},
            # docs/multiprocess.md's relabelling: workers only, by role.
            {"job_name": "workers", "file_sd_configs": file_sd,
             "relabel_configs": [{"source_labels": ["__meta_leakprobe_role"],
                                  "regex": ".*-(child|worker)|child", "action": "keep"}]}])
        everyone = {family.main, *family.kids}

        def targets_up() -> dict[str, dict] | None:
            targets = {t["discoveredLabels"].get("__meta_leakprobe_pid"): t
                       for t in server.targets() if t["labels"]["job"] == "leakprobe"}
            up = all(t["health"] == "up" for t in targets.values())
            return targets if set(targets) == everyone and up else None

        targets = server.wait_for(targets_up, what="4 discovered targets, all up")
        addresses = {pid: t["labels"]["instance"] for pid, t in targets.items()}
        assert len(set(addresses.values())) == 4  # a port each
        assert {pid: t["discoveredLabels"]["__meta_leakprobe_role"]
                for pid, t in targets.items()} == \
            {family.main: "main", **{kid: "child" for kid in family.kids}}
        assert not any(key.startswith("__meta_leakprobe") for t in targets.values()
                       for key in t["labels"])  # dropped after relabelling
        assert sorted(t["discoveredLabels"]["__meta_leakprobe_pid"] for t in server.targets()
                      if t["labels"]["job"] == "workers") == sorted(family.kids)
        expr = 'process_threads{job="leakprobe"}'
        found = server.wait_for(
            lambda: (lambda got: got if set(got) == everyone else None)(
                series_pids(server, expr)), what="every process's series")
        # Each process's series come from its own target, under their own pid
        # label (no exported_pid: the file's labels do not clash).
        assert {pid: labels["instance"] for pid, labels in found.items()} == addresses
        assert not any("exported_pid" in labels for labels in found.values())

        victim = family.kids[0]
        family.kill(victim)
        swept = server.wait_for(
            lambda: (lambda pids: pids if victim not in pids else None)(
                [e["labels"]["__meta_leakprobe_pid"] for e in json.loads(path.read_text())]),
            deadline=10, what="the killed child to be swept out of the targets file")
        assert set(swept) == everyone - {victim}
        remaining = server.wait_for(
            lambda: (lambda got: got if set(got) == everyone - {victim} else None)(
                {t["discoveredLabels"].get("__meta_leakprobe_pid")
                 for t in server.targets() if t["labels"]["job"] == "leakprobe"}),
            what="Prometheus to drop the killed child's target")
        assert addresses[victim] not in {t["labels"]["instance"] for t in server.targets()}
        assert len(remaining) == 3
        assert set(series_pids(server, expr)) == everyone - {victim}
    finally:
        family.close()
