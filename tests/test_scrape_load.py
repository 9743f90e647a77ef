"""Scrapes never starve: a storm of scrapers, half of them on keep-alive
clients scraping back to back, while the host allocates and opens fds. Every
scrape is answered well within a timeout far below Prometheus' default 10 s,
the exporter's threads stay bounded, and the host keeps working and exits
cleanly."""

from __future__ import annotations

import threading

import httpx

from conftest import parse_exposition, scrape, value

SCRAPERS_PER_KIND = 8
SCRAPES_EACH = 300
# Well under the 10 s a client waits by default: a scrape that waits for a
# server thread held by another client's idle connection runs into it.
TIMEOUT_S = 3.0

# The host's own work, in a thread of the child while it is scraped: small
# allocations and short-lived fds (files and sockets), which the hooks track.
HOST_LOOP = """
import os, socket, threading
loops = 0
stop = threading.Event()
def work():
    global loops
    while not stop.is_set():
        held = [bytearray(512) for _ in range(200)]
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]
        for fd in fds:
            os.close(fd)
        socket.socket().close()
        del held
        loops += 1
worker = threading.Thread(target=work)
worker.start()
for line in sys.stdin:
    if line.strip() == "loops":
        print(loops, flush=True)
stop.set()
worker.join()
"""


def test_scrape_storm_with_keep_alive_clients_never_starves(server_factory):
    server = server_factory(HOST_LOOP)
    threads_at_rest = value(scrape(server.url), "process_threads")
    failures: list[str] = []
    threads_seen: list[float] = []
    lock = threading.Lock()

    def scraper(name: str, client: httpx.Client) -> None:
        with client:
            for i in range(SCRAPES_EACH):
                try:
                    response = client.get(server.url)
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{name} scrape {i}: {type(exc).__name__}: {exc}")
                    continue
                if i % 50 == 0:  # parsing every body would slow the storm down
                    seen = value(parse_exposition(response.text), "process_threads")
                    with lock:
                        threads_seen.append(seen)

    timeout = httpx.Timeout(TIMEOUT_S)
    threads = [
        threading.Thread(target=scraper, args=(f"keep-alive {n}", httpx.Client(timeout=timeout)))
        for n in range(SCRAPERS_PER_KIND)
    ]
    # No idle connection kept in the pool: a new connection for every scrape.
    fresh = httpx.Limits(max_keepalive_connections=0)
    threads += [
        threading.Thread(target=scraper,
                         args=(f"new-connection {n}", httpx.Client(timeout=timeout, limits=fresh)))
        for n in range(SCRAPERS_PER_KIND)
    ]
    loops_before = int(server.ask("loops"))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a scraper is still running after 120 s"
    loops_after = int(server.ask("loops"))

    total = 2 * SCRAPERS_PER_KIND * SCRAPES_EACH
    assert failures == [], f"{len(failures)} of {total} scrapes failed; first: {failures[:5]}"
    # Every scrape reached the server's handler.
    assert value(scrape(server.url), "exposer_scrapes_total") >= total
    # A fixed pool of server threads: the storm does not add threads.
    assert threads_seen and max(threads_seen) <= threads_at_rest, (threads_at_rest, threads_seen)
    # The host kept working during the storm and exits cleanly.
    assert loops_after > loops_before
    code, stderr = server.close()
    assert code == 0, stderr

