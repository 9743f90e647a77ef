"""leakprobe sees the example service's socket leak, and not its fixed twin's.

Real parts only, each in its own process on 127.0.0.1: the upstream
(``examples/upstream.py``), uvicorn serving ``examples/leaky_service`` or
``examples/fixed_service`` with leakprobe imported at start-up, httpx as the
client and prometheus_client's parser for the scrape. All ports are 0 and are
read back from the logs, so tests never race for a port.

The figures are checked against ``/proc/PID/fd`` as well, so that a metric
that is stale, constant or about another process fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
REQUESTS = 100
START_TIMEOUT = 30.0  # seconds for a process to print its address
SETTLE_TIMEOUT = 5.0  # seconds for a scraped fd count to match /proc
FD_TOLERANCE = 5  # scrape connections, the thread pool: fds that come and go
# "[leakprobe] [info] serving metrics on http://127.0.0.1:PORT/metrics (pid N)"
METRICS_LINE = r"serving metrics on (http://\S+?/metrics) \(pid (\d+)\)"
UVICORN_LINE = r"Uvicorn running on (http://127\.0\.0\.1:\d+)"


@dataclass
class Service:
    """A running example service and the leakprobe endpoint inside it."""

    url: str
    metrics_url: str
    pid: int


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``args`` with its output in ``log_path``.

    A file rather than a pipe, so that a chatty child never blocks on a full pipe.
    """
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_for_line(proc: subprocess.Popen, log_path: Path, pattern: str) -> re.Match:
    """Return the first match of ``pattern`` in the process's log.

    Fails fast if the process dies, or stays silent past START_TIMEOUT.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = log_path.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited ({proc.returncode}) before {pattern!r}:\n{text}")
        if time.monotonic() > deadline:
            pytest.fail(f"{proc.args} printed no {pattern!r} in {START_TIMEOUT:.0f} s:\n{text}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run the fake AI provider once for the tests of this module; yield its URL."""
    log_path = tmp_path_factory.mktemp("upstream") / "upstream.log"
    args = [sys.executable, str(EXAMPLES / "upstream.py"), "--port", "0"]
    proc = _spawn(args, log_path, dict(os.environ))
    try:
        yield _wait_for_line(proc, log_path, r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    finally:
        _stop(proc)


@pytest.fixture
def start_service(upstream: str, tmp_path: Path) -> Iterator[Callable[[str], Service]]:
    """Yield a factory that runs an example app under uvicorn, with leakprobe.

    ``start_service("leaky_service")`` returns once both the service and its
    metrics endpoint are up; every service started is stopped at teardown.
    """
    procs: list[subprocess.Popen] = []

    def start(example: str) -> Service:
        # No inherited LEAKPROBE_* (conftest.py sets LEAKPROBE_DISABLE=1 for
        # the pytest process itself); the child gets exactly these.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
        env.update(
            UPSTREAM_URL=upstream,
            # the embedded defaults' files (SQLite, the filesystem broker)
            EXAMPLE_DATA_DIR=str(tmp_path / example / "data"),
            LEAKPROBE_HOST="127.0.0.1",
            LEAKPROBE_PORT="0",
            LEAKPROBE_LOG_LEVEL="info",
            # Container discovery every 0.2 s instead of 30: a growing
            # global is found (growth at 3 passes in a row) during the load.
            LEAKPROBE_CONTAINER_DISCOVER_INTERVAL="0.2",
            LEAKPROBE_SAMPLE_INTERVAL="0.2",
        )
        log_path = tmp_path / f"{example}.log"
        args = [
            sys.executable, "-m", "uvicorn", "app:app",
            "--app-dir", str(EXAMPLES / example),
            "--host", "127.0.0.1", "--port", "0",
            "--no-access-log", "--log-level", "info",
        ]  # fmt: skip
        proc = _spawn(args, log_path, env)
        procs.append(proc)
        metrics = _wait_for_line(proc, log_path, METRICS_LINE)
        assert int(metrics.group(2)) == proc.pid, "leakprobe reports another process's pid"
        url = _wait_for_line(proc, log_path, UVICORN_LINE).group(1)
        return Service(url=url, metrics_url=metrics.group(1), pid=proc.pid)

    try:
        yield start
    finally:
        for proc in procs:
            _stop(proc)


def _scrape(client: httpx.Client, metrics_url: str) -> dict[str, float]:
    """Every sample of the exposition, summed over its labels."""
    response = client.get(metrics_url)
    response.raise_for_status()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _fd_sites(client: httpx.Client, metrics_url: str) -> dict[str, float]:
    """``leakprobe_fd_site_open_fds`` by its ``site`` label."""
    response = client.get(metrics_url)
    response.raise_for_status()
    return {sample.labels["site"]: sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples if sample.name == "leakprobe_fd_site_open_fds"}


def _by_label(client: httpx.Client, metrics_url: str, sample: str, label: str,
              **match: str) -> dict[str, float]:
    """One sample's values by one of its labels, the others matching `match`."""
    response = client.get(metrics_url)
    response.raise_for_status()
    return {s.labels[label]: s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in match.items())}


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _scrape_settled(client: httpx.Client, service: Service) -> dict[str, float]:
    """Scrape until ``process_open_fds`` agrees with ``/proc/PID/fd``.

    Retries for a few seconds in case the figure comes from a periodic
    sampler; fails if it never agrees, since then it measures something else.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        values = _scrape(client, service.metrics_url)
        assert "process_open_fds" in values, f"no process_open_fds in {sorted(values)}"
        actual = _open_fds(service.pid)
        if abs(values["process_open_fds"] - actual) <= FD_TOLERANCE:
            return values
        if time.monotonic() > deadline:
            scraped = values["process_open_fds"]
            pytest.fail(f"process_open_fds is {scraped:.0f}, /proc/{service.pid}/fd has {actual}")
        time.sleep(0.2)


def _objects(client: httpx.Client, metrics_url: str) -> dict[str, object]:
    """What the objects registry says of httpx.Client, and the fds it owns."""
    figures: dict[str, object] = {
        name: _by_label(client, metrics_url, f"leakprobe_objects_{name}", "type").get(
            "httpx.Client", 0.0)
        for name in ("live", "created_total", "closed_total", "collected_while_open_total")}
    figures["owned_fds"] = _by_label(client, metrics_url, "leakprobe_owner_open_fds",
                                     "owner", kind="tcp").get("httpx.Client", 0.0)
    figures["sites"] = _by_label(client, metrics_url, "leakprobe_objects_site_live", "site",
                                 type="httpx.Client")
    return figures


CACHE = "app:_SUMMARY_CACHE"  # the services' summary cache, named as leakprobe names it


def _cache_figures(client: httpx.Client, service: Service, size: float) -> dict[str, float]:
    """The summary cache's exported size (and maxsize, if any), once its size
    is `size` (sizes are re-measured at each pass: up to SETTLE_TIMEOUT)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        figures = {
            "size": _by_label(client, service.metrics_url, "leakprobe_container_size",
                              "name").get(CACHE, -1.0),
            "maxsize": _by_label(client, service.metrics_url, "leakprobe_container_maxsize",
                                 "name").get(CACHE, -1.0),
        }
        if figures["size"] == size or time.monotonic() > deadline:
            return figures
        time.sleep(0.2)


def _load(service: Service, requests: int
          ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Scrape, send ``requests`` requests with new prompts, scrape again;
    also the open fds by creation site at the end."""
    with httpx.Client(timeout=10.0) as client:

        def summarize(prompt: str) -> None:
            response = client.get(f"{service.url}/summarize", params={"q": prompt})
            response.raise_for_status()
            summary = response.json()["summary"]
            assert summary.startswith(prompt), f"not the upstream's answer: {summary[:80]!r}"

        # The first request pays for lazy imports and the thread pool's
        # start-up; leave it out of the measured growth.
        summarize("warm-up")
        before = _scrape_settled(client, service)
        before["objects"] = _objects(client, service.metrics_url)  # type: ignore[assignment]
        for i in range(requests):
            summarize(f"document-{i}")
        after = _scrape_settled(client, service)
        after["objects"] = _objects(client, service.metrics_url)  # type: ignore[assignment]
        sites = _fd_sites(client, service.metrics_url)
    return before, after, sites


def test_leaky_service_leaks_a_socket_per_request(start_service: Callable[[str], Service]) -> None:
    service = start_service("leaky_service")
    before, after, sites = _load(service, REQUESTS)

    fds_grown = after["process_open_fds"] - before["process_open_fds"]
    assert fds_grown >= 0.8 * REQUESTS, f"open fds grew by {fds_grown:.0f} over {REQUESTS} requests"
    # leakprobe names the line: the leaked sockets are made inside httpx
    # (site-packages), so their site is the service's call into it.
    top_site, top_count = max(sites.items(), key=lambda item: item[1])
    call_line = next(i for i, line in enumerate(
        (EXAMPLES / "leaky_service" / "app.py").read_text().splitlines(), 1)
        if "self._client.post(" in line)
    assert f"leaky_service/app.py:{call_line} in " in top_site, sites
    assert top_site.endswith("summarize"), sites  # the qualified name from 3.11 on
    assert top_count >= 0.8 * REQUESTS, sites
    # Each leaked client keeps its pool, its SSL context and the cached
    # summary: far more than 1 MiB over 100 requests.
    rss_grown = after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]
    assert rss_grown > 1024 * 1024, f"resident memory grew by only {rss_grown:.0f} bytes"
    # What leaks, by name: one httpx.Client per request, never closed, each
    # holding its socket, created in the wrapper's __init__.
    was, now = before["objects"], after["objects"]
    assert now["live"] - was["live"] == REQUESTS, (was, now)
    assert now["created_total"] - was["created_total"] == REQUESTS, (was, now)
    assert now["closed_total"] == 0 and now["collected_while_open_total"] == 0, now
    assert now["owned_fds"] - was["owned_fds"] == REQUESTS, (was, now)
    init_line = next(i for i, line in enumerate(
        (EXAMPLES / "leaky_service" / "app.py").read_text().splitlines(), 1)
        if "self._client = httpx.Client(" in line)
    (site, live), = now["sites"].items()
    assert site.endswith(f"leaky_service/app.py:{init_line} in SummarizerClient.__init__"), site
    assert live == now["live"]
    # And the unbounded cache, by name: a module-level dict discovered as it
    # grew, one entry a prompt (the warm-up's included), no maxsize.
    with httpx.Client(timeout=10.0) as client:
        cache = _cache_figures(client, service, REQUESTS + 1)
    assert cache == {"size": REQUESTS + 1, "maxsize": -1.0}, cache


def test_fixed_twin_keeps_fds_flat(start_service: Callable[[str], Service]) -> None:
    service = start_service("fixed_service")
    before, after, sites = _load(service, REQUESTS)

    fds_grown = after["process_open_fds"] - before["process_open_fds"]
    assert fds_grown < 10, f"open fds grew by {fds_grown:.0f} over {REQUESTS} requests"
    assert not any("fixed_service/app.py" in site and count >= 10
                   for site, count in sites.items()), sites
    # One client reused by every request: none created during the load,
    # none collected while open, its few kept-alive sockets owned by it.
    was, now = before["objects"], after["objects"]
    assert now["created_total"] - was["created_total"] == 0, (was, now)
    assert (now["live"], now["collected_while_open_total"]) == (1, 0), now
    assert 1 <= now["owned_fds"] <= 10, now
    # Its cache is the app's own bounded LRUCache class (an OrderedDict kept
    # at maxsize inside an untracked object): no growing container of a
    # known kind, so none is reported, with discovery passes every 0.2 s all
    # through the load (the leaky twin's test shows they find one).
    with httpx.Client(timeout=10.0) as client:
        sizes = _by_label(client, service.metrics_url, "leakprobe_container_size", "name")
    assert not any(name.startswith("app:") for name in sizes), sizes  # CACHE included
