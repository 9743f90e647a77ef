"""``subprocess.Popen(stdout=PIPE)`` whose pipe is never read to the end,
closed or waited for.

Each task starts a child that writes 200 kB, reads the first 100 bytes and
drops the ``Popen``. The child blocks for ever on the full pipe, so
``Popen.__del__`` finds it running and keeps the object (with its open
pipe) in ``subprocess._active``: live ``subprocess.Popen`` objects and
open pipes grow by one per task, attributed to the ``Popen`` line. The
fixed twin closes the pipe and waits for the child (what ``with Popen``
does).
"""

from __future__ import annotations

import subprocess

from _common import options, ticks

COMMAND = ["head", "-c", "200000", "/dev/zero"]


def first_bytes(fixed: bool) -> bytes:
    proc = subprocess.Popen(COMMAND, stdout=subprocess.PIPE)  # leak-site
    assert proc.stdout is not None
    head = proc.stdout.read(100)
    if fixed:
        proc.stdout.close()  # the fix: the child gets EPIPE and ends
        proc.wait()
    return head


def main() -> None:
    args = options(__doc__, rate=2.0)
    try:
        for _ in ticks(args.seconds, args.rate):
            first_bytes(args.fixed)
    finally:
        for proc in list(subprocess._active or ()):  # type: ignore[attr-defined]
            proc.kill()  # the leaked children: not left behind by the example


if __name__ == "__main__":
    main()
