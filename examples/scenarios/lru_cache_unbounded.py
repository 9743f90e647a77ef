"""An unbounded ``functools.lru_cache(maxsize=None)`` fed a new key each time.

``render`` memoises a page fragment per key, but the keys never repeat
(they carry a request id), so the cache keeps every fragment it ever made:
its length and the memory allocated where fragments are built grow without
end. The fixed twin gives the cache a bound (``maxsize=32``), which it
reaches within a few seconds and then keeps.

Fragments are large for a compressed run: at 10 a second, 64 KiB each are
about 5 heap samples a second (128 KiB mean), some 100 in the 20-second
window, enough that chance alone does not make the leak look like a
plateau (docs/trends.md, the rates table).
"""

from __future__ import annotations

import functools

from _common import options, ticks

ARGS = options(__doc__, rate=10.0)
FRAGMENT_BYTES = 64 * 1024


@functools.lru_cache(maxsize=32 if ARGS.fixed else None)  # the fix: a bound
def render(key: str) -> str:
    return f"<section id='{key}'>" + "x" * FRAGMENT_BYTES + "</section>"  # leak-site


def main() -> None:
    for i in ticks(ARGS.seconds, ARGS.rate):
        render(f"fragment:{i}")


if __name__ == "__main__":
    main()
