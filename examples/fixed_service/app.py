"""The fixed twin of ``examples/leaky_service/app.py``: same API, no leak.

It applies the seed review's recommendations to the same code: the client
wrapper gets ``close()`` and context-manager support, and one client serves
the whole process, reused by every request and closed at shutdown (issue 1),
and the response cache is a bounded LRU that holds only the text, not the
client (issue 2). Under the same load, its fd count
stays flat and its memory stops growing once the cache is full; leakprobe
must not flag it.

Run exactly like the leaky service, with ``--app-dir examples/fixed_service``.
"""

import leakprobe  # noqa: F401, I001 -- first, so the whole worker is profiled

import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:8081")
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
_CLIENT: SummarizerClient | None = None  # set while the app runs (lifespan)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """One client for the process (httpx.Client is thread-safe), closed at
    shutdown: its pool's keep-alive connections are reused by every request."""
    global _CLIENT
    with SummarizerClient(UPSTREAM_URL) as client:
        _CLIENT = client
        yield
        _CLIENT = None


app = FastAPI(title="fixed summarizer", lifespan=lifespan)


@app.get("/summarize")
def summarize(q: str) -> dict:
    """Summarise ``q`` through the upstream, memoised per prompt (bounded)."""
    summary = _SUMMARY_CACHE.get(q)
    if summary is None:
        assert _CLIENT is not None, "the app's lifespan has not started"
        summary = _CLIENT.summarize(q)
        _SUMMARY_CACHE.put(q, summary)
    return {"summary": summary, "cached_prompts": len(_SUMMARY_CACHE)}


@app.get("/healthz")
def healthz() -> dict:
    """Readiness probe for the demo and the tests; touches no upstream."""
    return {"ok": True}
