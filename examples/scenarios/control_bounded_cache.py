"""Control: a bounded cache filling up, then staying full (honest growth).

A module-level dict memoises 16 KiB answers per key and evicts the oldest
entry past ``MAX_ENTRIES``: it grows for the first ``MAX_ENTRIES / rate``
seconds (6 s at the default rate, past a short warm-up), then keeps its
size while entries come and go. Its length and the memory held at the
caching line grow, then flatten at the bound: nothing may be flagged.

The heap at the caching line is an estimate from about 15 samples (the
default sampling, one per 128 KiB); its count wanders as entries are
replaced, with the time of one turnover of the cache. At 10 entries a
second (a 12 s fill and turnover, most of the 20 s judged) a run whose
fill started late under the test suite's parallel load ended on such an
upward wander and was flagged (2 runs in 9 here, once in CI); at 20 a
second, 0 in 12.
"""

from __future__ import annotations

from _common import options, ticks

MAX_ENTRIES = 120
_ANSWERS: dict[str, str] = {}


def answer(key: str) -> str:
    cached = _ANSWERS.get(key)
    if cached is None:
        cached = _ANSWERS[key] = f"{key}:" + "y" * 16384
        if len(_ANSWERS) > MAX_ENTRIES:
            del _ANSWERS[next(iter(_ANSWERS))]  # oldest first out
    return cached


def main() -> None:
    args = options(__doc__, rate=20.0, fixed=False)
    for i in ticks(args.seconds, args.rate):
        answer(f"question-{i}")


if __name__ == "__main__":
    main()
