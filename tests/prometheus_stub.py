"""A stand-in ``prometheus`` executable for tests/test_prometheus_side.py: it takes the flags
benchmarks/prometheus_side.py starts Prometheus with, serves ``/-/ready`` and
``/api/v1/query`` on the listen address, and answers the query by what it asks for:

- ``up``: success, an empty vector;
- ``evaluation timeout``: what Prometheus answers a query over its ``timeout=`` (HTTP 503,
  errorType "timeout"), so the client sees the server's own limit;
- ``hang``: never answers that query;
- ``wedge``: from then on answers nothing, not even ``/-/ready`` (a server stuck in GC or
  swapping: alive, not serving);
- ``grow``: allocates 200 MB and keeps it, then hangs (for the memory watchdog).

The query's ``timeout`` parameter is echoed back in the success answer. SIGTERM ends it at
once, as the default action.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

WEDGED = threading.Event()
KEPT: list[bytearray] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        while WEDGED.is_set():
            time.sleep(1)
        url = urlparse(self.path)
        if url.path == "/-/ready":
            self.send_response(200)
            self.end_headers()
            return
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        query = params.get("query", "")
        if query == "wedge":
            WEDGED.set()
            self.do_GET()
        elif query == "grow":
            KEPT.append(bytearray(200 * 1024 * 1024))
            KEPT[-1][::4096] = b"x" * len(KEPT[-1][::4096])  # touched: resident
            time.sleep(3600)
        elif query == "hang":
            time.sleep(3600)
        elif query == "evaluation timeout":
            self._answer(503, {"status": "error", "errorType": "timeout",
                               "error": "query timed out in expression evaluation"})  # fmt: skip
        else:
            self._answer(200, {"status": "success", "data": {
                "resultType": "vector", "result": [], "timeout": params.get("timeout")}})  # fmt: skip


def main() -> None:
    (address,) = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--web.listen-address=")]
    host, port = address.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
