r"""A FastAPI service and its Celery worker with the seed review's leaks,
for leakprobe to find.

It copies the shape of TheoEngine's ``ai/clients.py`` (seed review, issues
1 and 2): every summary, in a request or in a task, builds an AI client
wrapper that opens its own ``httpx.Client`` to the upstream provider and has
no ``close()``; the answer is memoised in an unbounded module-level cache
whose entries keep a reference to the wrapper "so that follow-up questions
can reuse it". So each new text leaves behind one open keep-alive socket
(one fd), an ``httpx`` connection pool with its SSL context, and the cached
text, forever: in the web workers (``GET /summarize``) and in the Celery
children (task ``documents.summarize``, sent by ``POST /documents``). And,
as in issue 4, the worker never disposes of its SQLAlchemy engine.

Run (see ``examples/README.md``; the defaults need no server: SQLite and
Celery's filesystem broker, ``examples/service_common.py``)::

    UPSTREAM_URL=http://127.0.0.1:8081 LEAKPROBE_PORT=9464 \
        python -m uvicorn app:app --app-dir examples/leaky_service \
        --host 127.0.0.1 --port 8000
    UPSTREAM_URL=http://127.0.0.1:8081 LEAKPROBE_PORT=9464 \
        python -m celery --workdir examples/leaky_service -A app:celery worker

The fixed twin is ``examples/fixed_service/app.py``.
"""

import leakprobe  # noqa: F401, I001 -- first, so the whole worker is profiled

import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
import service_common as common  # noqa: E402


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


def summarize_cached(text: str) -> str:
    """Summarise ``text`` through the upstream, memoised per text."""
    cached = _SUMMARY_CACHE.get(text)
    if cached is None:
        client = SummarizerClient(common.UPSTREAM_URL)
        cached = CachedSummary(summary=client.summarize(text), client=client)
        _SUMMARY_CACHE[text] = cached
    return cached.summary


app = FastAPI(title="leaky summarizer")
celery = common.make_celery("leaky_service")


@celery.task(name=common.SUMMARIZE_TASK)
def summarize_document(document_id: int) -> None:
    """The worker's half. The engine it uses is never disposed (seed issue
    4): no ``worker_process_shutdown`` hook."""
    common.summarize_document(document_id, summarize_cached)


@app.get("/summarize")
def summarize(q: str) -> dict:
    """Summarise ``q`` through the upstream, memoised per prompt."""
    return {"summary": summarize_cached(q), "cached_prompts": len(_SUMMARY_CACHE)}


app.include_router(common.documents_router(celery))
