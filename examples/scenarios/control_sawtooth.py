"""Control: an allocation sawtooth (honest, no growth).

A batch job builds a large list of small records (about 10 MiB over 2
seconds), then drops it and starts again: the heap and the resident size
rise and fall every cycle, around a constant level. Nothing may be flagged.
"""

from __future__ import annotations

from _common import options, ticks

TICKS_PER_CYCLE = 20
RECORDS_PER_TICK = 2500


def main() -> None:
    args = options(__doc__, rate=10.0, fixed=False)
    batch: list[tuple[int, str]] = []
    cycle = 0
    for i in ticks(args.seconds, args.rate):
        if i // TICKS_PER_CYCLE != cycle:  # (ticks may skip on a loaded machine)
            cycle = i // TICKS_PER_CYCLE
            batch = []  # the cycle's end: everything built so far is freed
        batch.extend((i, f"record-{i}-{n:06d}" + "z" * 64) for n in range(RECORDS_PER_TICK))


if __name__ == "__main__":
    main()
