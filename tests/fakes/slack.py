"""A Slack on loopback: incoming webhooks and the Web API methods the slack destination calls.

Answers as Slack documents them:

- Incoming webhooks (``POST /services/<token>``): 200 ``ok``; 400 ``invalid_payload`` (not
  JSON), ``no_text``, ``invalid_blocks``; 404 ``no_service`` (unknown token); 429 with
  ``Retry-After`` when scripted. Bodies are plain text.
- Web API (``POST /api/<method>``, bearer token): HTTP 200 with ``{"ok": true, ...}`` or
  ``{"ok": false, "error": ...}`` (``invalid_auth``, ``channel_not_found``, ``no_text``,
  ``invalid_blocks``); 429 ``ratelimited`` with ``Retry-After`` when scripted. Methods:
  ``chat.postMessage`` (keeps ``metadata``), ``conversations.list``,
  ``conversations.history`` (``include_all_metadata``).

Every request is recorded (``requests``); every message Slack would show is in ``messages``.
``script`` queues answers for the next message posts (rate limits, outages).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.loopback import LoopbackServer

WEBHOOK_TOKEN = "T0DATAFLOW/B0DATAFLOW/xoxwebhooksecret0000000"
API_TOKEN = "xoxb-0000-dataflow-api-secret"
CHANNELS = {"alerts": "C0ALERTS", "orders": "C0ORDERS", "general": "C0GENERAL"}


@dataclass(frozen=True)
class Reply:
    """A scripted answer: HTTP status, body (text, or a dict sent as JSON) and headers."""

    status: int
    body: str | dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Message:
    """A message Slack accepted: where it went and what it carried."""

    via: str  # "webhook" or "api"
    channel: str  # the channel id
    text: str | None
    blocks: list[Any] | None
    metadata: dict[str, Any] | None
    ts: str


@dataclass
class Request:
    """One request the server received, and the answer it gave."""

    path: str
    body: dict[str, Any] | str
    status: int = 0
    answer: str = ""


class FakeSlack(LoopbackServer):
    """The server; use as a context manager (it listens on 127.0.0.1, a free port)."""

    def __init__(self) -> None:
        self.webhook_tokens = {WEBHOOK_TOKEN: CHANNELS["alerts"]}
        self.api_tokens = {API_TOKEN}
        self.channels = dict(CHANNELS)
        self.messages: list[Message] = []
        self.requests: list[Request] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._clock = 1_700_000_000
        self._serve_with(_handler(self))

    @property
    def api_url(self) -> str:
        """The ``base_url`` of the Web API (with the trailing slash slack_sdk expects)."""
        return f"{self.url}/api/"

    def script(self, *replies: Reply) -> None:
        """Answer the next message posts with ``replies`` (then normally again)."""
        with self._lock:
            self._script.extend(replies)

    def texts(self) -> list[str | None]:
        return [message.text for message in self.messages]

    # -- request handling (called from the server's threads) ---------------------------------

    def handle(self, path: str, headers: dict[str, str], body: dict[str, Any] | str) -> Reply:
        with self._lock:
            request = Request(path, body)
            self.requests.append(request)
            reply = self._route(path, headers, body)
            request.status = reply.status
            request.answer = (
                reply.body if isinstance(reply.body, str) else str(reply.body.get("error", "ok"))
            )
            return reply

    def _route(self, path: str, headers: dict[str, str], body: dict[str, Any] | str) -> Reply:
        if path.startswith("/services/"):
            return self._webhook(path.removeprefix("/services/"), body)
        method = path.rsplit("/", 1)[-1]
        if not path.startswith("/api/"):
            return Reply(404, "not found")
        if headers.get("authorization", "") not in {f"Bearer {t}" for t in self.api_tokens}:
            return _api_error("invalid_auth" if "authorization" in headers else "not_authed")
        if not isinstance(body, dict):
            return _api_error("invalid_arguments")
        if method == "chat.postMessage":
            return self._post_message(body)
        if method == "conversations.list":
            channels = [{"id": id_, "name": name} for name, id_ in self.channels.items()]
            return _api_ok(channels=channels, response_metadata={"next_cursor": ""})
        if method == "conversations.history":
            return self._history(body)
        return _api_error("unknown_method")

    def _webhook(self, token: str, body: dict[str, Any] | str) -> Reply:
        channel = self.webhook_tokens.get(token)
        if channel is None:
            return Reply(404, "no_service")
        if self._script:
            return self._script.popleft()
        if not isinstance(body, dict):
            return Reply(400, "invalid_payload")
        problem = _check_message(body)
        if problem:
            return Reply(400, problem)
        self._keep("webhook", channel, body)
        return Reply(200, "ok")

    def _post_message(self, body: dict[str, Any]) -> Reply:
        if self._script:
            return self._script.popleft()
        channel = self._channel_id(str(body.get("channel", "")))
        if channel is None:
            return _api_error("channel_not_found")
        problem = _check_message(body)
        if problem:
            return _api_error(problem)
        message = self._keep("api", channel, body)
        return _api_ok(channel=channel, ts=message.ts, message={"text": message.text})

    def _history(self, body: dict[str, Any]) -> Reply:
        channel = str(body.get("channel", ""))
        if channel not in self.channels.values():
            return _api_error("channel_not_found")
        with_metadata = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
        limit = int(body.get("limit", 100))
        found = [m for m in reversed(self.messages) if m.channel == channel][:limit]
        return _api_ok(
            messages=[
                {
                    "type": "message",
                    "text": m.text or "",
                    "ts": m.ts,
                    **({"metadata": m.metadata} if with_metadata and m.metadata else {}),
                }
                for m in found
            ],
            has_more=False,
        )

    def _channel_id(self, channel: str) -> str | None:
        if channel in self.channels.values():
            return channel
        return self.channels.get(channel.removeprefix("#"))

    def _keep(self, via: str, channel: str, body: dict[str, Any]) -> Message:
        self._clock += 1
        metadata = body.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        message = Message(
            via=via,
            channel=channel,
            text=body.get("text"),
            blocks=body.get("blocks"),
            metadata=metadata,
            ts=f"{self._clock}.000100",
        )
        self.messages.append(message)
        return message


def _check_message(body: dict[str, Any]) -> str | None:
    """Slack's checks of a message payload: the error code, or None when it is fine."""
    text, blocks = body.get("text"), body.get("blocks")
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return "invalid_blocks"
    if not text and not blocks:
        return "no_text"
    if text is not None and len(str(text)) > 40_000:
        return "msg_too_long"
    if blocks is not None and not _valid_blocks(blocks):
        return "invalid_blocks"
    return None


def _valid_blocks(blocks: Any) -> bool:
    if not isinstance(blocks, list) or not blocks:
        return False
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return False
        text = block.get("text")
        if text is not None and (not isinstance(text, dict) or not text.get("text")):
            return False  # "must be more than 0 characters"
    return True


def _api_ok(**values: Any) -> Reply:
    return Reply(200, {"ok": True, **values})


def _api_error(error: str) -> Reply:
    return Reply(200, {"ok": False, "error": error})


def rate_limited(retry_after: int = 1, *, api: bool = False) -> Reply:
    """Slack's 429: ``Retry-After`` seconds; the Web API also says ``ratelimited``."""
    body: str | dict[str, Any] = {"ok": False, "error": "ratelimited"} if api else "rate_limited"
    return Reply(429, body, {"Retry-After": str(retry_after)})


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            url = urlsplit(self.path)
            reply = fake.handle(url.path, _lower(self.headers.items()), _parse(raw, url.query))
            self._answer(reply)

        do_GET = do_POST

        def _answer(self, reply: Reply) -> None:
            if isinstance(reply.body, dict):
                data, kind = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
            else:
                data, kind = reply.body.encode(), "text/plain; charset=utf-8"
            self.send_response(reply.status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def _lower(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


def _parse(raw: str, query: str) -> dict[str, Any] | str:
    """A JSON object body, or form fields (plus the query string); the raw text otherwise."""
    fields: dict[str, Any] = dict(parse_qsl(query))
    if raw.lstrip().startswith("{"):
        try:
            return {**fields, **json.loads(raw)}
        except ValueError:
            return raw
    if raw and "=" in raw and not raw.lstrip().startswith(("[", '"')):
        return {**fields, **dict(parse_qsl(raw))}
    return raw or fields


@contextmanager
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server
