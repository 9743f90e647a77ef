"""Tracked objects (docs/objects.md): track_type and the registry API with
real classes in real interpreters: exact created / closed /
collected-while-open counts, creation sites, snapshots, never keeping an
object alive, threads, fork, exit, caps, bad arguments, and the metrics
(promtool-clean)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import leakprobe_lines, run_python, scrape, value

# A module of "application code" (so that attribution sites are its lines)
# with a tracked class; each test's program imports it.
APP = '''
import leakprobe

@leakprobe.track_type(close=("close", "aclose"))
class Resource:
    def __init__(self, tag=None):
        self.tag = tag
        self.closed = False

    def close(self):
        self.closed = True
        return "closed"

    async def aclose(self):
        self.closed = True
        return "aclosed"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        return False


def make(n):
    out = []
    for i in range(n):
        out.append(Resource(i))  # MAKE_LINE
    return out
'''
MAKE_LINE = next(i for i, line in enumerate(APP.splitlines(), 1) if "MAKE_LINE" in line)


COUNTS = """
def counts(name="app.Resource"):
    for t in leakprobe.objects():
        if t.name == name:
            return [t.live, t.created, t.closed, t.collected_while_open, t.dropped, t.errors]
    return None
"""


def run_app(tmp_path: Path, body: str, timeout: float = 60, logs: int = 0,
            **env: str) -> list:
    """Runs `body` (after `import app`, `json`, `gc`, `leakprobe` and COUNTS) in a fresh
    interpreter with the app module on its path; returns the JSON lines it
    printed."""
    (tmp_path / "app.py").write_text(APP)
    code = "import sys, json, gc\nsys.path.insert(0, %r)\nimport app, leakprobe\n" % str(
        tmp_path) + COUNTS + textwrap.dedent(body)
    env.setdefault("LEAKPROBE_LOG_LEVEL", "warning")
    proc = run_python(code, timeout=timeout, **env)
    assert proc.returncode == 0, proc.stderr
    assert len(leakprobe_lines(proc.stderr)) == logs, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]



def test_exact_counts_of_created_closed_and_collected_while_open(tmp_path):
    out = run_app(tmp_path, """
    import asyncio
    kept = app.make(10)
    print(json.dumps(counts()))
    kept[0].close(); kept[0].close()          # twice: counted once
    kept[1].close(); kept[2].close()
    with app.Resource() as r:                   # __exit__ closes
        pass
    assert asyncio.run(app.Resource().aclose()) == "aclosed"
    print(json.dumps(counts()))
    del kept[5:9]                               # 4 dropped without close: freed at once
    cyclic = app.Resource(); cyclic.me = cyclic # 1 in a cycle: freed by gc
    del cyclic
    gc.collect()
    print(json.dumps(counts()))
    """)
    # [live, created, closed, collected_while_open, dropped, errors]
    assert out[0] == [10, 10, 0, 0, 0, 0]
    assert out[1] == [7, 12, 5, 0, 0, 0]
    assert out[2] == [3, 13, 5, 5, 0, 0]  # kept[3], kept[4], kept[9]


def test_tracking_never_keeps_an_object_alive(tmp_path):
    out = run_app(tmp_path, """
    import weakref
    r = app.Resource()
    ref = weakref.ref(r)
    del r
    alive_after_del = ref() is not None        # refcount: no gc needed
    c = app.Resource(); c.me = c
    cref = weakref.ref(c)
    del c
    gc.collect()
    t = [t for t in leakprobe.objects() if t.name == "app.Resource"][0]
    print(json.dumps([alive_after_del, cref() is not None, t.live, t.collected_while_open]))
    """)
    assert out == [[False, False, 0, 2]]


def test_sites_oldest_age_and_snapshot_compare(tmp_path):
    out = run_app(tmp_path, """
    import time
    first = app.Resource(); line = sys._getframe().f_lineno
    before = leakprobe.object_snapshot()
    time.sleep(0.2)
    batch = app.make(4)
    after = leakprobe.object_snapshot()
    for r in batch[:3]:
        r.close()
    later = leakprobe.object_snapshot()
    t = [t for t in leakprobe.objects() if t.name == "app.Resource"][0]
    print(json.dumps({
        "sites": [[str(s.site), s.count, [f.function for f in s.traceback][:2]] for s in t.sites],
        "oldest": t.oldest_age_seconds,
        "growth": [[d.site.lineno, d.site.function, d.count, d.count_diff, len(d.created),
                    len(d.released)] for d in after.compare_to(before)],
        "shrink": [[d.site.lineno, d.count_diff, len(d.released)]
                   for d in later.compare_to(after) if d.count_diff],
        "stats": [[s.type, s.count] for s in after.statistics()],
        "tb": len(after.statistics("traceback")),
        "records": [[r.type, r.site.lineno] for r in before.records],
        "line": line,
    }))
    """)[0]
    app = str(tmp_path / "app.py")
    line = out["line"]
    # The wrapper of a plain __init__ is C code: no frame of its own, the
    # stack starts at the line that created the object.
    assert out["sites"] == [[f"{app}:{MAKE_LINE} in make", 1, ["make", "<module>"]],
                            [f"<string>:{line} in <module>", 1, ["<module>"]]]
    assert 0.2 <= out["oldest"] < 30
    assert out["growth"][0] == [MAKE_LINE, "make", 4, 4, 4, 0]
    assert out["growth"][1] == [line, "<module>", 1, 0, 0, 0]
    assert out["shrink"] == [[MAKE_LINE, -3, 3]]
    assert out["stats"] == [["app.Resource", 4], ["app.Resource", 1]]
    assert out["tb"] == 2
    assert out["records"] == [["app.Resource", line]]


def test_subclasses_count_under_the_nearest_tracked_class_once(tmp_path):
    out = run_app(tmp_path, """
    class Plain(app.Resource):                  # not tracked: counts as app.Resource
        def __init__(self):
            super().__init__("plain")

    @leakprobe.track_type(name="app.Special")
    class Special(app.Resource):                # tracked: counts as itself, once
        pass

    class MoreSpecial(Special):
        pass

    keep = [Plain(), Plain(), Special(), MoreSpecial()]
    keep[0].close(); keep[2].close()
    print(json.dumps([counts(), counts("app.Special"), keep[0].tag]))
    """)
    assert out == [[[1, 2, 1, 0, 0, 0], [1, 2, 1, 0, 0, 0], "plain"]]


def test_wrapped_methods_behave_as_before(tmp_path):
    out = run_app(tmp_path, """
    import inspect, pickle

    DEFAULT_TAGS = []

    class Conn:
        # Keyword-only parameters reach the method by position, through a
        # twin of it (objects.md): their order and defaults must hold.
        def __init__(self, host, /, port=80, *extra, timeout=5.0, retries=2, tags=DEFAULT_TAGS,
                     **options):
            if host == "bad":
                raise ValueError("bad host")
            self.args = (host, port, extra, timeout, options)
            self.more = (retries, tags is DEFAULT_TAGS)

        def close(self, force=False, *, reason="done", code=0):
            if reason == "fail":
                raise OSError("close failed")
            return (force, reason, code)

    signature_before = [str(inspect.signature(Conn.__init__)), str(inspect.signature(Conn.close))]
    assert leakprobe.track_type(Conn, name="Conn") is Conn
    results = [str(inspect.signature(Conn.__init__)) == signature_before[0],
               str(inspect.signature(Conn.close)) == signature_before[1],
               Conn.close.__name__, Conn.close.__doc__, Conn.__init__.__qualname__]
    c = Conn("h", 1, 2, 3, timeout=1, x=1)
    results.append(list(c.args[:2]) + [list(c.args[2]), c.args[3], c.args[4]])
    results.append(list(c.more) + list(Conn("h", retries=7, timeout=2).more))
    results.append(list(c.close(True, reason="r")) + list(c.close(code=9, reason="s")))
    try:
        Conn("bad")
    except ValueError as exc:
        results.append(str(exc))                # __init__ raised: nothing created
    try:
        Conn("x").close(reason="fail")
    except OSError as exc:
        results.append(str(exc))                # close raised: not closed
    try:
        Conn()
    except TypeError as exc:
        results.append("missing" in str(exc))
    clone = pickle.loads(pickle.dumps(c))       # made without __init__: not tracked
    results.append(clone.args[0])
    clone.close()
    gc.collect()
    results.append(counts("Conn"))
    print(json.dumps(results))
    """)
    assert out == [[True, True, "close", None, "Conn.__init__",
                    ["h", 1, [2, 3], 1, {"x": 1}], [2, True, 7, True],
                    [True, "r", 0, False, "s", 9], "bad host", "close failed",
                    True, "h", [0, 3, 1, 2, 0, 0]]]


def test_the_c_wrapper_passes_for_the_function_it_wraps(tmp_path):
    # Plain __init__ and close functions get the C wrapper (no Python
    # frame); what introspection, pickling and weak references see of it
    # must be what they saw of the function.
    out = run_app(tmp_path, """
    import copy, inspect, pickle, weakref

    class Box:
        def __init__(self, size, *, label="box"):
            self.size, self.label = size, label

        def close(self):
            return self.size

    init, close = Box.__init__, Box.close
    class_signature = str(inspect.signature(Box))
    leakprobe.track_type(Box, name="Box")
    kinds = sorted({type(Box.__dict__[n]).__name__ for n in ("__init__", "close")}
                   | {type(app.Resource.__dict__[n]).__name__ for n in ("__init__", "close")})
    box = Box(3, label="b")
    bound = box.close
    results = [
        kinds,
        type(app.Resource.__dict__["aclose"]).__name__,   # a coroutine: a generated wrapper
        str(inspect.signature(Box)) == class_signature,
        Box.__init__.__wrapped__ is init, Box.close.__code__ is close.__code__,
        Box.close.__dict__ is not close.__dict__ and Box.close.__leakprobe_wrapped__,
        Box.close.__qualname__, Box.close.__module__ == __name__,
        pickle.loads(pickle.dumps(app.Resource.close)) is app.Resource.close,
        copy.deepcopy(Box.close) is Box.close,
        weakref.WeakMethod(bound)() == bound, bound.__self__ is box, bound(),
        Box.__init__(box, 5) is None, box.size,             # called unbound: a re-init
        Box.close(self=box),                                # self by keyword: closed
        inspect.getsource(app.Resource.close).strip().splitlines()[0],
    ]
    results.append(counts("Box"))
    from leakprobe import _native, _objects
    errors = []
    for args in [(1, _objects.register_type("Box"), None), (len, object(), None),
                 (len, _objects.register_type("Box"), 1)]:
        try:
            _native.tracked_method(*args)
        except TypeError as exc:
            errors.append(str(exc))
    try:
        _native.TrackedMethod()
    except TypeError:
        errors.append("not instantiable")
    results.append(errors)
    print(json.dumps(results))
    """)
    errors = out[0].pop()
    assert errors == ["tracked_method() wraps a callable, not int",
                      "tracked_method() takes a TrackedType, not object",
                      "tracked_method() takes the class (for __init__) or None (for a close "
                      "method) as owner, not int", "not instantiable"]
    assert out == [[["TrackedMethod"], "function", True, True, True, True, "Box.close", True,
                    True, True, True, True, 3, True, 5, 5, "def close(self):",
                    [0, 2, 2, 0, 0, 0]]]  # closed by bound(), created again, closed by keyword


def test_bad_arguments_raise_clear_errors(tmp_path):
    out = run_app(tmp_path, """
    import collections
    from leakprobe import _objects

    class Slotted:
        __slots__ = ("x",)
        def close(self): pass

    class Fine:
        def close(self): pass
        def dispose(self): pass

    leakprobe.track_type(Fine, name="fine")
    cases = {
        "not a class": lambda: leakprobe.track_type(3),
        "an instance": lambda: leakprobe.track_type(Fine()),
        "no weakrefs": lambda: leakprobe.track_type(Slotted),
        "extension type": lambda: leakprobe.track_type(collections.OrderedDict, close="clear"),
        "missing close": lambda: leakprobe.track_type(Fine, close="shutdown"),
        "bad close": lambda: leakprobe.track_type(Fine, close=["close", 3]),
        "empty close": lambda: leakprobe.track_type(Fine, close=()),
        "bad name": lambda: leakprobe.track_type(Fine, name=7),
        "renamed": lambda: leakprobe.track_type(Fine, name="other"),
        "empty type name": lambda: _objects.register_type(" "),
        "long type name": lambda: _objects.register_type("x" * 201),
        "type name not str": lambda: _objects.register_type(b"x"),
    }
    out = {}
    for what, call in cases.items():
        try:
            call()
            out[what] = "no error"
        except (TypeError, ValueError) as exc:
            out[what] = [type(exc).__name__, str(exc)]
    out["again"] = leakprobe.track_type(Fine, name="fine") is Fine   # same name: no-op
    print(json.dumps(out))
    """)[0]
    assert out["not a class"][0] == "TypeError" and "takes a class, not int" in out["not a class"][1]
    assert out["an instance"][0] == "TypeError" and "not Fine" in out["an instance"][1]
    assert out["no weakrefs"][0] == "TypeError"
    assert "__main__.Slotted cannot be weakly referenced" in out["no weakrefs"][1]
    assert "'__weakref__'" in out["no weakrefs"][1]
    assert out["extension type"][0] == "TypeError"
    assert "collections.OrderedDict is a built-in or extension type" in out["extension type"][1]
    assert out["missing close"][0] == "ValueError"
    assert "__main__.Fine has no method 'shutdown'" in out["missing close"][1]
    assert out["bad close"][0] == "TypeError" and "('close', 'aclose')" in out["bad close"][1]
    assert out["empty close"][0] == "TypeError"
    assert out["bad name"] == ["TypeError", "track_type(): name must be a str or None, not int"]
    assert out["renamed"][0] == "ValueError" and "tracked already, as 'fine'" in out["renamed"][1]
    assert out["empty type name"][0] == "ValueError"
    assert "at most 200 bytes" in out["long type name"][1]
    assert out["type name not str"][0] == "TypeError"
    assert out["again"] is True


def test_registry_api_for_adapters(tmp_path):
    out = run_app(tmp_path, """
    from leakprobe import _objects

    class Client:
        pass

    t = _objects.register_type("httpx.Client")
    same = _objects.register_type("httpx.Client") is t
    a, b = Client(), Client()
    t.created(a); t.created(a)                  # the second is ignored
    t.created(b)
    t.closed(a); t.closed(a); t.closed(Client())  # idempotent; untracked ignored
    t.created(1)                                # cannot be weakly referenced: an error
    t.created(2)
    print(json.dumps([same, t.name, repr(t), counts("httpx.Client")]))
    """, logs=1)
    assert out == [[True, "httpx.Client", "<leakprobe TrackedType 'httpx.Client'>",
                    [1, 2, 1, 0, 0, 2]]]


def test_other_weak_references_and_a_handle_kept_alive_elsewhere(tmp_path):
    # A close finds the record by walking the instance's weak references for
    # ours: the others (before and after ours, with and without callbacks)
    # are passed over, and so is one of ours that somebody keeps alive from
    # weakref.getweakrefs after its record was closed.
    out = run_app(tmp_path, """
    import weakref
    from leakprobe import _native, _objects

    class Client:
        pass

    def ours(obj):
        return [r for r in weakref.getweakrefs(obj)
                if getattr(r.__callback__, "__name__", "") == "_leakprobe_object_collected"]

    t = _objects.register_type("own.Client")
    fired = []
    c = Client()
    plain = weakref.ref(c)
    values = weakref.WeakValueDictionary(); values["c"] = c
    t.created(c); t.created(c)                  # the second is ignored
    after = weakref.ref(c, fired.append)
    held = ours(c)                              # kept alive from here on
    steps = [[len(held), _native.object_tracked(c), counts("own.Client")]]
    t.closed(c)
    steps.append([len(ours(c)), _native.object_tracked(c), counts("own.Client")])
    t.created(c)                                # tracked again, by a new handle
    steps.append([len(ours(c)), _native.object_tracked(c), counts("own.Client")])
    t.closed(c); t.closed(c)
    steps.append([len(ours(c)), _native.object_tracked(c), counts("own.Client")])
    t.created(c)
    del c                                       # collected while open, once
    steps.append([plain() is None, len(values), len(fired), counts("own.Client")])
    print(json.dumps(steps))
    """)
    # [live, created, closed, collected_while_open, dropped, errors]
    assert out == [[
        [1, True, [1, 1, 0, 0, 0, 0]],
        [1, False, [0, 1, 1, 0, 0, 0]],   # the held one is still in the list
        [2, True, [1, 2, 1, 0, 0, 0]],
        [1, False, [0, 2, 2, 0, 0, 0]],
        [True, 0, 1, [0, 3, 2, 1, 0, 0]],
    ]]


def test_unweakrefable_instance_is_logged_once(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    proc = run_python(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from leakprobe import _objects
        t = _objects.register_type("ints")
        for i in range(3):
            t.created(i)
        print("ok")
        """)
    assert proc.returncode == 0 and proc.stdout == "ok\n"
    lines = leakprobe_lines(proc.stderr)
    assert len([line for line in lines if "cannot be weakly referenced" in line]) == 1, lines


def test_threads_creating_and_closing_concurrently(tmp_path):
    out = run_app(tmp_path, """
    import threading
    barrier = threading.Barrier(8)
    kept = []
    def work():
        barrier.wait()
        mine = []
        for i in range(3000):
            r = app.Resource()
            if i % 3 == 0:
                r.close()
            elif i % 3 == 1:
                mine.append(r)                  # stays alive
            # else: dropped unclosed, collected while open
        kept.extend(mine)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads: th.start()
    for th in threads: th.join()
    gc.collect()
    print(json.dumps([counts(), len(leakprobe.object_snapshot())]))
    """, timeout=120)
    assert out == [[[8 * 1000, 8 * 3000, 8 * 1000, 8 * 1000, 0, 0], 8 * 1000]]


def test_fork_child_sees_its_inherited_objects_and_counts_its_own(tmp_path):
    out = run_app(tmp_path, """
    import os, threading
    kept = app.make(5)
    stop = threading.Event()
    def churn():                                # the registry's lock is busy at the fork
        while not stop.is_set():
            app.Resource().close()
    th = threading.Thread(target=churn); th.start()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        # Inherited: the 5 kept, and maybe one the churn thread (gone in
        # the child) had made but not closed at the fork.
        at_fork = counts()
        kept[0].close()                         # an inherited object, closed in the child
        extra = app.make(2)
        del kept[1]                             # collected while open, in the child
        c = counts()
        os.write(w, json.dumps([at_fork[0] in (5, 6), c[0] - at_fork[0], c[1] - at_fork[1],
                                c[2] - at_fork[2], c[3] - at_fork[3]]).encode())
        os._exit(0)
    os.close(w)
    child_report = json.loads(os.read(r, 1000))
    _, status = os.waitpid(pid, 0)
    stop.set(); th.join()
    print(json.dumps([child_report, os.waitstatus_to_exitcode(status), counts()[0]]))
    """, timeout=60)
    # The child: 1 closed, 1 collected, 2 made; the parent keeps its 5.
    assert out == [[[True, 0, 2, 1, 1], 0, 5]]


def test_stopped_or_disabled_tracking_counts_nothing(tmp_path):
    out = run_app(tmp_path, """
    from leakprobe import _objects
    leakprobe.stop()
    r = app.Resource(); r.close(); app.Resource()
    try:
        leakprobe.objects()
        raised = False
    except RuntimeError as exc:
        raised = "object tracking is off" in str(exc)
    leakprobe.start(port=0)
    kept = app.make(2)
    print(json.dumps([raised, counts()]))
    """)
    assert out == [[True, [2, 2, 0, 0, 0, 0]]]
    out = run_app(tmp_path, """
    from leakprobe import _native
    kept = app.make(3)
    print(json.dumps([leakprobe.status()["features"], _native.objects_active(),
                      "leakprobe_objects_live" in _native.collect_text()]))
    """, LEAKPROBE_OBJECTS="0")
    assert out == [[["process", "gc", "heap", "fds", "trends", "exporter"], False, False]]
    out = run_app(tmp_path, """
    from leakprobe import _native
    kept = app.make(3)
    kept[0].close()
    t = [t for t in _native.object_summary()["types"] if t["name"] == "app.Resource"][0]
    print(json.dumps([leakprobe.status()["running"], t["created"], t["closed"], kept[0].closed]))
    """, LEAKPROBE_DISABLE="1")
    assert out == [[False, 0, 0, True]]


def test_record_cap_counts_the_drop(tmp_path):
    out = run_app(tmp_path, """
    kept = app.make(8)
    for r in kept:
        r.close()                               # the 3 untracked closes are not seen
    more = app.make(2)                          # room again
    print(json.dumps(counts()))
    """, LEAKPROBE_OBJECT_RECORDS="5")
    assert out == [[2, 10, 5, 0, 3, 0]]


def test_objects_alive_and_created_at_exit_do_not_harm_exit(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    proc = run_python(f"""
        import sys, threading; sys.path.insert(0, {str(tmp_path)!r})
        import app, leakprobe

        class Late:
            def __del__(self):                  # runs during finalization
                app.make(3)

        keep = app.make(1000)
        cyclic = [app.Resource() for _ in range(100)]
        for r in cyclic:
            r.me = r
        late = Late()
        def churn():
            while True:
                app.Resource()
        threading.Thread(target=churn, daemon=True).start()
        print("exiting", flush=True)
        """, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "exiting\n"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_metrics_show_the_families_and_pass_promtool(server_factory, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    server = server_factory(f"""
        sys.path.insert(0, {str(tmp_path)!r})
        import app, gc
        kept = app.make(3)
        kept[0].close()
        for _ in range(2):
            app.Resource()
        gc.collect()
        """)
    families = scrape(server.url)
    labels = {"type": "app.Resource"}
    assert value(families, "leakprobe_objects_live", **labels) == 2
    assert value(families, "leakprobe_objects_created_total", **labels) == 5
    assert value(families, "leakprobe_objects_closed_total", **labels) == 1
    assert value(families, "leakprobe_objects_collected_while_open_total", **labels) == 2
    assert value(families, "leakprobe_objects_dropped_total", **labels) == 0
    assert value(families, "leakprobe_object_tracking_errors_total", **labels) == 0
    assert value(families, "leakprobe_objects_oldest_age_seconds", **labels) > 0
    site = f"{tmp_path / 'app.py'}:{MAKE_LINE} in make"
    assert value(families, "leakprobe_objects_site_live", type="app.Resource", site=site) == 2
    assert value(families, "leakprobe_object_records") == 2
    assert value(families, "leakprobe_object_records_limit") == 100000
    assert value(families, "leakprobe_object_type_overflows_total") == 0
    assert value(families, "leakprobe_object_registry_memory_bytes") > 0
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required; scripts/setup.sh installs it"
    result = subprocess.run([promtool, "check", "metrics"], input=families["__text__"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_type_cap_bounds_the_type_label(tmp_path):
    out = run_app(tmp_path, """
    from leakprobe import _objects, _native
    class C:
        pass
    keep = []
    for i in range(140):
        t = _objects.register_type(f"t{i}")
        c = C(); keep.append(c); t.created(c)
    import re
    text = re.sub(r',pid="\\d+",role="[^"]*"\\}', "}", _native.collect_text())
    text = re.sub(r'\\{pid="\\d+",role="[^"]*"\\}', "", text)
    types = {line.split('"')[1] for line in text.splitlines()
             if line.startswith("leakprobe_objects_live{")}
    overflow = [line for line in text.splitlines()
                if line.startswith('leakprobe_objects_live{type="[type table full]"}')]
    print(json.dumps([len(types), overflow, [l for l in text.splitlines()
                      if l.startswith("leakprobe_object_type_overflows_total")]]))
    """)
    # 128 types: the overflow type and 127 named ones (app.Resource is one).
    assert out[0][0] == 128
    assert out[0][1] == ['leakprobe_objects_live{type="[type table full]"} 14']
    assert out[0][2] == ["leakprobe_object_type_overflows_total 14"]


def test_live_objects_and_fds_owned_by_a_tracked_object(tmp_path):
    out = run_app(tmp_path, """
    import socket
    from leakprobe import _objects, _owners

    first, second, third = app.make(3)
    second.close()
    live = _objects.live_objects("app.Resource", 10)
    limited = _objects.live_objects("app.Resource", 1)
    with _owners.owning(_objects.fd_owner(third)):
        sock = socket.socket()
    free = socket.socket()
    records = {r.fd: r for r in leakprobe.open_fds()}
    owner = records[sock.fileno()].owner
    print(json.dumps([[r.tag for r in live], [r.tag for r in limited],
                      _objects.live_objects("no.such.Type", 10),
                      _objects.tracked_type_names(),
                      _objects.fd_owner(second), _objects.fd_owner(object()),
                      [owner.type, owner.site.lineno, owner.site.function],
                      records[free.fileno()].owner]))
    """)
    assert out == [[[0, 2], [0], [], ["app.Resource"], 0, 0,
                    ["app.Resource", MAKE_LINE, "make"], None]]
