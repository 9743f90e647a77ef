"""A stand-in for the AI provider the example services call, on 127.0.0.1.

The seed review's critical leak is an ``httpx.Client`` that is never closed.
What it leaks is a pooled keep-alive connection, so this server speaks
HTTP/1.1 and keeps every connection open until the client closes it (or it
has been idle for ``--idle-timeout`` seconds): an unclosed client then holds
one socket for as long as it lives, as it would against a real provider.

Usage::

    python examples/upstream.py [--port 0] [--idle-timeout 300]

It prints ``upstream listening on http://127.0.0.1:PORT`` once it accepts
connections (with the real port when given port 0), and serves
``POST /v1/summarize`` with a JSON body ``{"text": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Size of the canned summary: about what a short LLM answer weighs, so that
# the leaky service's cache grows by a realistic amount per request.
SUMMARY_BYTES = 2048


class SummarizeHandler(BaseHTTPRequestHandler):
    """Answers each summarize request and keeps the connection open."""

    protocol_version = "HTTP/1.1"  # keep-alive by default
    timeout: float | None = None  # set from --idle-timeout in main()

    def do_POST(self) -> None:  # noqa: N802 (name fixed by http.server)
        length = int(self.headers.get("Content-Length", "0"))
        try:
            text = json.loads(self.rfile.read(length) or b"{}").get("text", "")
        except (ValueError, AttributeError):
            self._reply(400, {"error": "body must be a JSON object"})
            return
        if self.path != "/v1/summarize":
            self._reply(404, {"error": f"no route {self.path}"})
            return
        filler = ("lorem ipsum " * (SUMMARY_BYTES // 12 + 1))[:SUMMARY_BYTES]
        self._reply(200, {"summary": f"{text[:64]}: {filler}"})

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Stay quiet: one line per request would drown the demo's table."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="seconds an idle keep-alive connection is kept (bounds the "
        "server's threads if a client leaks its connections for good)",
    )
    args = parser.parse_args(argv)

    SummarizeHandler.timeout = args.idle_timeout
    server = ThreadingHTTPServer((args.host, args.port), SummarizeHandler)
    server.daemon_threads = True  # open keep-alive connections never block exit
    host, port = server.server_address[:2]
    print(f"upstream listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
