"""Control: a one-off big allocation at start, then steady work (honest).

The program loads a 64 MiB table of records at start (as a service loads
a model or a lookup table) and keeps it, then serves light requests that
allocate and free. The heap and the resident size jump once, at start, and
stay: nothing may be flagged.
"""

from __future__ import annotations

from _common import options, ticks

TABLE_RECORDS = 64 * 1024  # of about 1 KiB each


def main() -> None:
    args = options(__doc__, rate=10.0, fixed=False)
    table = [f"{n:08d}" + "t" * 1016 for n in range(TABLE_RECORDS)]
    for i in ticks(args.seconds, args.rate):
        scratch = [table[(i * 7 + n) % len(table)][:32] for n in range(2000)]
        del scratch


if __name__ == "__main__":
    main()
