"""The part every fake API shares: a threaded HTTP server on 127.0.0.1 and a free port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """Serves ``handler`` from a daemon thread once entered (``with fake: ...``)."""

    _server: ThreadingHTTPServer
    _thread: threading.Thread

    def _serve_with(self, handler: type[BaseHTTPRequestHandler]) -> None:
        """Bind the server (a free port on 127.0.0.1); it answers once the fake is entered."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
