"""Files opened and never closed: a raw ``os.open`` without ``os.close``.

Each task reads the head of a file through a raw descriptor (as code that
wants ``os.pread`` does) and forgets to close it. Nothing ever closes a raw
descriptor: open file descriptors grow by one per task, attributed to the
``os.open`` line. The fixed twin closes it in a ``finally``.
"""

from __future__ import annotations

import os

from _common import WorkDir, options, ticks


def read_head(path: str, fixed: bool) -> bytes:
    fd = os.open(path, os.O_RDONLY)  # leak-site
    try:
        return os.pread(fd, 64, 0)
    finally:
        if fixed:
            os.close(fd)  # the fix


def main() -> None:
    args = options(__doc__, rate=4.0)
    with WorkDir() as work:
        path = work / "data.txt"
        path.write_text("header line\n" * 100)
        for _ in ticks(args.seconds, args.rate):
            read_head(str(path), args.fixed)


if __name__ == "__main__":
    main()
