"""The fixed twin of ``examples/leaky_service/app.py``: same API, no leak.

It applies the seed review's recommendations to the same code: the client
wrapper gets ``close()`` and context-manager support, and one client serves
the whole process, reused by every request and task and closed at shutdown
(issue 1); the response cache is a bounded LRU that holds only the text,
not the client (issue 2); and each process disposes of its SQLAlchemy
engine and closes its client at its end: a web worker in the app's
lifespan, a Celery child at ``worker_process_shutdown`` (issue 4).
Under the same load, its fd count stays flat and its memory stops growing
once the cache is full; leakprobe must not flag it.

Run exactly like the leaky service, with ``examples/fixed_service`` for
``--app-dir`` and ``--workdir``.
"""

import leakprobe  # noqa: F401, I001 -- first, so the whole worker is profiled

import os
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from celery import signals
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
import service_common as common  # noqa: E402

CACHE_SIZE = int(os.environ.get("SUMMARY_CACHE_SIZE", "256"))


class SummarizerClient:
    """The seed's recommended ``BaseAIClient``: closes its ``httpx.Client``."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=10.0)

    def summarize(self, text: str) -> str:
        response = self._client.post("/v1/summarize", json={"text": text})
        response.raise_for_status()
        return response.json()["summary"]

    def close(self) -> None:
        """Close the pooled connections (and with them their sockets)."""
        self._client.close()

    def __enter__(self) -> "SummarizerClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LRUCache:
    """A bounded prompt -> summary map, least recently used out first.

    Thread-safe, since sync FastAPI endpoints run in a thread pool.
    """

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # protects _items

    def get(self, key: str) -> str | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_SUMMARY_CACHE = LRUCache(maxsize=CACHE_SIZE)
_CLIENT: SummarizerClient | None = None  # the process's client, while it runs


def summarize_cached(text: str) -> str:
    """Summarise ``text`` through the upstream, memoised per text (bounded)."""
    global _CLIENT
    summary = _SUMMARY_CACHE.get(text)
    if summary is None:
        if _CLIENT is None:  # a Celery child: made on its first task, after the fork
            _CLIENT = SummarizerClient(common.UPSTREAM_URL)
        summary = _CLIENT.summarize(text)
        _SUMMARY_CACHE.put(text, summary)
    return summary


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """One client for the web worker (httpx.Client is thread-safe), closed
    at shutdown: its pool's keep-alive connections are reused by every
    request. The engine is disposed of at shutdown too."""
    global _CLIENT
    with SummarizerClient(common.UPSTREAM_URL) as client:
        _CLIENT = client
        try:
            yield
        finally:
            _CLIENT = None
            common.dispose_engine()


app = FastAPI(title="fixed summarizer", lifespan=lifespan)
celery = common.make_celery("fixed_service")


@celery.task(name=common.SUMMARIZE_TASK)
def summarize_document(document_id: int) -> None:
    """The worker's half; what it opens is released at the child's end."""
    common.summarize_document(document_id, summarize_cached)


@signals.worker_process_shutdown.connect
def release(**_kwargs: object) -> None:
    """The seed's recommended shutdown hook (issue 4), in each prefork
    child: dispose of the engine, close the client."""
    global _CLIENT
    common.dispose_engine()
    if _CLIENT is not None:
        _CLIENT.close()
        _CLIENT = None


@app.get("/summarize")
def summarize(q: str) -> dict:
    """Summarise ``q`` through the upstream, memoised per prompt (bounded)."""
    return {"summary": summarize_cached(q), "cached_prompts": len(_SUMMARY_CACHE)}


app.include_router(common.documents_router(celery))
