"""The scenarios' stand-in for a remote HTTP service, on 127.0.0.1.

Run by :func:`_common.Upstream` in a process of its own, with leakprobe
disabled (``LEAKPROBE_DISABLE=1``): it plays the remote side, so the
profiled scenario holds only its own client sockets. HTTP/1.1 with
keep-alive: a connection stays open until the client closes it (or asks for
``Connection: close``, as urllib does), as a real provider's would.

It prints ``upstream listening on http://127.0.0.1:PORT`` once it accepts
connections, answers ``GET``/``POST`` on any path with a JSON body of
``?size=N`` bytes (default 256), and exits when its standard input closes
(the scenario ended, however it ended).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    timeout = 600  # an idle kept-alive connection lives as long as any scenario

    def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        size = int(query.get("size", ["256"])[0])
        body = json.dumps({"path": self.path, "pad": "x" * size}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the scenarios' output is leakprobe's."""


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    print(f"upstream listening on http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the scenario closes our stdin or exits
    os._exit(0)  # daemon handler threads may be blocked in a read: do not wait


if __name__ == "__main__":
    main()
