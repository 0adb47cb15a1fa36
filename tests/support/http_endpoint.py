"""A tiny loopback HTTP endpoint with scripted status codes (for ``wait_for: http``)."""

from __future__ import annotations


class Endpoint:
    """A loopback HTTP server answering each GET/HEAD with the next scripted status."""

    def __init__(self, *statuses: int) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.statuses = list(statuses)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.seen.append((self.command, self.path, dict(self.headers)))
                status = (
                    endpoint.statuses.pop(0) if len(endpoint.statuses) > 1 else endpoint.statuses[0]
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
