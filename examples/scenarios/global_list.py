"""A module-level list that only grows: an audit history nobody trims.

Each task appends a record of about 32 KiB to ``_HISTORY`` "for debugging",
and nothing ever removes one: the list's length and the memory allocated at
the appending line grow without end. The fixed twin keeps the last
``KEEP`` records only.

The records are large for a compressed run: at 20 a second they are about
5 heap samples a second (128 KiB mean), some 100 in the 20-second window.
With 16 KiB records (half that) the run's verdict rested on about 50 samples,
and one run in a few hundred drew few enough in its last third to look like
a plateau (docs/trends.md, the rates table).
"""

from __future__ import annotations

from _common import options, ticks

KEEP = 20  # the fix's bound
RECORD_BYTES = 32 * 1024
_HISTORY: list[dict[str, object]] = []


def handle(i: int, fixed: bool) -> None:
    _HISTORY.append({"task": i, "payload": "x" * RECORD_BYTES + str(i)})  # leak-site
    if fixed:
        del _HISTORY[:-KEEP]  # the fix


def main() -> None:
    args = options(__doc__, rate=20.0)
    for i in ticks(args.seconds, args.rate):
        handle(i, args.fixed)


if __name__ == "__main__":
    main()
