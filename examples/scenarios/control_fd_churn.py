"""Control: steady descriptor churn (honest, no growth).

Every task opens a file, a pipe and an HTTP connection to the local
upstream, uses them and closes them all: descriptors are created and
closed at a steady rate, and the number open at any moment stays within a
few. Nothing may be flagged.
"""

from __future__ import annotations

import os
import urllib.request

from _common import Upstream, WorkDir, options, ticks


def churn(path: str, url: str) -> None:
    with open(path, "rb") as handle:
        handle.read(64)
    read_end, write_end = os.pipe()
    os.write(write_end, b"ping")
    os.read(read_end, 4)
    os.close(read_end)
    os.close(write_end)
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()


def main() -> None:
    args = options(__doc__, rate=10.0, fixed=False)
    with WorkDir() as work, Upstream() as upstream:
        path = work / "data.bin"
        path.write_bytes(os.urandom(4096))
        for i in ticks(args.seconds, args.rate):
            churn(str(path), f"{upstream.url}/item/{i}")


if __name__ == "__main__":
    main()
