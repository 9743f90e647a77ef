"""fork() never hangs, whatever runs around it: the one fork protocol
(native/include/leakprobe/runtime/fork.h) takes every lock a hook can take
and sets the hook guard on the forking thread, so

- atfork handlers of a library loaded *before* leakprobe (they run after
  leakprobe's prepare handler and before its child handler, while it holds
  its locks) may allocate through PyMem, free sampled blocks and open fds:
  the hooks pass those calls through and count them;
- threads busy in the hooks (sampling, interning stacks, recording fds) when
  another thread forks leave no lock held in the child.

Each child is waited for with a timeout (killed and counted as hung after
CHILD_TIMEOUT s); the parent program runs in its own session under a
timeout too, so a hang in the parent's fork fails the test instead of
blocking the suite.

Checked against scratch builds without the protocol (runtime/fork.cpp
edited): without the forking bit the first test hangs in the parent's first
fork (the earlier library's prepare handler frees a sampled block and waits
for the heap lock that leakprobe's own prepare handler holds); with no fork
protocol at all it fails on the pass counts. The second test catches a
missing protocol only by chance: with no protocol, a child hung (a lock
held by a thread interning a stack at the fork) in 1 of 3 runs of this
version (1 of 500 children), and in 2 of 2 runs of an earlier version that
polled waitpid (1 and 4 of 500).
Run time on a shared 2-core machine at load 11-18: 2-3 s and 17-47 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import build_extension, child_env

CHILD_TIMEOUT = 10.0

# Helpers shared by both programs: wait for a child with a timeout; read the
# guard's pass counters from the exposition (leakprobe_hook_passes_total).
COMMON = f"""
import json, os, re, select, shutil, signal, subprocess, sys, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
hung_reports = []  # what each hung child was doing, for the test's message

def describe_hung(pid):
    # Where each thread of a hung child waits (the kernel's view, then gdb's
    # stacks where gdb is installed), so a rare hang in CI says where it was.
    lines = []
    try:
        tids = sorted(os.listdir(f"/proc/{{pid}}/task"), key=int)
    except OSError as exc:
        return f"pid {{pid}}: {{exc}}"
    for tid in tids:
        def read(name):
            try:
                with open(f"/proc/{{pid}}/task/{{tid}}/{{name}}") as f:
                    return f.read().strip().replace("\\n", " | ")
            except OSError as exc:
                return f"({{exc.strerror}})"
        lines.append(f"thread {{tid}} {{read('comm')}}: wchan {{read('wchan')}}; "
                     f"syscall {{read('syscall')}}; kernel stack {{read('stack')}}")
    gdb = shutil.which("gdb")
    if gdb:
        try:
            lines.append(subprocess.run(
                [gdb, "-batch", "-p", str(pid), "-ex", "thread apply all bt 40"],
                capture_output=True, text=True, timeout=120).stdout[-8000:])
        except subprocess.TimeoutExpired:
            lines.append("gdb timed out")
    return "\\n".join(lines)

def wait_child(pid, timeout={CHILD_TIMEOUT}):
    # One wait without the GIL (a pidfd turns readable when the child
    # exits), not a polling loop that competes for the GIL with the threads.
    pidfd = os.pidfd_open(pid)
    try:
        exited, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not exited:
        hung_reports.append(describe_hung(pid))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None  # hung
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def passes():
    import leakprobe._native as native
    found = re.findall(r'^leakprobe_hook_passes_total\\{{hook="(\\w+)"[^}}]*\\}} (\\S+)$',
                       native.collect_text(), re.M)
    return {{hook: float(value) for hook, value in found}}
"""

# A C library with its own atfork handlers, registered when it is imported:
# before leakprobe, so POSIX runs its prepare handler after leakprobe's
# (which holds the tracker locks by then) and its child handler before
# leakprobe's (which releases them). Both free a block that was sampled
# when fill() allocated it, allocate blocks large enough to be sampled, and
# open and close an fd.
ATFORK_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define BLOCKS 1024
#define BLOCK_BYTES 16384

static void* sampled[BLOCKS];  /* allocated by fill(), freed one per handler */
static int next_free = 0;
static void* held[4];
static long prepares = 0, children = 0, freed = 0;

static void churn(void) {
    if (next_free < BLOCKS && sampled[next_free] != NULL) {
        PyMem_Free(sampled[next_free]);
        sampled[next_free++] = NULL;
        ++freed;
    }
    for (int i = 0; i < 4; ++i) {
        PyMem_Free(held[i]);
        held[i] = PyMem_Malloc(BLOCK_BYTES);
        if (held[i] != NULL) memset(held[i], i, BLOCK_BYTES);
    }
    void* object = PyObject_Malloc(BLOCK_BYTES);
    PyObject_Free(object);
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) close(fd);
}

static void prepare(void) { ++prepares; churn(); }
static void child(void) { ++children; churn(); }

static PyObject* fill(PyObject* self, PyObject* unused) {
    for (int i = 0; i < BLOCKS; ++i) {
        if (sampled[i] == NULL) sampled[i] = PyMem_Malloc(BLOCK_BYTES);
    }
    next_free = 0;
    Py_RETURN_NONE;
}

static PyObject* counts(PyObject* self, PyObject* unused) {
    return Py_BuildValue("(lll)", prepares, children, freed);
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_NOARGS, "Allocate the blocks the handlers free."},
    {"counts", counts, METH_NOARGS, "(prepare calls, child calls, blocks freed)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "atforkalloc", NULL, -1, methods};

PyMODINIT_FUNC PyInit_atforkalloc(void) {
    if (pthread_atfork(prepare, NULL, child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    return PyModule_Create(&module);
}
"""

FORKS_WITH_ATFORK_LIBRARY = 200

ATFORK_PROGRAM = COMMON + f"""
sys.path.insert(0, os.environ["EXT_DIR"])
import atforkalloc          # registers its atfork handlers first
assert "leakprobe" not in sys.modules
import leakprobe
assert "heap" in leakprobe.status()["features"] and "fds" in leakprobe.status()["features"]
atforkalloc.fill()          # 16 KiB blocks, 1 KiB sample interval: all sampled
before = passes()
codes = []
started = time.monotonic()
for i in range({FORKS_WITH_ATFORK_LIBRARY}):
    pid = os.fork()
    if pid == 0:
        junk = [bytearray(20000) for _ in range(4)]   # sampled in the child
        with open(os.devnull) as f:
            pass
        os._exit(0 if atforkalloc.counts()[1] >= 1 else 3)  # its child handler ran
    codes.append(wait_child(pid))
print(json.dumps({{"codes": codes, "hung": hung_reports, "before": before, "after": passes(),
                  "counts": atforkalloc.counts(), "seconds": time.monotonic() - started,
                  "samples": leakprobe._native.heap_summary()["samples"]}}), flush=True)
"""

FORKS_UNDER_LOAD = 500
THREADS = 8

THREADS_PROGRAM = COMMON + f"""
import collections, socket, threading
import leakprobe
sys.setswitchinterval(0.0005)  # the forking thread gets the GIL back soon
stop = threading.Event()
loops = [0] * {THREADS}

# Each loop opens a file from a code object never seen before: its stack
# is new, so the fd hook interns it under the stack table's lock, without
# the GIL, while the main thread forks.
OPENER = (
    "def opener():\\n"
    "    with open(os.devnull, 'rb'):\\n"
    "        pass\\n"
    "    socket.socket().close()\\n"
    "    r, w = os.pipe()\\n"
    "    os.close(r)\\n"
    "    os.close(w)\\n"
)

def work(n):
    held = collections.deque(maxlen=64)
    while not stop.is_set():
        held.append(bytearray(4096 + n))
        held.append({{i: str(i) * 8 for i in range(16)}})
        scope = {{"os": os, "socket": socket}}
        exec(compile(OPENER, f"<opener {{n}}.{{loops[n]}}>", "exec"), scope)
        scope["opener"]()
        loops[n] += 1
        time.sleep(0.0005)  # lets the forking thread at the GIL: bounds the run time

threads = [threading.Thread(target=work, args=(n,)) for n in range({THREADS})]
for t in threads:
    t.start()
while min(loops) == 0:
    time.sleep(0.01)
samples_before = leakprobe._native.heap_summary()["samples"]
codes = []
started = time.monotonic()
for i in range({FORKS_UNDER_LOAD}):
    pid = os.fork()
    if pid == 0:
        junk = [bytearray(8192) for _ in range(16)]
        with open(os.devnull, "rb"):
            pass
        os._exit(0)
    codes.append(wait_child(pid))
seconds = time.monotonic() - started
stop.set()
for t in threads:
    t.join()
print(json.dumps({{"codes": codes, "hung": hung_reports, "loops": loops, "seconds": seconds,
                  "samples": leakprobe._native.heap_summary()["samples"] - samples_before}}),
      flush=True)
"""


def _run_bounded(code: str, timeout: float, **env: str) -> dict:
    """Runs `code` in its own session; kills the whole session (children
    included) and fails when it does not finish in `timeout` s."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            env=child_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the program hung (killed after {timeout} s); stderr:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])


def _hung_and_failed(codes: list) -> tuple[int, list]:
    return codes.count(None), [c for c in codes if c not in (0, None)]


def test_atfork_handlers_of_an_earlier_library_allocate_and_free_through_pymem(tmp_path: Path):
    build_extension(tmp_path, "atforkalloc", ATFORK_C)
    result = _run_bounded(ATFORK_PROGRAM, timeout=180, EXT_DIR=str(tmp_path),
                          LEAKPROBE_HEAP_SAMPLE_BYTES="1024")
    codes = result["codes"]
    assert len(codes) == FORKS_WITH_ATFORK_LIBRARY
    hung, failed = _hung_and_failed(codes)
    assert hung == 0, f"{hung} children hung; the first:\n{result['hung'][0]}"
    assert failed == [], f"children exited with {failed} (3: their atfork child handler did not run)"
    prepares, children, freed = result["counts"]
    assert prepares == FORKS_WITH_ATFORK_LIBRARY and children == 0  # the parent's view
    assert freed == FORKS_WITH_ATFORK_LIBRARY
    before, after = result["before"], result["after"]
    assert set(after) == {"heap_alloc", "heap_free", "fd", "native_alloc", "native_free"}
    # Each prepare handler made 5 allocations that crossed the pending
    # sample point, one free of a sampled block and one open/close pair,
    # all on the forking thread inside fork(): every one passed through.
    assert after["heap_alloc"] - before["heap_alloc"] >= 5 * FORKS_WITH_ATFORK_LIBRARY
    assert after["heap_free"] - before["heap_free"] >= FORKS_WITH_ATFORK_LIBRARY
    assert after["fd"] - before["fd"] >= 2 * FORKS_WITH_ATFORK_LIBRARY
    assert result["samples"] > 1024  # the tracker kept sampling around the forks


def test_fork_while_eight_threads_allocate_and_open_fds():
    result = _run_bounded(THREADS_PROGRAM, timeout=300, LEAKPROBE_HEAP_SAMPLE_BYTES="4096")
    codes = result["codes"]
    assert len(codes) == FORKS_UNDER_LOAD
    hung, failed = _hung_and_failed(codes)
    assert hung == 0, f"{hung} of {FORKS_UNDER_LOAD} children hung; the first:\n{result['hung'][0]}"
    assert failed == [], f"children exited with {failed}"
    assert min(result["loops"]) > 0, result["loops"]
    assert result["samples"] > 0  # the threads were sampled while the forks ran
