"""Threads that never end: a heartbeat thread per connection, never stopped.

Each task starts a thread that beats until its connection's ``stop`` event
is set, and the code that closes the connection forgets to set it: running
threads (and ``threading.Thread`` objects alive) grow by one per task,
attributed to the function they run (``heartbeat``; their creation stack
goes on to the ``start()`` in ``handle_connection``). The fixed twin sets
the event and joins the thread.
"""

from __future__ import annotations

import threading

from _common import options, ticks


def heartbeat(stop: threading.Event) -> None:  # leak-site
    while not stop.wait(0.2):
        pass


def handle_connection(fixed: bool) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=heartbeat, args=(stop,), daemon=True)
    thread.start()
    # ... the connection is served, then closed ...
    if fixed:
        stop.set()  # the fix
        thread.join()


def main() -> None:
    args = options(__doc__, rate=2.0)
    for _ in ticks(args.seconds, args.rate):
        handle_connection(args.fixed)


if __name__ == "__main__":
    main()
