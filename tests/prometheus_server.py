"""A real Prometheus server (Debian's `prometheus`) for the tests: started on
127.0.0.1 with a free port, a temporary TSDB and a configuration the test
writes (scrape interval 1 s), stopped after the test, also when it fails.

    def test_x(prometheus):
        server = prometheus([{"job_name": "leakprobe",
                              "static_configs": [{"targets": ["127.0.0.1:9464"]}]}])
        server.wait_for(lambda: server.query("up") or None)
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    def __init__(self, directory: Path, scrape_configs: list[dict[str, Any]]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus (Debian package 'prometheus') is required"
        directory.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                             "evaluation_interval": "1s"},
                  "scrape_configs": scrape_configs}
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=info"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=directory)
        self.client = httpx.Client(base_url=self.url, timeout=10)
        try:
            self.wait_for(self._ready, deadline=60, what="Prometheus to be ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited ({self.proc.returncode}): {self.log()}")
        try:
            return self.client.get("/-/ready").status_code == 200 or None
        except httpx.HTTPError:
            return None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query now: [{"metric": {...}, "value": [t, "v"]}]."""
        response = self.client.get("/api/v1/query", params={"query": expr})
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets, each with its discoveredLabels, labels, health
        and scrapeUrl."""
        response = self.client.get("/api/v1/targets", params={"state": "active"})
        response.raise_for_status()
        return response.json()["data"]["activeTargets"]

    def wait_for(self, probe: Callable[[], T | None], deadline: float = 30,
                 what: str = "a condition") -> T:
        """Calls `probe` every 0.2 s until it returns something other than
        None (returned), or fails after `deadline` seconds."""
        end = time.monotonic() + deadline
        while True:
            got = probe()
            if got is not None:
                return got
            if time.monotonic() > end:
                raise AssertionError(f"waited {deadline} s for {what}; prometheus log:\n"
                                     f"{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], PrometheusServer]]:
    """A factory of Prometheus servers, each stopped after the test."""
    servers: list[PrometheusServer] = []

    def start(scrape_configs: list[dict[str, Any]]) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prometheus-{len(servers)}", scrape_configs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
