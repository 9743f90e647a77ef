"""An unbounded cache of AI clients, keyed by a new key each time (seed
review, issues 1 and 2).

The service memoises one client wrapper per cache key "so that follow-up
calls reuse its connection", but the key includes something new on every
task (the prompt's hash, a request id), so every task adds a client that
is never evicted and never closed: its ``httpx.Client`` stays alive and
keeps one keep-alive socket open. Live ``httpx.Client`` objects, open TCP
sockets and the cache's length grow together. The fixed twin bounds the
cache (least recently used first out) and closes the clients it evicts.
"""

from __future__ import annotations

from collections import OrderedDict

import httpx
from _common import Upstream, options, ticks

MAX_CLIENTS = 8  # the fix's bound


class AIClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10.0)  # leak-site

    def complete(self, prompt: str) -> str:
        response = self.http.post("/v1/complete", json={"prompt": prompt})  # leak-site: socket
        return response.json()["path"]

    def close(self) -> None:
        self.http.close()


_CLIENTS: OrderedDict[str, AIClient] = OrderedDict()


def client_for(key: str, base_url: str, fixed: bool) -> AIClient:
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = AIClient(base_url)
        if fixed and len(_CLIENTS) > MAX_CLIENTS:  # the fix: a bound, closing what it evicts
            _CLIENTS.popitem(last=False)[1].close()
    _CLIENTS.move_to_end(key)
    return client


def main() -> None:
    args = options(__doc__, rate=4.0)
    with Upstream() as upstream:
        for i in ticks(args.seconds, args.rate):
            key = f"gpt-4:request-{i}"  # a new key every time: the bug
            client_for(key, upstream.url, args.fixed).complete(f"prompt {i}")


if __name__ == "__main__":
    main()
