"""The HTML report (leakprobe.report.html) on a synthetic schema-1 report:
its structure (one chart per leak, the tables' rows, escaping, nothing
fetched from elsewhere), its input checks, matplotlib staying optional, and
a real render in headless Chromium (Debian's `chromium`, installed by
scripts/setup.sh) whose DOM has the charts and whose screenshot shows them."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_python
from leakprobe.report import html as report_html

HOSTILE_SITE = 'app/<script>alert("x")</script>.py:12 in f&g'
HOSTILE_KEY = "cache $x$ <b>&amp;</b> 'q'"
UNDECODABLE = "caf\udcc3\udca9-\udcff.py"  # surrogateescape'd bytes, as os.fsdecode gives
LEAK_RGB = (0xC6, 0x28, 0x28)  # report_html._LEAK_COLOR: a leak's line, borders, figures
FIT_RGB = (0xE6, 0x51, 0x00)  # report_html._FIT_COLOR: only in the charts (the fitted growth)


def _points(values, step=0.5):
    return [[round((i + 1) * step, 3), float(v)] for i, v in enumerate(values)]


def _entry(resource, key, pid, unit, values, *, suspected=False, reason="flat",
           per_second=0.0, confidence=0.3, limit=None, tte=None, site=None, stack=()):
    return {
        "resource": resource, "key": key, "pid": pid, "unit": unit,
        "suspected": suspected, "reason": reason,
        "growth_per_second": per_second, "growth_per_hour": per_second * 3600,
        "confidence": confidence, "p_value": 1 - confidence,
        "time_to_exhaustion_seconds": tte, "limit": limit,
        "window_seconds": 57.0, "points_evaluated": len(values) - 6,
        "last_value": float(values[-1]), "site": site,
        "stack": [{"filename": f, "lineno": n, "function": fn} for f, n, fn in stack],
        "points": _points(values),
    }


def synthetic_report(unflagged: int = 46) -> dict:
    """4 leaks (2 sharing one site) and `unflagged` other series, 120 points
    each at 0.5 s: the shape of a one-minute `leakprobe run --interval 0.5`."""
    rng = random.Random(7)
    n = 120
    client_stack = [("app/clients.py", 41, "make_client"), ("app/handlers.py", 88, "handle"),
                    ("app/main.py", 12, "main")]
    flagged = [
        _entry("fd", "tcp", 1001, "fds", [4 + i // 3 for i in range(n)], suspected=True,
               reason="growing", per_second=0.667, confidence=0.9999, limit=1024.0,
               tte=1465.0, site="app/clients.py:41 in make_client", stack=client_stack),
        _entry("object", "httpx.Client", 1001, "objects", [i // 3 for i in range(n)],
               suspected=True, reason="growing", per_second=0.667, confidence=0.9995,
               site="app/clients.py:41 in make_client", stack=client_stack),
        _entry("heap", HOSTILE_SITE, 1002, "bytes",
               [2e6 + 40_000 * i + rng.uniform(0, 150_000) for i in range(n)], suspected=True,
               reason="growing", per_second=80_000.0, confidence=0.998,
               limit=8 * 2**30, tte=105_000.0, site=HOSTILE_SITE,
               stack=[(UNDECODABLE, 7, "<lambda>"), ("app/jobs.py", 3, "run & go")]),
        _entry("rss", "total", 1002, "bytes",
               [50e6 + 30_000 * i - (i % 10) * 200_000 for i in range(n)], suspected=True,
               reason="growing", per_second=60_000.0, confidence=0.97, limit=8 * 2**30,
               tte=140_000.0),
    ]
    reasons = ["flat", "plateau", "shrinking", "too_small", "warmup"]
    others = []
    for k in range(unflagged):
        reason = reasons[k % len(reasons)]
        if reason == "plateau":
            values = [min(i, 40) for i in range(n)]
        elif reason == "shrinking":
            values = [300 - i for i in range(n)]
        else:
            values = [100 + 10 * math.sin(i / 4) + rng.uniform(-2, 2) for i in range(n)]
        key = HOSTILE_KEY if k == 3 else f"app.models:Thing{k}"
        others.append(_entry("container" if k % 2 else "object", key, 1001 + k % 2,
                             "entries" if k % 2 else "objects", values, reason=reason,
                             per_second=0.001 * k, confidence=0.2))
    # Listed as the CLI lists them: flagged first.
    series = flagged + others
    return {
        "schema": 1, "tool": {"name": "leakprobe", "version": "0.1.0"},
        "command": ["python", "-m", "app", "--name", '<b>"x" & y</b>'],
        "started_at": "2026-11-29T23:00:00+00:00", "ended_at": "2026-11-29T23:01:01+00:00",
        "duration_seconds": 61.2,
        "settings": {"interval": 0.5, "warmup": 3.0, "duration": 60.0, "fail_on_leak": True},
        "exit": {"program_status": 0, "stopped_by": "duration", "leak_found": True, "status": 3},
        "processes": [
            {"pid": 1001, "ppid": 1000, "cmdline": ["python", "-m", "app", UNDECODABLE],
             "role": "main", "started_at": 1.8e9, "updated_at": 1.8e9 + 61, "exited": False},
            {"pid": 1002, "ppid": 1001, "cmdline": ["python", "-c", "work('<&>')"],
             "role": "child", "started_at": 1.8e9 + 1, "updated_at": 1.8e9 + 61, "exited": True},
        ],
        "leaks": [{k: v for k, v in e.items() if k != "points"} for e in flagged],
        "series": series,
    }


class _Dom(HTMLParser):
    """Elements (tag, attributes, the text inside them) of a document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        element = (tag, {k: v or "" for k, v in attrs}, [])
        self.elements.append(element)
        if tag not in ("meta", "br", "use", "path", "rect", "link", "img"):
            self._open.append(element[2])

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        self.text.append(data)
        for texts in self._open:
            texts.append(data)

    def find(self, tag, **attrs):
        """(tag, attributes, text) of the elements whose attributes match the
        patterns (`class_` for class)."""
        return [(t, a, "".join(x)) for t, a, x in self.elements if t == tag
                and all(re.search(v, a.get(k.rstrip("_"), "")) for k, v in attrs.items())]


def _dom(text: str) -> _Dom:
    dom = _Dom()
    dom.feed(text)
    dom.close()
    return dom


def _rows(dom: _Dom, table_id: str) -> list[str]:
    """The text of the body rows of the table with that id."""
    inside, rows = False, []
    for tag, attrs, texts in dom.elements:
        if tag == "table":
            inside = attrs.get("id") == table_id
        elif inside and tag == "tr":
            rows.append("".join(texts))
    return rows[1:]  # the first row is the header


@pytest.fixture(scope="module")
def rendered() -> str:
    return report_html.render(synthetic_report())


def test_one_chart_per_leak_and_a_row_per_series(rendered):
    dom = _dom(rendered)
    charts = dom.find("svg", id_=r"^chart-\d+$")
    assert [a["id"] for _, a, _ in charts] == ["chart-1", "chart-2", "chart-3", "chart-4"]
    assert len(dom.find("figure", class_="chart")) == 4
    # matplotlib's ids were prefixed, so ids stay unique across the charts.
    ids = [a["id"] for _, a, _ in dom.elements if "id" in a]
    assert len(ids) == len(set(ids))
    # Each chart draws the observed series (120 points), the fitted growth
    # (dashed) and the warm-up band, each in the plot and its legend.
    for number in range(1, 5):
        svg = re.search(rf'<svg id="chart-{number}".*?</svg>', rendered, re.S).group()
        observed = re.findall(r' d="([^"]*)"[^>]*stroke: #c62828', svg)
        assert max(path.count("L") for path in observed) >= 100
        assert len(re.findall(r"stroke-dasharray[^\"]*stroke: #e65100", svg)) == 2
        assert len(re.findall(r'style="fill: #9e9e9e; opacity: 0.18"', svg)) == 2
    verdicts = _rows(dom, "verdicts")
    assert len(verdicts) == 4
    assert [row.split("\n")[0][:6] for row in verdicts] == ["fdtcp1", "object", "heapap", "rsstot"]
    assert "+2,401 fds/h" in verdicts[0] and "24.4 min" in verdicts[0]
    assert "+275 MiB/h" in verdicts[2] and "> 99.9 %" in verdicts[0]
    others = _rows(dom, "series")
    assert len(others) == 46
    assert len(dom.find("svg", id_=r"^spark-\d+$")) == 46
    assert not any("growing" in row for row in others)
    assert len(_rows(dom, "processes")) == 2
    # Sites: the two leaks of one site are one block with its stack, innermost first.
    sites = [text for _, _, text in dom.find("div", class_="^site$")]
    assert len(sites) == 2
    assert sites[0].startswith("app/clients.py:41 in make_client")
    assert re.search(r"make_client app/clients.py:41\s*handle app/handlers.py:88", sites[0])
    assert "fd tcp" in sites[0] and "object httpx.Client" in sites[0]


def test_strings_from_the_report_are_escaped(rendered):
    assert "<script" not in rendered  # neither the hostile name nor any script of ours
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in rendered
    dom = _dom(rendered)
    text = "".join(dom.text)
    assert HOSTILE_SITE in text and HOSTILE_KEY in text
    assert '<b>"x" & y</b>' in text  # the command line, shown as text
    assert not [t for _, _, t in dom.find("b") if "x" in t]  # ... and not as markup
    # Undecodable bytes are shown as escapes; the file is valid UTF-8.
    assert "caf\\xc3\\xa9-\\xff.py" in text
    rendered.encode("utf-8")
    # A "$" in a label is not mathtext.
    assert "$x$" in text


def test_nothing_is_fetched_from_elsewhere(rendered):
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"|url\(([^)]*)\)', rendered)
    targets = [a or b for a, b in references]
    assert targets  # the scan sees the charts' internal references
    assert all(t.startswith("#") for t in targets), [t for t in targets if not t.startswith("#")]
    assert not re.search(r"<(?:link|script|img|iframe|object)\b|@import|@font-face", rendered)


def test_size_of_a_fifty_series_report(rendered):
    size = len(rendered.encode("utf-8"))
    print(f"HTML report of 4 leaks + 46 other series (120 points each): {size} bytes")
    assert 50_000 < size < 600_000


def test_write_replaces_the_file_atomically(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    report_html.write(synthetic_report(unflagged=2), target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_report_without_leaks():
    report = synthetic_report(unflagged=5)
    report["series"] = report["series"][4:]
    report["leaks"] = []
    dom = _dom(report_html.render(report))
    assert [t for _, _, t in dom.find("p", id_="^summary$")] == ["No leak found"]
    assert not dom.find("svg", id_="^chart-")
    assert len(_rows(dom, "series")) == 5


def test_a_leak_without_points_and_sparklines_past_the_cap(monkeypatch):
    report = synthetic_report(unflagged=8)
    del report["series"][1]  # object httpx.Client: in `leaks` only
    monkeypatch.setattr(report_html, "_MAX_SPARKLINES", 5)
    dom = _dom(report_html.render(report))
    assert len(_rows(dom, "verdicts")) == 4
    assert [a["id"] for _, a, _ in dom.find("svg", id_="^chart-")] == [
        "chart-1", "chart-3", "chart-4"]
    assert [t for _, _, t in dom.find("p", id_="^chart-2$")] == [
        "No points recorded for this series."]
    assert len(_rows(dom, "series")) == 8
    assert len(dom.find("svg", id_="^spark-")) == 5


def test_long_series_are_drawn_from_minima_and_maxima():
    report = synthetic_report(unflagged=0)
    values = [i % 50 + i / 100 for i in range(20_000)]
    report["series"][0]["points"] = _points(values, step=1.0)
    chart = re.search(r'<svg id="chart-1".*?</svg>', report_html.render(report), re.S).group()
    # (matplotlib then simplifies the path further where segments overlap on screen)
    drawn = max(len(re.findall(r"\bL ", path)) for path in re.findall(r' d="([^"]*)"', chart))
    assert 300 <= drawn < report_html._MAX_CHART_POINTS
    assert report_html._decimate([(float(i), float(i % 50)) for i in range(20_000)], 100)[:4] == [
        (0.0, 0.0), (49.0, 49.0), (400.0, 0.0), (449.0, 49.0)]


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(schema=2), r"report\['schema'\]: this leakprobe renders schema 1, got 2"),
    (lambda r: r.update(series={}), r"report\['series'\]: expected a list, got dict"),
    (lambda r: r["series"][5].pop("unit"), r"report\['series'\]\[5\]\['unit'\]: expected str"),
    (lambda r: r["series"][1]["points"].__setitem__(3, [1.0]),
     r"report\['series'\]\[1\]\['points'\]\[3\]: expected \[t_seconds, value\], got \[1.0\]"),
])
def test_bad_input_is_named(change, message):
    report = synthetic_report(unflagged=3)
    change(report)
    with pytest.raises(ValueError, match=message):
        report_html.render(report)


def test_without_matplotlib_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(report_html.MissingDependencyError,
                       match=re.escape("pip install 'leakprobe[report]'")):
        report_html.write(synthetic_report(unflagged=1), tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    assert issubclass(report_html.MissingDependencyError, ImportError)


def test_the_profiled_process_never_loads_matplotlib():
    done = run_python("""
        import sys
        import leakprobe, leakprobe.report.html
        assert leakprobe.status()["running"], leakprobe.status()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "numpy", "PIL")))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- headless Chromium -------------------------------------------------------

def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is required (scripts/setup.sh installs it)"
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--disable-background-networking",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def in_chromium(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chromium")
    page = directory / "report.html"
    report_html.write(synthetic_report(), page)
    dom = _chromium("--dump-dom", page.as_uri(), profile=directory / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = directory / "report.png"
    screenshot = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri(),
                           profile=directory / "profile-shot")
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    return dom.stdout, shot


def test_chromium_renders_the_charts(in_chromium):
    text, _ = in_chromium
    dom = _dom(text)
    charts = dom.find("svg", id_=r"^chart-\d+$")
    assert [a["id"] for _, a, _ in charts] == ["chart-1", "chart-2", "chart-3", "chart-4"]
    for number in range(1, 5):
        paths = [a for _, a, _ in dom.find("path") if a.get("d", "").count("L") >= 100
                 and a.get("clip-path", "").startswith(f"url(#chart-{number}-")]
        assert paths, f"chart-{number} has no drawn series"
    assert len(dom.find("svg", id_=r"^spark-\d+$")) == 46
    assert not dom.find("script")  # the hostile site name stayed text in the browser too
    assert HOSTILE_SITE in "".join(dom.text)


def test_chromium_screenshot_shows_the_charts(in_chromium):
    import numpy  # both installed with matplotlib
    from PIL import Image

    _, shot = in_chromium
    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        pixels = numpy.asarray(image.convert("RGB"), dtype=numpy.int16)
    not_white = int((pixels.min(axis=2) < 240).sum())
    leak_red = int((numpy.abs(pixels - numpy.array(LEAK_RGB)).max(axis=2) < 40).sum())
    fit_orange = int((numpy.abs(pixels - numpy.array(FIT_RGB)).max(axis=2) < 40).sum())
    print(f"screenshot: {not_white} non-white pixels, {leak_red} leak-red pixels, "
          f"{fit_orange} fitted-growth orange pixels")
    assert not_white > 0.03 * 1280 * 2400
    assert leak_red > 2000  # the leaks' lines, borders and growth figures
    assert fit_orange > 1500  # the 4 charts' dashed fitted lines (about 1,000 px each)
