"""Shared helpers: run real Python programs with leakprobe imported, scrape
their exporter over HTTP and parse the exposition with prometheus_client."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent

# The pytest process itself imports leakprobe (for its modules) but must not
# profile itself or take the default port; children get their own settings.
os.environ["LEAKPROBE_DISABLE"] = "1"


def child_env(**overrides: str) -> dict[str, str]:
    """The test's environment without any LEAKPROBE_* variable, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAKPROBE_")}
    env.setdefault("LEAKPROBE_PORT", "0")
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def run_python(code: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(**env), capture_output=True, text=True, timeout=timeout,
    )


def compile_c(*args: str) -> None:
    """Builds a shared object with the system C compiler: `cc -shared -fPIC -O1 ARGS`."""
    cc = shutil.which("cc")
    assert cc, "a C compiler is required (Debian: build-essential)"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", *args], check=True, timeout=120)


def build_extension(directory: Path, name: str, source: str, *flags: str) -> Path:
    """Compiles `source` as the Python extension module `name` in `directory`
    (against this interpreter's headers, with extra compiler `flags`);
    returns the module's path."""
    (directory / f"{name}.c").write_text(source)
    module = directory / (name + sysconfig.get_config_var("EXT_SUFFIX"))
    compile_c(f"-I{sysconfig.get_paths()['include']}", *flags, str(directory / f"{name}.c"),
              "-o", str(module))
    return module


def leakprobe_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[leakprobe]")]


def scrape(url: str, client: httpx.Client | None = None) -> dict[str, dict]:
    """GETs the exposition (over `client`'s kept-alive connection if given);
    returns {family name: {labels tuple: value}} and keeps the raw text
    under the key '__text__'."""
    response = (client or httpx).get(url, timeout=10)
    response.raise_for_status()
    return parse_exposition(response.text)


# The labels naming the process of every series (docs/multiprocess.md).
PROCESS_LABELS = ("pid", "role")


def parse_exposition(text: str) -> dict[str, dict]:
    """Parses exposition text as scrape() does, text kept under '__text__'.
    When every series comes from one process, its `pid` and `role` labels
    are left out of the keys (and kept under '__processes__': {pid: role});
    with several processes they stay in."""
    families: dict[str, dict] = {"__text__": text}
    parsed = list(text_string_to_metric_families(text))
    processes = {s.labels["pid"]: s.labels.get("role") for f in parsed for s in f.samples
                 if "pid" in s.labels}
    families["__processes__"] = processes
    drop = PROCESS_LABELS if len(processes) == 1 else ()
    for family in parsed:
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in drop))
            samples[(sample.name, labels)] = sample.value
    return families


def group_processes(text: str) -> dict[str, str]:
    """pid -> role of every process whose series a scrape carries (read off
    `process_threads`, which every leakprobe process exports once)."""
    return {s.labels["pid"]: s.labels["role"]
            for f in text_string_to_metric_families(text) if f.name == "process_threads"
            for s in f.samples}


def without_process_labels(text: str) -> str:
    """Exposition text of one process with its `pid` and `role` labels
    removed (they come last in every series), for checks of whole lines."""
    text = re.sub(r',pid="\d+",role="[^"]*"\}', "}", text)
    return re.sub(r'\{pid="\d+",role="[^"]*"\}', "", text)


def value(families: dict, name: str, **labels: str) -> float:
    """The value of one sample (`name` is the sample name, e.g. 'x_total')."""
    family = re.sub(r"_total$", "", name)
    for candidate in (name, family):
        if candidate in families:
            key = (name, tuple(sorted(labels.items())))
            return families[candidate][key]
    raise KeyError(name)


class Server:
    """A child Python process with leakprobe imported, serving metrics on a
    free port; it runs `body` after start-up and then waits for stdin to close."""

    def __init__(self, body: str = "", **env: str) -> None:
        code = textwrap.dedent(
            """
            import json, sys
            import leakprobe
            print(json.dumps(leakprobe.status()), flush=True)
            """
        ) + textwrap.dedent(body) + "\nsys.stdin.read()\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=child_env(**env), text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server died: {self.proc.stderr.read()}")
        self.status = json.loads(line)
        self.url = self.status["url"]

    def readline(self) -> str:
        return self.proc.stdout.readline()

    def ask(self, command: str) -> str:
        """Sends one command line to the child's body; returns its answer line."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.readline().strip()

    def close(self, timeout: float = 30) -> tuple[int, str]:
        """Closes stdin (the child then exits); returns (exit code, stderr)."""
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
            raise
        return self.proc.returncode, stderr


@pytest.fixture
def server_factory():
    servers: list[Server] = []

    def make(body: str = "", **env: str) -> Server:
        server = Server(body, **env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc.poll() is None:
            server.close()
