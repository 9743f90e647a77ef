"""Containers and caches (docs/containers.md): watch() sizes over time,
what is held strongly or weakly, bad input, discovery of unbounded caches
by module:qualname and of growing container attributes of tracked owners
(the seed's unbounded dict cache on an AI client, and its fixed twin), the
object census, and the metrics as Prometheus scrapes them.

In-process tests drive the sampler's tasks directly (sample, discover,
census_once) against the real native store; the end-to-end test runs a
child with leakprobe started and scrapes it."""

from __future__ import annotations

import collections
import functools
import gc
import json
import shutil
import subprocess
import sys
import textwrap
import time
import weakref

import cachetools
import pytest

from conftest import scrape, value
from leakprobe import _containers, _native


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test starts and ends with nothing watched or discovered."""
    saved_source = _containers.owner_source
    _containers.reset()
    for stat in _containers.containers():
        _containers.unwatch(stat.name)
    yield
    _containers.owner_source = saved_source
    _containers.reset()
    for stat in _containers.containers():
        _containers.unwatch(stat.name)
    _native.set_containers([], 0)
    _native.set_census([], 0, 0, 0.0, 0.0)


def rows() -> dict[str, tuple[str, int, int]]:
    """The native store's rows: name -> (kind, size, maxsize or -1)."""
    return {name: (kind, size, maxsize)
            for name, kind, size, maxsize in _native.container_summary()["containers"]}


def stat(name: str) -> _containers.ContainerStat:
    (found,) = [s for s in _containers.containers() if s.name == name]
    return found


def test_watched_sizes_over_time_are_exact_for_every_accepted_kind():
    d: dict = {}
    lst: list = []
    s: set = set()
    dq = collections.deque(maxlen=5)
    od = collections.OrderedDict()
    lru = cachetools.LRUCache(maxsize=3)
    ttl = cachetools.TTLCache(maxsize=10, ttl=600)

    @functools.lru_cache(maxsize=4)
    def square(x: int) -> int:
        return x * x

    @functools.cache
    def cube(x: int) -> int:
        return x ** 3

    handles = [_containers.watch(obj, name) for obj, name in (
        (d, "d"), (lst, "lst"), (s, "s"), (dq, "dq"), (od, "od"), (lru, "lru"),
        (ttl, "ttl"), (square, "square"), (cube, "cube"))]
    assert {h.name: (h.kind, h.held) for h in handles} == {
        "d": ("dict", "strong"), "lst": ("list", "strong"), "s": ("set", "weak"),
        "dq": ("deque", "weak"), "od": ("OrderedDict", "weak"),
        "lru": ("cachetools.LRUCache", "weak"), "ttl": ("cachetools.TTLCache", "weak"),
        "square": ("lru_cache", "weak"), "cube": ("lru_cache", "weak")}
    everything = (d, lst, s, dq, od, lru, ttl)
    for step in range(1, 5):  # three new keys per step
        for i in range(3):
            key = step * 10 + i
            for container in everything:
                if isinstance(container, list):
                    container.append(key)
                elif isinstance(container, (set,)):
                    container.add(key)
                elif isinstance(container, collections.deque):
                    container.append(key)
                else:
                    container[key] = key
            square(key)
            cube(key)
        _containers.sample(_native)
    # The first size is the one at watch() time (0), then one per pass.
    assert stat("d").history == (0, 3, 6, 9, 12)
    assert stat("lst").history == (0, 3, 6, 9, 12)
    assert stat("s").history == (0, 3, 6, 9, 12)
    assert stat("od").history == (0, 3, 6, 9, 12)
    assert stat("cube").history == (0, 3, 6, 9, 12)
    assert stat("dq").history == (0, 3, 5, 5, 5)  # maxlen=5
    assert stat("lru").history == (0, 3, 3, 3, 3)  # maxsize=3
    assert stat("ttl").history == (0, 3, 6, 9, 10)  # maxsize=10
    assert stat("square").history == (0, 3, 4, 4, 4)  # maxsize=4
    assert rows() == {
        "d": ("dict", 12, -1), "lst": ("list", 12, -1), "s": ("set", 12, -1),
        "od": ("OrderedDict", 12, -1), "cube": ("lru_cache", 12, -1),
        "ttl": ("cachetools.TTLCache", 10, 10), "dq": ("deque", 5, 5),
        "square": ("lru_cache", 4, 4), "lru": ("cachetools.LRUCache", 3, 3)}
    assert _native.container_summary()["watched"] == 9
    # Largest first, as the store is filled.
    assert [r[0] for r in _native.container_summary()["containers"]][:5] == \
        ["cube", "d", "lst", "od", "s"]
    for h in handles:
        h.unwatch()
    _containers.sample(_native)
    assert rows() == {}


def test_plain_containers_are_held_until_unwatch_and_weak_ones_are_not():
    class Item:
        pass

    item = Item()
    alive = weakref.ref(item)
    held = [item]
    handle = _containers.watch(held, "held")
    assert handle.held == "strong"
    del held, item
    gc.collect()
    assert alive() is not None  # leakprobe keeps the list, as documented
    _containers.sample(_native)
    assert stat("held").size == 1
    _containers.unwatch("held")
    gc.collect()
    assert alive() is None  # unwatch dropped the only reference

    dq = collections.deque([1, 2])
    assert _containers.watch(dq, "dq").held == "weak"
    _containers.sample(_native)
    assert rows() == {"dq": ("deque", 2, -1)}
    del dq
    gc.collect()
    _containers.sample(_native)  # a collected container leaves the watch
    assert rows() == {}
    assert _containers.containers() == []


def test_watch_is_a_context_manager_and_unwatch_is_idempotent():
    with _containers.watch(cachetools.LRUCache(maxsize=2), "ctx") as handle:
        assert [s.name for s in _containers.containers()] == ["ctx"]
    assert _containers.containers() == []
    handle.unwatch()  # again: nothing happens


def test_bad_input_names_what_is_accepted():
    with pytest.raises(TypeError, match=r"cannot watch a builtins\.tuple; accepted: dict, list, "
                                        r"set, collections\.deque"):
        _containers.watch((1, 2), "t")
    with pytest.raises(TypeError, match="functools.lru_cache"):
        _containers.watch(len, "len")  # a function, but not an lru_cache wrapper
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        _containers.watch({}, "")
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        _containers.watch({}, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-printable"):
        _containers.watch({}, "a\nb")
    with pytest.raises(ValueError, match="longer than 127 bytes"):
        _containers.watch({}, "x" * 128)
    _containers.watch({}, "twice")
    with pytest.raises(ValueError, match="'twice' is already watched \\(dict\\); unwatch it "
                                         "first or choose another name"):
        _containers.watch([], "twice")
    with pytest.raises(KeyError, match="'nope' is not watched; watched: \\['twice'\\]"):
        _containers.unwatch("nope")


CACHES_MODULE = """
import functools
import cachetools

@functools.cache
def unbounded(x):
    return x

@functools.lru_cache(maxsize=None)
def also_unbounded(x):
    return x

@functools.lru_cache(maxsize=16)
def bounded(x):  # bounded lru_cache: not discovered
    return x

TABLE = cachetools.LRUCache(maxsize=100)
PLAIN = {}  # a module-level dict: watch() it; not discovered

@cachetools.cached(cachetools.TTLCache(maxsize=10, ttl=600))
def fetch(x):
    return x

from functools import cache as imported_cache_decorator  # not a cache itself
ALIAS = TABLE  # the same cache under a second name: discovered once

class Hostile:  # a lazy proxy outside its context: every look at it raises
    def __getattr__(self, name):
        raise RuntimeError("working outside of application context")

    @property
    def __class__(self):
        raise RuntimeError("working outside of application context")

PROXY = Hostile()

class Repo:
    SHARED = cachetools.LFUCache(maxsize=5)

    @functools.cache
    def lookup(self, x):
        return x

    @staticmethod
    @functools.cache
    def static_lookup(x):
        return x
"""


def test_discovery_names_unbounded_caches_by_module_and_qualname(tmp_path, monkeypatch):
    (tmp_path / "app_caches.py").write_text(CACHES_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import app_caches
    try:
        for x in range(7):
            app_caches.unbounded(x)
            app_caches.fetch(x)
            app_caches.TABLE[x] = x
            app_caches.Repo().lookup(x)  # a new self each time: 7 entries
        app_caches.also_unbounded(1)
        app_caches.Repo.static_lookup(1)
        app_caches.Repo.SHARED["a"] = 1
        _containers.discover(_native)
        found = {name: r for name, r in rows().items() if name.startswith("app_caches:")}
        assert found == {
            "app_caches:unbounded": ("lru_cache", 7, -1),
            "app_caches:also_unbounded": ("lru_cache", 1, -1),
            "app_caches:TABLE": ("cachetools.LRUCache", 7, 100),
            "app_caches:fetch": ("cachetools.TTLCache", 7, 10),
            "app_caches:Repo.lookup": ("lru_cache", 7, -1),
            "app_caches:Repo.static_lookup": ("lru_cache", 1, -1),
            "app_caches:Repo.SHARED": ("cachetools.LFUCache", 1, 5),
        }
        assert {s.origin for s in _containers.containers() if s.name in found} == \
            {"lru_cache", "cachetools"}
        # Already watched under a name of the application's: not discovered again.
        _containers.reset()
        _containers.watch(app_caches.TABLE, "app.table")
        _containers.discover(_native)
        assert "app_caches:TABLE" not in rows() and "app_caches:ALIAS" not in rows()
        assert rows()["app.table"] == ("cachetools.LRUCache", 7, 100)
        # Later passes keep them, measured each sampler pass.
        app_caches.unbounded(100)
        _containers.sample(_native)
        _containers.discover(_native)
        assert stat("app_caches:unbounded").history == (7, 8)
        assert rows()["app_caches:unbounded"] == ("lru_cache", 8, -1)
    finally:
        del sys.modules["app_caches"]


# The seed's pattern (seed/memory-leak-review.md, "Unbounded Cache Growth in
# AI Clients") and its fixed twin, as code.
class FakeHttpClient:
    def post(self, prompt: str) -> str:
        return prompt.upper()


class LeakyAIClient:
    def __init__(self) -> None:
        self._client = FakeHttpClient()
        self._cache: dict[str, str] = {}  # NO SIZE LIMIT

    def generate(self, prompt: str) -> str:
        if prompt not in self._cache:
            self._cache[prompt] = self._client.post(prompt)
        return self._cache[prompt]


class FixedAIClient(LeakyAIClient):
    def __init__(self) -> None:
        super().__init__()
        self._cache = cachetools.LRUCache(maxsize=256)  # the review's fix


def run_passes(clients: dict[str, list], prompts_per_pass: int, passes: int) -> list[dict]:
    """Serves `prompts_per_pass` new prompts on every client, then runs one
    discovery pass; `passes` times. Returns the store's rows after each."""
    _containers.owner_source = lambda: clients
    seen = []
    n = 0
    for _ in range(passes):
        for objects in clients.values():
            for client in objects:
                for i in range(prompts_per_pass):
                    client.generate(f"prompt {n + i}")
        n += prompts_per_pass
        _containers.discover(_native)
        seen.append({k: v for k, v in rows().items() if "AIClient" in k})
    return seen


def test_seed_unbounded_dict_cache_on_a_client_is_discovered_and_named():
    clients = {"app.ai.OpenAIClient": [LeakyAIClient()]}
    seen = run_passes(clients, prompts_per_pass=100, passes=6)
    # Pass 1 is the baseline; grown at passes 2, 3, 4: discovered at pass 4.
    assert seen[:3] == [{}, {}, {}]
    assert seen[3:] == [{"app.ai.OpenAIClient._cache": ("dict", 400, -1)},
                        {"app.ai.OpenAIClient._cache": ("dict", 500, -1)},
                        {"app.ai.OpenAIClient._cache": ("dict", 600, -1)}]
    assert stat("app.ai.OpenAIClient._cache").origin == "attribute"
    assert stat("app.ai.OpenAIClient._cache").held == "weak"
    assert stat("app.ai.OpenAIClient._cache").history == (400, 500, 600)


def test_seed_attribute_total_is_summed_over_live_owners_and_leaves_with_them():
    clients = {"app.ai.OpenAIClient": [LeakyAIClient(), LeakyAIClient(), LeakyAIClient()]}
    seen = run_passes(clients, prompts_per_pass=10, passes=4)
    assert seen[3] == {"app.ai.OpenAIClient._cache": ("dict", 120, -1)}
    clients["app.ai.OpenAIClient"].pop()
    _containers.discover(_native)
    assert rows()["app.ai.OpenAIClient._cache"] == ("dict", 80, -1)
    clients["app.ai.OpenAIClient"].clear()  # every owner gone (closed or collected)
    _containers.discover(_native)
    assert rows() == {}


def test_owner_attribute_of_constant_size_is_not_taken_for_growth_when_owners_multiply():
    # Each owner's dict stays at 2 entries (httpx.Client._event_hooks): the
    # total grows with the number of owners, which the owner counts show
    # already; no attribute is discovered.
    class Owner:
        def __init__(self) -> None:
            self._event_hooks = {"request": [], "response": []}

    owners: list = []
    _containers.owner_source = lambda: {"lib.Client": owners}
    for _ in range(6):
        owners.extend(Owner() for _ in range(50))
        _containers.discover(_native)
    assert {k: v for k, v in rows().items() if k.startswith("lib.Client")} == {}


def test_seed_fixed_twin_bounded_cache_is_never_discovered():
    clients = {"app.ai.OpenAIClient": [FixedAIClient()]}
    seen = run_passes(clients, prompts_per_pass=100, passes=8)
    assert seen == [{}] * 8
    assert len(clients["app.ai.OpenAIClient"][0]._cache) == 256  # bounded, as the fix says


def test_an_attribute_that_stops_growing_before_the_third_pass_is_not_discovered():
    # Honest growth that stops: a cache filling twice, then steady.
    owner = LeakyAIClient()
    _containers.owner_source = lambda: {"app.Warm": [owner]}
    for prompts in (10, 20, 30, 30, 30, 30):
        for i in range(prompts):
            owner.generate(f"p{i}")
        _containers.discover(_native)
    assert rows() == {}


class CensusGrower:
    def __init__(self, n: int) -> None:
        self.n = n


def test_census_finds_the_growing_type_without_collecting():
    _containers.census_once(None, top=10)  # the baseline
    held = [CensusGrower(i) for i in range(30000)]
    collections_seen: list[str] = []

    def on_gc(phase: str, info: dict) -> None:
        collections_seen.append(phase)

    gc.disable()
    gc.callbacks.append(on_gc)
    try:
        top = _containers.census_once(_native, top=10, chunk=5000)
    finally:
        gc.callbacks.remove(on_gc)
        gc.enable()
    assert collections_seen == []  # no collection ran: gc.collect() was never called
    assert top[0] == _containers.CensusStat(f"{__name__}.CensusGrower", 30000, 30000)
    assert len(top) == 10
    summary = _native.container_summary()
    assert summary["census"][0] == (f"{__name__}.CensusGrower", 30000, 30000)
    assert summary["census_runs"] == 2
    assert summary["census_objects"] >= 30000
    assert 0 < summary["census_pause_seconds"] <= summary["census_duration_seconds"]
    assert _containers.census() == top
    del held


CHILD = """
import collections, functools, leakprobe

requests_seen = {}
recent = collections.deque(maxlen=50)
leakprobe.watch(requests_seen, "app.requests_seen")
leakprobe.watch(recent, "app.recent")

@functools.cache
def lookup(key):
    return key * 2

class Order:
    def __init__(self, n):
        self.n = n

orders = []
for line in sys.stdin:
    n = int(line)
    for i in range(n):
        requests_seen[len(requests_seen)] = i
        recent.append(i)
        lookup(len(requests_seen))
        orders.append(Order(i))
    print("done", flush=True)
"""


def size(families: dict, family: str, name: str, kind: str) -> float:
    """One sample of a family labelled name= and kind= (conftest's value()
    takes labels as keywords, and `name` is its own parameter)."""
    return families[family][(family, (("kind", kind), ("name", name)))]


def wait_for(url: str, check, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        families = scrape(url)
        try:
            if check(families):
                return families
        except KeyError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(families["__text__"])
        time.sleep(0.05)


def test_metrics_are_scraped_exact_and_promtool_clean(server_factory):
    server = server_factory(CHILD, LEAKPROBE_SAMPLE_INTERVAL="0.05",
                            LEAKPROBE_CONTAINER_DISCOVER_INTERVAL="0.05",
                            LEAKPROBE_CENSUS="1", LEAKPROBE_CENSUS_INTERVAL="0.2",
                            LEAKPROBE_CENSUS_TOP_TYPES="5")
    # The first census is the baseline of growth: before any Order exists.
    wait_for(server.url, lambda f: value(f, "leakprobe_census_runs_total") >= 1)
    for total in (1000, 3000):
        assert server.ask(str(total - (1000 if total == 3000 else 0))) == "done"

        def ready(families, total=total) -> bool:
            return size(families, "leakprobe_container_size", "__main__:lookup",
                        "lru_cache") == total and \
                size(families, "leakprobe_container_size", "app.requests_seen", "dict") == total
        families = wait_for(server.url, ready)
    assert size(families, "leakprobe_container_size", "app.recent", "deque") == 50
    assert size(families, "leakprobe_container_maxsize", "app.recent", "deque") == 50
    # Unbounded ones have no maxsize series.
    maxsize_names = {dict(labels)["name"] for _, labels in families["leakprobe_container_maxsize"]}
    assert maxsize_names == {"app.recent"}
    assert value(families, "leakprobe_containers_watched") == 3
    families = wait_for(server.url, lambda f: value(
        f, "leakprobe_census_objects_growth", type="__main__.Order") == 3000)
    census_types = {dict(labels)["type"] for _, labels in families["leakprobe_census_objects"]}
    assert len(census_types) == 5 and "__main__.Order" in census_types
    assert value(families, "leakprobe_census_objects", type="__main__.Order") == 3000
    assert next(iter(families["leakprobe_census_objects_growth"])) == \
        ("leakprobe_census_objects_growth", (("type", "__main__.Order"),))  # most grown first
    assert value(families, "leakprobe_census_runs_total") >= 2
    assert value(families, "leakprobe_census_pause_seconds") > 0
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package 'prometheus') is required"
    result = subprocess.run([promtool, "check", "metrics"], input=families["__text__"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    code, stderr = server.close()
    assert code == 0, stderr


def test_census_is_off_by_default_and_its_families_are_empty(server_factory):
    server = server_factory(textwrap.dedent("""
        import leakprobe
        leakprobe.watch({}, "x")
    """), LEAKPROBE_SAMPLE_INTERVAL="0.05")
    families = wait_for(server.url, lambda f: value(f, "leakprobe_containers_watched") == 1)
    assert value(families, "leakprobe_census_runs_total") == 0
    assert families["leakprobe_census_objects"] == {}
    code, stderr = server.close()
    assert code == 0, stderr


def test_a_census_that_pauses_too_long_switches_itself_off(server_factory):
    # 300,000 lists, made before the census starts: listing them alone takes
    # several ms, over the 1 ms allowed.
    server = server_factory(textwrap.dedent("""
        leakprobe.stop()
        held = [[] for _ in range(300_000)]
        leakprobe.start(census=True, census_interval=0.05, census_max_pause=0.001)
        print(json.dumps(leakprobe.status()), flush=True)
    """))
    url = json.loads(server.readline())["url"]
    families = wait_for(url, lambda f: value(f, "leakprobe_census_runs_total") == 1)
    time.sleep(0.5)  # ten more intervals: no further census
    families = scrape(url)
    assert value(families, "leakprobe_census_runs_total") == 1
    assert value(families, "leakprobe_census_pause_seconds") > 0.001
    assert value(families, "leakprobe_census_tracked_objects") > 300_000
    code, stderr = server.close()
    assert code == 0, stderr
    (warning,) = [line for line in stderr.splitlines() if "census" in line]
    assert "more than LEAKPROBE_CENSUS_MAX_PAUSE=0.001 s; census switched off until the next " \
        "start" in warning, warning


FORK_WHILE_SAMPLING = """
import collections, functools, os, sys, threading, time, warnings, leakprobe
warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
watched = [collections.deque([i]) for i in range(200)]
handles = [leakprobe.watch(d, f"d{i}") for i, d in enumerate(watched)]

@functools.cache
def lookup(x):
    return x

stop = threading.Event()
def churn():  # another thread taking the registry's lock all the time
    i = 0
    while not stop.is_set():
        with leakprobe.watch({}, f"churn{i % 3}"):
            lookup(i)
        i += 1
threading.Thread(target=churn, daemon=True).start()
for n in range(30):
    pid = os.fork()
    if pid == 0:
        # The child takes the lock and runs a census and a discovery pass itself.
        with leakprobe.watch([], "child"):
            from leakprobe import _containers, _native
            _containers.discover(_native)
            _containers.census_once(_native, top=5)
            sizes = {s.name: s.size for s in leakprobe.containers()}
        os._exit(0 if sizes.get("d7") == 1 and "__main__:lookup" in sizes else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, (n, status)
    time.sleep(0.01)
stop.set()
print("ok")
"""


def test_forks_while_the_sampler_and_another_thread_use_the_registry_never_hang():
    from conftest import run_python

    result = run_python(FORK_WHILE_SAMPLING, timeout=120, LEAKPROBE_SAMPLE_INTERVAL="0.01",
                        LEAKPROBE_CONTAINER_DISCOVER_INTERVAL="0.05", LEAKPROBE_CENSUS="1",
                        LEAKPROBE_CENSUS_INTERVAL="0.05")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_names_cut_to_the_same_label_are_exported_once_and_stay_valid(tmp_path, monkeypatch):
    long = "C" * 130  # two classes whose names differ past the 127-byte cut
    (tmp_path / "app_long.py").write_text(textwrap.dedent(f"""
        import functools
        class {long}1:
            @functools.cache
            def m(self, x):
                return x
        class {long}2:
            @functools.cache
            def m(self, x):
                return x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import app_long
    try:
        getattr(app_long, long + "1")().m(1)
        for x in range(3):
            getattr(app_long, long + "2")().m(x)
        _containers.discover(_native)
        found = {name: r for name, r in rows().items() if name.startswith("app_long:")}
        # The larger of the two, under the cut name; both still listed in Python.
        assert found == {("app_long:" + long)[:127]: ("lru_cache", 3, -1)}
        assert _native.container_summary()["watched"] == 2
        assert {s.name for s in _containers.containers()} == \
            {f"app_long:{long}1.m", f"app_long:{long}2.m"}
    finally:
        del sys.modules["app_long"]
    huge = cachetools.LRUCache(maxsize=1 << 70)  # beyond the store's int64: shown capped
    _containers.watch(huge, "huge")
    _containers.sample(_native)
    assert rows()["huge"] == ("cachetools.LRUCache", 0, (1 << 63) - 1)
    with pytest.raises(ValueError, match="non-printable"):  # a lone surrogate
        _containers.watch({}, "bad\udcff")
    assert _containers._label("mod\udcff:f") == "mod\\xff:f"
    assert _containers._label("é" * 100) == "é" * 63  # 126 bytes: no half character


GLOBALS_MODULE = """
import collections

# Unbounded, like examples/leaky_service/app.py's: one entry per prompt.
_SUMMARY_CACHE: dict[str, str] = {}
EVENTS = collections.deque()  # no maxlen: grows
RECENT = collections.deque(maxlen=10)  # bounded: never followed
WARM = set()  # fills once, then steady
WATCHED = []  # watched by the application: measured under its own name only

class Registry:
    items = {}
"""


def test_growing_module_and_class_level_containers_are_discovered_by_name(tmp_path,
                                                                          monkeypatch):
    (tmp_path / "app_globals.py").write_text(GLOBALS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import app_globals as g
    try:
        _containers.watch(g.WATCHED, "app.watched")
        seen = []
        for n in range(1, 7):
            for i in range(10):
                g._SUMMARY_CACHE[f"prompt {n}-{i}"] = "summary"
                g.EVENTS.append(i)
                g.RECENT.append(i)
                g.Registry.items[(n, i)] = i
                g.WATCHED.append(i)
                if n <= 2:
                    g.WARM.add((n, i))
            _containers.discover(_native)
            seen.append({k: v for k, v in rows().items() if k.startswith("app_globals:")})
        assert seen[:3] == [{}, {}, {}]
        assert seen[3] == {"app_globals:_SUMMARY_CACHE": ("dict", 40, -1),
                           "app_globals:EVENTS": ("deque", 40, -1),
                           "app_globals:Registry.items": ("dict", 40, -1)}
        assert seen[5]["app_globals:_SUMMARY_CACHE"] == ("dict", 60, -1)
        assert stat("app_globals:_SUMMARY_CACHE").origin == "global"
        assert stat("app_globals:_SUMMARY_CACHE").history == (40, 50, 60)
        assert rows()["app.watched"] == ("list", 0, -1)  # sampled by sample(), not discover()
        # The module gone: its containers leave at the next pass.
        del sys.modules["app_globals"]
        _containers.discover(_native)
        assert [k for k in rows() if k.startswith("app_globals:")] == []
    finally:
        sys.modules.pop("app_globals", None)
