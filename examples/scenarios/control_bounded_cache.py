"""Control: a bounded cache filling up, then staying full (honest growth).

A module-level dict memoises 16 KiB answers per key and evicts the oldest
entry past ``MAX_ENTRIES``: it grows for the first ``MAX_ENTRIES / rate``
seconds (6 s at the default rate, past a short warm-up), then keeps its
size while entries come and go. Its length and the memory held at the
caching line grow, then flatten at the bound: nothing may be flagged.

The heap at the caching line is an estimate from about 15 samples (the
default sampling, one per 128 KiB); it wanders as entries are replaced,
by +-2.3 MB over 10 s. Such a wander riding up over the last half of the
window was flagged twice in CI, until the trend engine asked a sampled
estimate to rise by more than its sampling noise (docs/trends.md, step 9):
of 1,000 simulated runs of this control, 6 were flagged before, 0 after.
At 10 entries a second the fill ends mid-window and 11 in 1,000 are still
flagged as it flattens (131 without the rule): hence 20.
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
