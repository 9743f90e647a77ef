"""Docs move with code: every option the code reads is in
docs/configuration.md, and the documented table matches the code's table;
every public name is in the README or docs, every fd record field in
docs/fds.md."""

from __future__ import annotations

import re

import leakprobe
from conftest import ROOT
from leakprobe import _config


def _documented_variables() -> dict[str, str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(LEAKPROBE_[A-Z_]+)` \| ([^|]*) \| `([^`]*)` \|", text, re.M)
    return {variable: default for variable, _, default in rows}


def test_every_option_is_documented_with_its_default():
    documented = _documented_variables()
    for option in _config.OPTIONS:
        assert option.variable in documented, option.variable
        default = option.default
        shown = {True: "1", False: "0"}.get(default, str(default)) if isinstance(default, bool) else str(default)
        assert documented[option.variable] == shown, option.variable
    assert set(documented) == {o.variable for o in _config.OPTIONS}


def test_every_variable_the_code_mentions_is_an_option():
    # Code that runs in the host process (not the native tests' own build macros).
    sources = list((ROOT / "python").rglob("*.py"))
    for folder in ("native/src", "native/bindings", "exporters/prometheus/src"):
        sources += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".c", ".cpp", ".h")]
    mentioned = set()
    for path in sources:
        mentioned |= set(re.findall(r"LEAKPROBE_[A-Z][A-Z_]*", path.read_text()))
    mentioned -= {"LEAKPROBE_VERSION"}  # the C++ build macro, not an option
    known = {o.variable for o in _config.OPTIONS}
    assert mentioned - known == set(), "read but not an option"
    assert mentioned  # the scan found the code


def test_every_public_name_is_documented():
    text = (ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in (ROOT / "docs").glob("*.md"))
    missing = [name for name in leakprobe.__all__
               if name != "__version__" and not re.search(rf"\b{name}\b", text)]
    assert missing == []


def test_every_fd_record_field_is_in_the_fds_page():
    documented = set(re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|",
                                (ROOT / "docs" / "fds.md").read_text(), re.M))
    names = {name for row in documented for name in row if name}
    fields = set(leakprobe.FdRecord._fields) | {"site_name"}
    assert fields - names == set(), "FdRecord fields missing from docs/fds.md"
    assert names - fields == set(), "docs/fds.md documents fields FdRecord lacks"
