"""leakprobe.report.html — the HTML report of `leakprobe run --html PATH`:
one self-contained file (inline CSS, charts as inline SVG drawn by
matplotlib; no script, font, stylesheet or image from anywhere else) that
opens offline. It shows the run (command, duration, exit, processes), the
verdict table (leaks first), a chart per leak, the sites where the leaks
were made with their stacks, and a compact table of the other series.

    from leakprobe.report import html
    html.write(report, "leakprobe.html")   # report: the JSON report's dict
    text = html.render(report)             # the same document as a str

matplotlib is an optional dependency (`pip install 'leakprobe[report]'`):
it is imported on the first render, never by ``import leakprobe``; without
it, render() and write() raise MissingDependencyError (an ImportError).
Thread-safety: render() sets matplotlib's rcParams for the time of each
chart (matplotlib.rc_context); do not draw other matplotlib figures in other
threads meanwhile.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from .._files import write_atomically

__all__ = ["INSTALL_HINT", "MissingDependencyError", "render", "write"]

INSTALL_HINT = "pip install 'leakprobe[report]'"
SCHEMA = 1

# Series longer than this are drawn from per-bucket minima and maxima (the
# shape is kept; a chart 860 px wide cannot show more anyway).
_MAX_CHART_POINTS = 1200
_MAX_SPARK_POINTS = 80
_MAX_SITES = 20
# Rows of the other series' table with a small chart (about 2.4 kB each);
# the rows past it have none, so that a report of thousands of series stays
# a few MB.
_MAX_SPARKLINES = 200

_LEAK_COLOR = "#c62828"
_SERIES_COLOR = "#1f4e9c"
_FIT_COLOR = "#e65100"
_WARMUP_COLOR = "#9e9e9e"


class MissingDependencyError(ImportError):
    """The HTML report needs matplotlib, which leakprobe does not require."""


def write(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Renders `report` (the JSON report's dict, schema 1) and writes it to
    `path` as UTF-8, replacing the file atomically (a temporary file beside
    it, then a rename)."""
    write_atomically(path, render(report))


def render(report: Mapping[str, Any]) -> str:
    """The HTML document for `report` (the JSON report's dict, schema 1).
    Raises ValueError naming the field when `report` is not a schema-1
    report, MissingDependencyError when matplotlib is not installed."""
    _check_report(report)
    plotting = _Plotting()
    series = list(report.get("series") or [])
    flagged, others = _split(report.get("leaks") or [], series)
    settings = report.get("settings") or {}
    warmup = settings.get("warmup") if isinstance(settings, Mapping) else None

    parts = [_head(report, flagged), "<body>", _header(report, flagged)]
    parts.append(_verdict_section(flagged))
    parts.append(_charts_section(flagged, warmup, plotting))
    parts.append(_sites_section(flagged))
    parts.append(_others_section(others, plotting))
    tool = report.get("tool") or {}
    parts.append(f'<footer>Made by {_h(tool.get("name", "leakprobe"))} '
                 f'{_h(tool.get("version", ""))} from a schema-{SCHEMA} JSON report '
                 '(docs/report-schema.md).</footer>')
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


# --- input -----------------------------------------------------------------

_ENTRY_FIELDS = {"resource": str, "key": str, "pid": int, "unit": str, "suspected": bool}


def _check_report(report: Any) -> None:
    if not isinstance(report, Mapping):
        raise ValueError(f"report: expected the JSON report's object (a dict), "
                         f"got {type(report).__name__}")
    if report.get("schema") != SCHEMA:
        raise ValueError(f"report['schema']: this leakprobe renders schema {SCHEMA}, "
                         f"got {report.get('schema')!r}")
    for name in ("leaks", "series", "processes"):
        value = report.get(name, [])
        if not isinstance(value, list):
            raise ValueError(f"report[{name!r}]: expected a list, got {type(value).__name__}")
    for name in ("leaks", "series"):
        for index, entry in enumerate(report.get(name) or []):
            where = f"report[{name!r}][{index}]"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected a series entry (an object), "
                                 f"got {type(entry).__name__}")
            for field, kind in _ENTRY_FIELDS.items():
                if not isinstance(entry.get(field), kind):
                    raise ValueError(f"{where}[{field!r}]: expected {kind.__name__}, "
                                     f"got {entry.get(field)!r}")
            for number, point in enumerate(entry.get("points") or []):
                if (not isinstance(point, Sequence) or isinstance(point, str) or len(point) != 2
                        or not all(_is_number(x) for x in point)):
                    raise ValueError(f"{where}['points'][{number}]: expected [t_seconds, value], "
                                     f"got {point!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _identity(entry: Mapping[str, Any]) -> tuple[str, str, int]:
    return entry["resource"], entry["key"], entry["pid"]


def _split(leaks: list, series: list) -> tuple[list[dict], list[dict]]:
    """The flagged entries (the report's `leaks`, with the points of their
    series, then any suspected series missing from `leaks`) and the others."""
    by_identity = {_identity(s): s for s in series}
    flagged: list[dict] = []
    seen: set[tuple[str, str, int]] = set()
    for leak in leaks:
        identity = _identity(leak)
        if identity in seen:
            continue
        seen.add(identity)
        merged = dict(by_identity.get(identity, {}))
        merged.update({k: v for k, v in leak.items() if k != "points"})
        flagged.append(merged)
    for entry in series:
        if entry["suspected"] and _identity(entry) not in seen:
            seen.add(_identity(entry))
            flagged.append(dict(entry))
    others = [dict(s) for s in series if _identity(s) not in seen]
    return flagged, others


# --- text ------------------------------------------------------------------

_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _printable(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _text(value: Any) -> str:
    """`value` as text that encodes as UTF-8: undecodable bytes (lone
    surrogates) and control characters are shown as backslash escapes."""
    return _UNPRINTABLE.sub(_printable, str(value))


def _h(value: Any) -> str:
    """`value` as escaped HTML text (also safe in a quoted attribute)."""
    return html.escape(_text(value), quote=True)


# --- numbers ---------------------------------------------------------------

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100 or value == int(value):
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _byte_scale(magnitude: float) -> tuple[float, str]:
    exponent = 0
    while exponent + 1 < len(_BINARY) and magnitude >= 1024 ** (exponent + 1):
        exponent += 1
    return 1024.0 ** exponent, _BINARY[exponent]


def _quantity(value: Any, unit: str, signed: bool = False) -> str:
    if not _is_number(value):
        return "—"
    if not math.isfinite(value):
        return "∞" if value > 0 else "−∞" if value < 0 else "—"
    if unit == "bytes":
        scale, unit = _byte_scale(abs(value))
        value = value / scale
    sign = "−" if value < 0 else "+" if signed and value > 0 else ""
    return f"{sign}{_number(abs(value))} {_text(unit)}"


def _duration(seconds: Any) -> str:
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        return "—"
    for limit, size, name in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if seconds < limit:
            return f"{_number(seconds / size)} {name}"
    return f"{_number(seconds / 86400)} days"


def _confidence(value: Any) -> str:
    if not _is_number(value) or not math.isfinite(value):
        return "—"
    if value >= 0.999:
        return "&gt; 99.9 %"
    return f"{value * 100:.1f} %"


def _growth_per_hour(entry: Mapping[str, Any]) -> str:
    return _h(_quantity(entry.get("growth_per_hour"), entry["unit"], signed=True)) + "/h"


# --- document --------------------------------------------------------------

_CSS = """
:root { --leak: #c62828; --ok: #2e7d32; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, "DejaVu Sans", sans-serif; color: #202124; margin: 0 auto;
       max-width: 1240px; padding: 16px 24px 40px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0 0 4px; }
code, .mono { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12.5px; }
.banner { font-size: 17px; font-weight: 600; padding: 8px 12px; border-radius: 6px;
          margin: 8px 0 12px; }
.banner.leak { background: #fdecea; color: var(--leak); border-left: 6px solid var(--leak); }
.banner.ok { background: #e8f5e9; color: var(--ok); border-left: 6px solid var(--ok); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 8px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { background: #f1f3f4; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.key, td.site, td.cmd { overflow-wrap: anywhere; }
table.verdicts tr.leak td:first-child { border-left: 4px solid var(--leak); }
table.verdicts td.growth { color: var(--leak); font-weight: 600; }
.reason { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px;
          background: #f1f3f4; color: var(--muted); }
.reason.growing { background: #fdecea; color: var(--leak); font-weight: 600; }
.reason.plateau, .reason.flat, .reason.shrinking, .reason.too_small {
  background: #e8f5e9; color: var(--ok); }
.charts { display: grid; grid-template-columns: 1fr; gap: 14px; }
figure.chart { margin: 0; border: 1px solid var(--line); border-left: 5px solid var(--leak);
               border-radius: 6px; padding: 8px 12px; }
figure.chart figcaption { margin-bottom: 2px; }
figure.chart .facts-line { color: var(--muted); }
figure.chart .facts-line b { color: #202124; }
figure.chart svg { display: block; width: 100%; height: auto; }
.site { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 0 0 10px; }
.site .series { color: var(--muted); margin: 0 0 4px; }
ol.stack { margin: 0; padding-left: 28px; }
ol.stack li { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12.5px; }
ol.stack li .where { color: var(--muted); }
table.series svg { display: block; width: 120px; height: 24px; }
.muted { color: var(--muted); }
footer { margin-top: 28px; color: var(--muted); font-size: 12px; }
"""


def _head(report: Mapping[str, Any], flagged: list[dict]) -> str:
    command = _command_text(report.get("command"))
    count = len(flagged)
    title = f"{count} leak{'s' if count != 1 else ''}" if count else "no leak"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>leakprobe: {_h(title)} — {_h(command)}</title>\n"
            f"<style>{_CSS}</style>\n</head>")


def _command_text(command: Any) -> str:
    if isinstance(command, list):
        return shlex.join(_text(part) for part in command)
    return _text(command) if command is not None else ""


def _header(report: Mapping[str, Any], flagged: list[dict]) -> str:
    exit_ = report.get("exit") or {}
    processes = report.get("processes") or []
    if flagged:
        pids = {entry["pid"] for entry in flagged}
        banner = (f'<p class="banner leak" id="summary">{len(flagged)} leak'
                  f'{"s" if len(flagged) != 1 else ""} found in {len(pids)} process'
                  f'{"es" if len(pids) != 1 else ""}</p>')
    else:
        banner = '<p class="banner ok" id="summary">No leak found</p>'
    settings = report.get("settings") or {}
    shown = " · ".join(f"{_h(name.replace('_', ' '))} {_h(_setting(name, value))}"
                       for name, value in settings.items())
    facts = [
        ("Command", f"<code>{_h(_command_text(report.get('command')))}</code>"),
        ("Started", _h(report.get("started_at", "—"))),
        ("Ended", _h(report.get("ended_at", "—"))),
        ("Duration", _h(_duration(report.get("duration_seconds")))),
        ("Exit", _h(f"program status {exit_.get('program_status', '—')}, stopped by "
                    f"{exit_.get('stopped_by', '—')}; leakprobe run exit status "
                    f"{exit_.get('status', '—')}")),
        ("Settings", shown or "—"),
    ]
    rows = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    process_rows = []
    for process in processes:
        if not isinstance(process, Mapping):
            continue
        state = "exited" if process.get("exited") else "running at the end"
        process_rows.append(
            f'<tr><td class="num">{_h(process.get("pid", "—"))}</td>'
            f'<td>{_h(process.get("role", "—"))}</td>'
            f'<td class="num">{_h(process.get("ppid", "—"))}</td>'
            f'<td class="cmd"><code>{_h(_command_text(process.get("cmdline")))}</code></td>'
            f'<td>{_h(state)}</td><td>{_unreleased_cell(process.get("unreleased"))}</td></tr>')
    table = ('<table id="processes"><thead><tr><th>PID</th><th>Role</th><th>Parent</th>'
             '<th>Command line</th><th>State</th><th>Open at shutdown</th></tr></thead><tbody>'
             + "".join(process_rows) + "</tbody></table>") if process_rows else ""
    table = table or '<p class="muted">none recorded</p>'
    return (f'<header>\n<h1>leakprobe report</h1>\n{banner}\n<dl class="facts">{rows}</dl>\n'
            f"<h3>Processes</h3>\n{table}\n</header>")


def _unreleased_cell(rows: Any) -> str:
    """A process's shutdown report (report-schema.md, ``unreleased``): "—"
    when it made none, "nothing" when it held nothing."""
    if not isinstance(rows, list):
        return "—"
    items = [f"{_h(row.get('count', '?'))} × <code>{_h(row.get('type', '?'))}</code> at "
             f"<code>{_h(row.get('site') or 'unknown site')}</code>"
             for row in rows if isinstance(row, Mapping)]
    return "<br>".join(items) or "nothing"


def _setting(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name in ("interval", "warmup", "duration") and _is_number(value):
        return f"{_number(value)} s"
    return _text(value)


def _anchor(index: int) -> str:
    return f"leak-{index + 1}"


def _verdict_section(flagged: list[dict]) -> str:
    if not flagged:
        return ('<section id="leaks"><h2>Leaks</h2><p class="muted">No series was flagged: '
                'none grew significantly, by enough, without flattening.</p></section>')
    rows = []
    for index, entry in enumerate(flagged):
        site = entry.get("site")
        rows.append(
            f'<tr class="leak"><td><a href="#{_anchor(index)}">{_h(entry["resource"])}</a></td>'
            f'<td class="key mono">{_h(entry["key"])}</td>'
            f'<td class="num">{_h(entry["pid"])}</td>'
            f'<td class="num growth">{_growth_per_hour(entry)}</td>'
            f'<td class="num">{_confidence(entry.get("confidence"))}</td>'
            f'<td class="num">{_h(_duration(entry.get("time_to_exhaustion_seconds")))}</td>'
            f'<td>{_reason(entry)}</td>'
            f'<td class="site mono">{_h(site) if site else _NONE}</td></tr>')
    return ('<section id="leaks"><h2>Leaks</h2>\n<table class="verdicts" id="verdicts"><thead><tr>'
            '<th>Resource</th><th>Key</th><th>PID</th><th>Growth</th><th>Confidence</th>'
            '<th>Time to exhaustion</th><th>Reason</th><th>Site</th></tr></thead><tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></section>")


_NONE = '<span class="muted">—</span>'


def _reason(entry: Mapping[str, Any]) -> str:
    reason = _text(entry.get("reason", "—"))
    css = reason if re.fullmatch(r"[a-z_]+", reason) else ""
    return f'<span class="reason {css}">{_h(reason)}</span>'


def _charts_section(flagged: list[dict], warmup: Any, plotting: _Plotting) -> str:
    if not flagged:
        return ""
    figures = []
    for index, entry in enumerate(flagged):
        unit = entry["unit"]
        limit = entry.get("limit")
        facts = [f'<b>{_growth_per_hour(entry)}</b> growth',
                 f'confidence <b>{_confidence(entry.get("confidence"))}</b>',
                 f'last value <b>{_h(_quantity(entry.get("last_value"), unit))}</b>']
        if _is_number(limit) and math.isfinite(limit):
            facts.append(f'limit <b>{_h(_quantity(limit, unit))}</b>, reached in '
                         f'<b>{_h(_duration(entry.get("time_to_exhaustion_seconds")))}</b>')
        site = entry.get("site")
        if site:
            facts.append(f'at <code>{_h(site)}</code>')
        chart = plotting.chart(entry, warmup, f"chart-{index + 1}")
        figures.append(
            f'<figure class="chart" id="{_anchor(index)}"><figcaption>'
            f'<h3>{_h(entry["resource"])} <span class="mono">{_h(entry["key"])}</span>'
            f' <span class="muted">pid {_h(entry["pid"])}</span></h3>'
            f'<div class="facts-line">{" · ".join(facts)}</div></figcaption>\n{chart}</figure>')
    return ('<section id="charts"><h2>Charts of the leaks</h2>\n<div class="charts">\n'
            + "\n".join(figures) + "\n</div></section>")


def _sites_section(flagged: list[dict]) -> str:
    sites: dict[str, list[dict]] = {}
    for entry in flagged:
        if entry.get("site"):
            sites.setdefault(_text(entry["site"]), []).append(entry)
    if not flagged:
        return ""
    if not sites:
        return ('<section id="sites"><h2>Where they leak</h2><p class="muted">No leak has an '
                'attribution site (RSS, heap totals and thread totals have none).</p></section>')
    ranked = sorted(sites.items(), key=lambda item: (
        -len(item[1]), -max(_finite(e.get("confidence")) for e in item[1])))
    blocks = []
    for site, entries in ranked[:_MAX_SITES]:
        names = ", ".join(
            f'<a href="#{_anchor(flagged.index(e))}">{_h(e["resource"])} '
            f'<span class="mono">{_h(e["key"])}</span></a> (pid {_h(e["pid"])}, '
            f'{_growth_per_hour(e)})' for e in entries)
        stack = next((e["stack"] for e in entries if e.get("stack")), [])
        frames = "".join(
            f'<li>{_h(frame.get("function", "?"))} <span class="where">'
            f'{_h(frame.get("filename", "?"))}:{_h(frame.get("lineno", "?"))}</span></li>'
            for frame in stack if isinstance(frame, Mapping))
        frames = (f'<ol class="stack">{frames}</ol>' if frames
                  else '<p class="muted">no stack recorded for this site</p>')
        blocks.append(f'<div class="site"><h3 class="mono">{_h(site)}</h3>'
                      f'<p class="series">{names}</p>{frames}</div>')
    more = (f'<p class="muted">{len(ranked) - _MAX_SITES} more sites in the verdict table.</p>'
            if len(ranked) > _MAX_SITES else "")
    return ('<section id="sites"><h2>Where they leak</h2><p class="muted">Stacks innermost '
            'frame first.</p>\n' + "\n".join(blocks) + more + "</section>")


def _finite(value: Any) -> float:
    return value if _is_number(value) and math.isfinite(value) else 0.0


def _others_section(others: list[dict], plotting: _Plotting) -> str:
    if not others:
        return ""
    rows = []
    for index, entry in enumerate(others):
        spark = (plotting.sparkline(entry, f"spark-{index + 1}") if index < _MAX_SPARKLINES
                 else _NONE)
        rows.append(
            f'<tr><td>{_h(entry["resource"])}</td><td class="key mono">{_h(entry["key"])}</td>'
            f'<td class="num">{_h(entry["pid"])}</td><td>{_reason(entry)}</td>'
            f'<td class="num">{_growth_per_hour(entry)}</td>'
            f'<td class="num">{_confidence(entry.get("confidence"))}</td>'
            f'<td class="num">{_h(_quantity(entry.get("last_value"), entry["unit"]))}</td>'
            f'<td>{spark}</td></tr>')
    return ('<section id="other-series"><h2>Other series (not flagged)</h2>\n'
            '<table class="series" id="series"><thead><tr><th>Resource</th><th>Key</th>'
            '<th>PID</th><th>Reason</th><th>Growth</th><th>Confidence</th><th>Last value</th>'
            '<th>History</th></tr></thead><tbody>\n' + "\n".join(rows)
            + "\n</tbody></table></section>")


# --- charts ----------------------------------------------------------------

_TAG = re.compile(r"<[^>]+>")
_ID = re.compile(r'\bid="([^"]*)"')
_REFERENCE = re.compile(r'(url\(#|href="#)([^")]*)')


class _Plotting:
    """Draws the charts with matplotlib's object API (matplotlib.figure.Figure:
    no pyplot, so no global backend or figure registry is touched) as SVG
    with text kept as text."""

    def __init__(self) -> None:
        try:
            import matplotlib
            from matplotlib.figure import Figure
        except ImportError as error:
            raise MissingDependencyError(
                f"the HTML report draws its charts with matplotlib, which is not installed: "
                f"{INSTALL_HINT}") from error
        self._matplotlib = matplotlib
        self._figure = Figure

    def _svg(self, figure: Any, chart_id: str, label: str) -> str:
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg",
                       metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        text = buffer.getvalue()
        text = text[text.index("<svg"):]
        text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
        # Several SVGs share one document: prefix their ids (matplotlib names
        # groups figure_1, axes_1, ... in every figure) and the references to them.
        text = _TAG.sub(lambda tag: _REFERENCE.sub(
            lambda m: f"{m.group(1)}{chart_id}-{m.group(2)}",
            _ID.sub(lambda m: f'id="{chart_id}-{m.group(1)}"', tag.group())), text)
        return text.replace("<svg ", f'<svg id="{chart_id}" role="img" aria-label="{_h(label)}" ',
                            1)

    def _rc(self, chart_id: str) -> Any:
        return self._matplotlib.rc_context({
            "svg.fonttype": "none",       # text stays text: smaller, selectable
            "svg.hashsalt": chart_id,     # the same report gives the same file
            "text.parse_math": False,     # a "$" in a label is a dollar sign
            "font.size": 9.5,
            "axes.spines.top": False,
            "axes.spines.right": False,
        })

    def chart(self, entry: Mapping[str, Any], warmup: Any, chart_id: str) -> str:
        points = _finite_points(entry.get("points"))
        if not points:
            return f'<p class="muted" id="{chart_id}">No points recorded for this series.</p>'
        points = _decimate(points, _MAX_CHART_POINTS)
        unit = entry["unit"]
        times = [t for t, _ in points]
        values = [v for _, v in points]
        last_value = entry.get("last_value")
        magnitude = max(abs(v) for v in values + ([last_value] if _is_number(last_value) else []))
        scale, axis_unit = _byte_scale(magnitude) if unit == "bytes" else (1.0, _text(unit))
        time_scale, time_unit = _time_scale(times[-1])
        with self._rc(chart_id):
            figure = self._figure(figsize=(11.5, 2.7), dpi=100, layout="constrained")
            axes = figure.add_subplot()
            if _is_number(warmup) and warmup > 0:
                # Clipped to the data: a warm-up longer than the run does not
                # stretch the time axis.
                axes.axvspan(times[0] / time_scale, min(times[0] + warmup, times[-1]) / time_scale,
                             color=_WARMUP_COLOR, alpha=0.18, lw=0,
                             label=f"warm-up ({_duration(warmup)}, not evaluated)")
            axes.plot([t / time_scale for t in times], [v / scale for v in values],
                      color=_LEAK_COLOR, lw=1.6, marker="o" if len(points) <= 60 else None,
                      markersize=2.5, label="observed")
            fit = _fitted_line(entry, times[-1])
            if fit:
                (t0, v0), (t1, v1) = fit
                axes.plot([t0 / time_scale, t1 / time_scale], [v0 / scale, v1 / scale],
                          color=_FIT_COLOR, lw=1.4, ls="--",
                          label=f"fitted growth "
                                f"{_quantity(entry.get('growth_per_hour'), unit, True)}/h"
                                f" over the evaluated window, through the last value")
            axes.set_xlabel(f"{time_unit} since leakprobe started in pid {entry['pid']}")
            axes.set_ylabel(axis_unit)
            axes.grid(True, color="#e0e0e0", lw=0.6)
            axes.margins(x=0.01)
            # From zero when the series spans most of it (growth from little);
            # zoomed on the data when a large base level would flatten it.
            if 0 <= min(values) <= 0.3 * max(values):
                axes.set_ylim(bottom=0)
            # Above the plot, never over the data.
            axes.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=3, frameon=False,
                        fontsize=8.5, borderaxespad=0.2)
            label = (f"{entry['resource']} {entry['key']} in pid {entry['pid']}: "
                     f"{len(points)} points")
            return self._svg(figure, chart_id, label)

    def sparkline(self, entry: Mapping[str, Any], chart_id: str) -> str:
        points = _decimate(_finite_points(entry.get("points")), _MAX_SPARK_POINTS)
        if len(points) < 2:
            return _NONE
        values = [v for _, v in points]
        low, high = min(values), max(values)
        # A flat series with noise is drawn flat, not as a zoom on the noise.
        pad = max((high - low) * 0.1, abs(high) * 0.05, 1e-9)
        with self._rc(chart_id):
            figure = self._figure(figsize=(1.25, 0.25), dpi=100)
            axes = figure.add_axes((0, 0, 1, 1))
            axes.set_axis_off()
            axes.plot([t for t, _ in points], values, color=_SERIES_COLOR, lw=0.9)
            axes.set_ylim(low - pad, high + pad)
            axes.margins(x=0)
            return self._svg(figure, chart_id, f"history of {entry['resource']} {entry['key']}")


def _finite_points(points: Any) -> list[tuple[float, float]]:
    return sorted((float(t), float(v)) for t, v in points or []
                  if math.isfinite(t) and math.isfinite(v))


def _decimate(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most `limit` points: the minimum and the maximum of each of
    limit/2 equal-count buckets, in time order (keeps peaks and troughs)."""
    if len(points) <= limit:
        return points
    buckets = limit // 2
    kept: list[tuple[float, float]] = []
    for bucket in range(buckets):
        chunk = points[bucket * len(points) // buckets:(bucket + 1) * len(points) // buckets]
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        kept.extend(sorted({low, high}))
    return kept


def _time_scale(span: float) -> tuple[float, str]:
    if span >= 3 * 3600:
        return 3600.0, "hours"
    if span >= 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _fitted_line(entry: Mapping[str, Any], last_t: float) -> tuple | None:
    """The verdict's growth rate as a line over the evaluated window, ending
    at the last evaluated value (the engine reports the slope, not an
    intercept, so the line is anchored where the data ends)."""
    slope = entry.get("growth_per_second")
    window = entry.get("window_seconds")
    last = entry.get("last_value")
    if not all(_is_number(x) and math.isfinite(x) for x in (slope, window, last)) or window <= 0:
        return None
    return (last_t - window, last - slope * window), (last_t, last)
