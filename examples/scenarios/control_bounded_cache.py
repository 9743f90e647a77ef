"""Control: a bounded cache filling up, then staying full (honest growth).

A module-level dict memoises 16 KiB answers per key and evicts the oldest
entry past ``MAX_ENTRIES``: it grows for the first ``MAX_ENTRIES / rate``
seconds (12 s at the default rate, past a short warm-up), then keeps its
size while entries come and go. Its length and the memory held at the
caching line grow, then flatten at the bound: nothing may be flagged.
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
    args = options(__doc__, rate=10.0, fixed=False)
    for i in ticks(args.seconds, args.rate):
        answer(f"question-{i}")


if __name__ == "__main__":
    main()
