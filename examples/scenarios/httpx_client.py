"""httpx.Client never closed: one client per task (seed review, issue 1).

Like the seed's AI client wrappers, each task builds a wrapper that opens
its own ``httpx.Client``, makes one request and is dropped without
``close()``. CPython frees the dropped client at once (reference counting),
and its pooled keep-alive socket is closed by the socket's finalizer, not
by the application: every client is *collected while open*, so the leak
shows as the steadily growing count of ``httpx.Client`` collected while
open, attributed to the line that created them. The fixed twin closes each
client (``with``), and counts none.
"""

from __future__ import annotations

import httpx
from _common import Upstream, options, ticks


class SummaryClient:
    """The seed's ``OpenAIClient`` shape: owns an httpx client."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10.0)  # leak-site

    def summarize(self, text: str) -> str:
        return self.http.post("/v1/summarize", json={"text": text}).json()["path"]


def main() -> None:
    # The collector finds the clients in steps, one per first-generation
    # collection (seconds apart at 4 a second): at 8 a second a verdict
    # window of 20 s sees enough steps that its last third is not judged
    # on one or two of them (a staircase read as a plateau).
    args = options(__doc__, rate=8.0)
    with Upstream() as upstream:
        for i in ticks(args.seconds, args.rate):
            client = SummaryClient(upstream.url)
            client.summarize(f"prompt {i}")
            if args.fixed:
                client.http.close()  # the fix


if __name__ == "__main__":
    main()
