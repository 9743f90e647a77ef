"""A module-level list that only grows: an audit history nobody trims.

Each task appends a record of about 16 KiB to ``_HISTORY`` "for debugging",
and nothing ever removes one: the list's length and the memory allocated at
the appending line grow without end. The fixed twin keeps the last
``KEEP`` records only.
"""

from __future__ import annotations

from _common import options, ticks

KEEP = 20  # the fix's bound
_HISTORY: list[dict[str, object]] = []


def handle(i: int, fixed: bool) -> None:
    _HISTORY.append({"task": i, "payload": "x" * 16384 + str(i)})  # leak-site
    if fixed:
        del _HISTORY[:-KEEP]  # the fix


def main() -> None:
    args = options(__doc__, rate=20.0)
    for i in ticks(args.seconds, args.rate):
        handle(i, args.fixed)


if __name__ == "__main__":
    main()
