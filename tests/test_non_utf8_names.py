"""Names that are not valid UTF-8 (a path with bytes that do not decode, a
str with lone surrogates) never break heap_snapshot(), open_fds() or a
scrape: every such byte is shown as "\\xNN", as Python's
bytes.decode("utf-8", "backslashreplace") shows it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families


def shown(raw: bytes) -> str:
    """How leakprobe names a path made of these bytes."""
    return raw.decode("utf-8", "backslashreplace")


# Run from a file whose path has invalid UTF-8 bytes (its co_filename has
# lone surrogates, as os.fsdecode gives them); one function's name has a
# surrogate that stands for no byte. It holds ~12 MiB of heap, a file whose
# name has invalid bytes and a unix socket bound to such a path.
PROGRAM = b"""
import os, socket
held = []
files = []
def grow():
    for _ in range(200):
        held.append(bytearray(64 * 1024))  # L:grow
def make_fds(d):
    files.append(open(os.path.join(d, b"data\\xff.txt"), "wb"))  # L:file
    s = socket.socket(socket.AF_UNIX)  # L:socket
    s.bind(os.path.join(d, b"sock\\xfe"))
    s.listen()
    files.append(s)
grow.__code__ = grow.__code__.replace(co_qualname="grow\\ud800")
"""

BODY = """
import os, sys
import leakprobe
d = os.fsencode(os.environ["BADNAME_DIR"])
path = os.path.join(d, b"prog\\xff.py")
code = compile(open(path, "rb").read(), os.fsdecode(path), "exec")
ns = {}
exec(code, ns)
ns["grow"]()
ns["make_fds"](d)
heap = [[str(s.site), s.site.filename, s.site.lineno, s.site.function, s.size]
        for s in leakprobe.heap_snapshot().statistics("site") if s.site is not None]
fds = [[r.fd, r.kind, r.target, r.local, r.site_name, [str(f) for f in r.stack]]
       for r in leakprobe.open_fds()]
print(json.dumps({"heap": heap, "fds": fds}), flush=True)
"""


@pytest.fixture
def bad_dir():
    base = tempfile.mkdtemp(prefix="lp")  # short: unix socket paths are <108 bytes
    d = os.path.join(os.fsencode(base), b"d\xff\xfe")
    os.mkdir(d)
    with open(os.path.join(d, b"prog\xff.py"), "wb") as f:
        f.write(PROGRAM)
    yield d
    shutil.rmtree(base)


def line_of(tag: str) -> int:
    return next(i for i, text in enumerate(PROGRAM.decode().splitlines(), 1)
                if text.endswith(f"# L:{tag}"))


def test_invalid_utf8_paths_in_heap_fds_and_scrape(server_factory, bad_dir):
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required; scripts/setup.sh installs it"
    prog = shown(os.path.join(bad_dir, b"prog\xff.py"))
    assert prog.endswith("/d\\xff\\xfe/prog\\xff.py")
    server = server_factory(BODY, BADNAME_DIR=os.fsdecode(bad_dir),
                            LEAKPROBE_HEAP_SAMPLE_BYTES="16384")
    line = server.readline()
    assert line, server.close()[1]
    report = json.loads(line)
    # Every text is valid UTF-8 (str.encode fails on lone surrogates).
    json.dumps(report, ensure_ascii=False).encode("utf-8")

    # Heap: the 12.5 MiB are attributed to the file, named recognisably.
    grow_site = f"{prog}:{line_of('grow')} in grow\\xed\\xa0\\x80"
    heap = {site: (filename, lineno, function, size)
            for site, filename, lineno, function, size in report["heap"]}
    assert grow_site in heap, list(heap)
    assert heap[grow_site][:3] == (prog, line_of("grow"), "grow\\xed\\xa0\\x80")
    assert heap[grow_site][3] > 8 * 2**20

    # fds: the file's target and the socket's bound path, each made at the
    # right line of the file.
    fds = {kind: (target, local, site, stack) for _, kind, target, local, site, stack
           in report["fds"] if site.startswith(prog)}
    target, _, site, stack = fds["file"]
    assert target == shown(os.path.join(bad_dir, b"data\xff.txt"))
    assert site == f"{prog}:{line_of('file')} in make_fds"
    assert stack[0] == site
    _, local, site, _ = fds["unix"]
    assert local == shown(os.path.join(bad_dir, b"sock\xfe"))
    assert site == f"{prog}:{line_of('socket')} in make_fds"

    # Scrape: the exposition is valid UTF-8 as bytes, passes promtool, and
    # its site labels name the file.
    raw = httpx.get(server.url, timeout=10).content
    text = raw.decode("utf-8")  # strict
    result = subprocess.run([promtool, "check", "metrics"], input=raw,
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    labels = {(sample.name, sample.labels.get("site"))
              for family in text_string_to_metric_families(text)
              for sample in family.samples}
    assert ("leakprobe_heap_site_live_bytes", grow_site) in labels
    assert ("leakprobe_fd_site_open_fds", f"{prog}:{line_of('file')} in make_fds") in labels
    code, stderr = server.close()
    assert code == 0, stderr


def test_library_code_under_an_invalid_utf8_path_is_still_library(bad_dir):
    # The user site directory (one of the library prefixes) lives under a
    # path with invalid bytes; code there allocates for its caller, which
    # must be the attribution site.
    from conftest import run_python

    user_base = os.path.join(bad_dir, b"userbase")
    proc = run_python(
        """
        import json, os, site, sys
        import leakprobe
        lib = os.fsencode(site.getusersitepackages())
        os.makedirs(lib)
        with open(os.path.join(lib, b"helper.py"), "wb") as f:
            f.write(b"def alloc(out):\\n    for _ in range(200):\\n        out.append(bytearray(65536))\\n")
        sys.path.insert(0, os.fsdecode(lib))
        import helper
        held = []
        helper.alloc(held)  # L:caller
        top = leakprobe.heap_snapshot().statistics("site")[0]
        print(json.dumps([leakprobe.status()["running"], str(top.site), top.size,
                          [str(f) for f in top.traceback[:2]]]))
        """,
        PYTHONUSERBASE=os.fsdecode(user_base), LEAKPROBE_HEAP_SAMPLE_BYTES="16384",
    )
    assert proc.returncode == 0, proc.stderr
    running, site, size, traceback = json.loads(proc.stdout)
    assert running
    assert site == "<string>:11 in <module>"
    assert size > 8 * 2**20
    # The helper's own frame is there, its path escaped.
    assert traceback[0].startswith(shown(user_base) + "/lib/python")
    assert traceback[0].endswith("/site-packages/helper.py:3 in alloc"), traceback
