"""httpx.AsyncClient never closed: one client per task (seed review, issue 1,
in async code such as a FastAPI handler).

Each task opens an ``httpx.AsyncClient``, awaits one request and drops the
client without ``aclose()``: its keep-alive socket is closed by a finalizer,
not by the application, so every client counts as collected while open,
attributed to the line that created it. The fixed twin uses
``async with``, which closes it.
"""

from __future__ import annotations

import asyncio

import httpx
from _common import Upstream, aticks, options


async def summarize(base_url: str, text: str, fixed: bool) -> str:
    client = httpx.AsyncClient(base_url=base_url, timeout=10.0)  # leak-site
    response = await client.post("/v1/summarize", json={"text": text})
    if fixed:
        await client.aclose()  # the fix
    return response.json()["path"]


async def serve(url: str, seconds: float, rate: float, fixed: bool) -> None:
    async for i in aticks(seconds, rate):
        await summarize(url, f"prompt {i}", fixed)


def main() -> None:
    # The collector finds the clients in steps, one per first-generation
    # collection (seconds apart at 4 a second): at 8 a second a verdict
    # window of 20 s sees enough steps that its last third is not judged
    # on one or two of them (a staircase read as a plateau).
    args = options(__doc__, rate=8.0)
    with Upstream() as upstream:
        asyncio.run(serve(upstream.url, args.seconds, args.rate, args.fixed))


if __name__ == "__main__":
    main()
