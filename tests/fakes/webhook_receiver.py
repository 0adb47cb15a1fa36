"""A webhook receiver on loopback: records requests, checks signatures, answers from a script.

Signatures are checked with the ``standardwebhooks`` package (the Standard Webhooks reference
library for Python), an implementation independent of ``airflow_dataflow``. Deliveries are
deduplicated by ``webhook-id``, as a receiver honouring idempotency would.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode("ascii")


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``delay`` seconds pass before it is sent (for timeouts)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0


@dataclass
class Received:
    """One request as it arrived, and what the receiver answered."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int = 0
    signature_error: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    """A threaded HTTP(S) server on 127.0.0.1 and a free port.

    With ``secrets`` it verifies every request's Standard Webhooks signature against them (a
    request valid for one of them passes) and answers 401 when none matches.
    """

    def __init__(
        self, *, secrets: list[str] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.verifiers = [Webhook(secret) for secret in secrets or []]
        self.requests: list[Received] = []
        self.default = Reply(200, body='{"ok": true}')
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order, then with ``default``."""
        with self._lock:
            self._script.extend(replies)

    # -- what arrived ------------------------------------------------------------------------

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, in arrival order (duplicates included)."""
        return [request for request in self.requests if 200 <= request.status < 300]

    def unique(self) -> dict[str, Received]:
        """Accepted deliveries by ``webhook-id``: the first one of each id."""
        deliveries: dict[str, Received] = {}
        for request in self.accepted():
            deliveries.setdefault(request.webhook_id, request)
        return deliveries

    def records(self) -> list[Any]:
        """The records of the unique deliveries (a JSON array body holds several)."""
        return list(_flatten(request.json for request in self.unique().values()))

    # -- serving -----------------------------------------------------------------------------

    def _answer(self, received: Received) -> Reply:
        received.signature_error = self._verify(received)
        with self._lock:
            self.requests.append(received)
            if received.signature_error is not None:
                return Reply(401, body=received.signature_error)
            return self._script.popleft() if self._script else self.default

    def _verify(self, received: Received) -> str | None:
        if not self.verifiers:
            return None
        errors = []
        for verifier in self.verifiers:
            try:
                verifier.verify(received.body, received.headers, json_parse=False)
                return None
            except WebhookVerificationError as exc:
                errors.append(str(exc))
        return "; ".join(errors)


@contextmanager
def running_receiver(
    *, secrets: list[str] | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[WebhookReceiver]:
    """A started receiver, stopped on exit."""
    receiver = WebhookReceiver(secrets=secrets, tls=tls).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _flatten(bodies: Iterator[Any]) -> Iterator[Any]:
    for body in bodies:
        if isinstance(body, list):
            yield from body
        else:
            yield body


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _receive(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = Received(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length),
            )
            reply = receiver._answer(received)
            received.status = reply.status
            if reply.delay:
                time.sleep(reply.delay)
            payload = reply.body.encode("utf-8")
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_PUT = do_PATCH = _receive

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
