r"""A FastAPI service with the seed review's critical leak, for leakprobe to find.

It copies the shape of TheoEngine's ``ai/clients.py`` (seed review, issues
1 and 2): every request builds an AI client wrapper that opens its own
``httpx.Client`` to the upstream provider and has no ``close()``; the answer
is memoised in an unbounded module-level cache whose entries keep a reference
to the wrapper "so that follow-up questions can reuse it". So each request
with a new prompt leaves behind one open keep-alive socket (one fd), an
``httpx`` connection pool with its SSL context, and the cached text, forever.

Run (see ``examples/README.md``)::

    UPSTREAM_URL=http://127.0.0.1:8081 LEAKPROBE_PORT=9464 \
        python -m uvicorn app:app --app-dir examples/leaky_service \
        --host 127.0.0.1 --port 8000

The fixed twin is ``examples/fixed_service/app.py``.
"""

import leakprobe  # noqa: F401, I001 -- first, so the whole worker is profiled

import os
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081")


class SummarizerClient:
    """Like the seed's ``OpenAIClient``: owns an ``httpx.Client``, never closes it.

    The missing ``close()``/``__exit__`` is the bug this example exists for.
    """

    def __init__(self, base_url: str) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=10.0)

    def summarize(self, text: str) -> str:
        response = self._client.post("/v1/summarize", json={"text": text})
        response.raise_for_status()
        return response.json()["summary"]


@dataclass
class CachedSummary:
    """A cached answer, with the client that produced it for follow-ups.

    Holding the client is what turns an unclosed client into a leak that
    garbage collection can never reclaim.
    """

    summary: str
    client: SummarizerClient


# Unbounded, like the seed's ``self._cache: dict[str, str] = {}``: one entry
# per distinct prompt, never evicted.
_SUMMARY_CACHE: dict[str, CachedSummary] = {}

app = FastAPI(title="leaky summarizer")


@app.get("/summarize")
def summarize(q: str) -> dict:
    """Summarise ``q`` through the upstream, memoised per prompt."""
    cached = _SUMMARY_CACHE.get(q)
    if cached is None:
        client = SummarizerClient(UPSTREAM_URL)
        cached = CachedSummary(summary=client.summarize(q), client=client)
        _SUMMARY_CACHE[q] = cached
    return {"summary": cached.summary, "cached_prompts": len(_SUMMARY_CACHE)}


@app.get("/healthz")
def healthz() -> dict:
    """Readiness probe for the demo and the tests; touches no upstream."""
    return {"ok": True}
