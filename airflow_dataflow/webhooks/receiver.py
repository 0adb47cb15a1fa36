"""The webhook receiver: ``POST /dataflow/webhooks/{name}`` on the Airflow API server.

An endpoint exists when the Airflow connection ``dataflow_webhook_{name}`` does. Its password
is the secret; its extra ``verify`` says how a request proves where it comes from:

- ``token`` (default): the header ``X-Dataflow-Token`` equals the secret;
- ``hubspot_v3``: HubSpot's ``X-HubSpot-Signature-v3`` (the secret is the app's client secret;
  the extra ``public_url`` is the URL HubSpot calls, when a proxy changes it);
- ``standard``: Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``; the secret is ``whsec_...``, several separated by spaces).

Answers (DESIGN.md's contract): 202 accepted; 400 body not JSON; 401 missing or bad signature
or token, stale timestamp (over 5 minutes); 404 unknown name; 409 the same event again; 413
body over the extra ``max_bytes`` (default 1 MiB). An accepted payload becomes an Asset event
of ``dataflow://webhooks/<name>`` (its extra holds the payload), which runs the routes with
``schedule: {webhook: NAME}``. Every refusal is logged with the reason, never the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from airflow_dataflow.webhooks.hubspot_signature import SignatureError, SignedRequest, verify_v3
from airflow_dataflow.webhooks.names import CONNECTION_PREFIX, webhook_asset_uri

log = logging.getLogger(__name__)

MAX_BYTES = 1024 * 1024
NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
TOKEN_HEADER = "x-dataflow-token"
EVENT_ID_HEADER = "x-dataflow-event-id"
Verification = Literal["token", "hubspot_v3", "standard"]


class Refused(Exception):
    """A request the receiver answers with ``status`` (and ``reason`` in the body and log)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    """One webhook, from its connection."""

    name: str
    secret: str
    verify: Verification
    max_bytes: int = MAX_BYTES
    public_url: str | None = None

    @classmethod
    def from_connection(cls, name: str, conn: Any) -> Endpoint:
        extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
        verify = extra.get("verify", "token")
        if verify not in ("token", "hubspot_v3", "standard"):
            raise Refused(
                500,
                f"connection {CONNECTION_PREFIX}{name}: extra verify {verify!r} is not "
                "token, hubspot_v3 or standard",
            )
        if not conn.password:
            raise Refused(500, f"connection {CONNECTION_PREFIX}{name} has no password (secret)")
        return cls(
            name=name,
            secret=str(conn.password),
            verify=verify,
            max_bytes=int(extra.get("max_bytes") or MAX_BYTES),
            public_url=extra.get("public_url"),
        )


def find_endpoint(name: str) -> Endpoint | None:
    """The endpoint of connection ``dataflow_webhook_{name}``, or ``None``."""
    if not NAME.match(name):
        return None
    from airflow.models.connection import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get_connection_from_secrets(f"{CONNECTION_PREFIX}{name}")
    except AirflowNotFoundException:
        return None
    return Endpoint.from_connection(name, conn)


def authenticate(
    endpoint: Endpoint,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    now: float | None = None,
) -> str:
    """Check the request as the endpoint says; the event's key for replay detection."""
    headers = {name.lower(): value for name, value in headers.items()}
    if endpoint.verify == "token":
        offered = headers.get(TOKEN_HEADER)
        if not offered:
            raise Refused(401, f"missing {TOKEN_HEADER} header")
        if not hmac.compare_digest(offered.encode(), endpoint.secret.encode()):
            raise Refused(401, f"wrong {TOKEN_HEADER}")
        event_id = headers.get(EVENT_ID_HEADER)
        return _key("id", event_id) if event_id else _key("body", body)
    if endpoint.verify == "hubspot_v3":
        uri = endpoint.public_url or url
        try:
            verify_v3(SignedRequest(method, uri, body, headers), endpoint.secret, now=now)
        except SignatureError as exc:
            raise Refused(401, f"HubSpot signature: {exc}") from None
        return _key("signature", headers["x-hubspot-signature-v3"])
    from airflow_dataflow.destinations.signing import SigningSecretError, decode_secrets, verify

    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    if not (msg_id and stamp and signature):
        raise Refused(401, "missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        keys = decode_secrets(endpoint.secret)
    except SigningSecretError as exc:
        raise Refused(500, f"connection {CONNECTION_PREFIX}{endpoint.name}: {exc}") from None
    if not verify(keys, msg_id, stamp, body, signature, now=now):
        raise Refused(401, "Standard Webhooks signature does not match or timestamp is stale")
    return _key("id", msg_id)


def parse_payload(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None


def _key(kind: str, value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return f"{kind}:{hashlib.sha256(data).hexdigest()}"


def record_asset_event(name: str, payload: Any, received_at: datetime) -> bool:
    """An Asset event for the webhook (in Airflow's metadata DB); false when no route
    subscribes to it (Airflow knows no such Asset)."""
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(
            select(AssetModel).where(AssetModel.uri == webhook_asset_uri(name)).limit(1)
        )
        if asset is None:
            return False
        event = asset_manager.register_asset_change(
            asset=asset,
            timestamp=received_at,
            extra={"webhook": name, "payload": payload},
            source_is_api=True,
            session=session,
        )
        return event is not None


@dataclass
class Receiver:
    """What the app needs, replaceable in tests."""

    find: Callable[[str], Endpoint | None] = find_endpoint
    first_time: Callable[[str, str], bool] | None = None
    record: Callable[[str, Any, datetime], bool] = record_asset_event

    def remember(self, name: str, key: str) -> bool:
        if self.first_time is None:
            from airflow_dataflow.webhooks.receipts import ReceiptLog

            self.first_time = ReceiptLog.open().first_time
        return self.first_time(name, key)


def create_app(receiver: Receiver | None = None) -> FastAPI:
    """The FastAPI app the Airflow plugin mounts at ``/dataflow``."""
    receiver = receiver or Receiver()
    app = FastAPI(
        title="airflow-dataflow",
        description="Webhook receiver of airflow-dataflow: signed requests become Asset "
        "events that run the routes subscribed to them.",
        version="1",
    )

    @app.post(
        "/webhooks/{name}",
        status_code=202,
        summary="Receive a webhook",
        responses={
            400: {"description": "The body is not JSON"},
            401: {"description": "Missing or bad signature or token, or a stale timestamp"},
            404: {"description": "No webhook of this name (no connection dataflow_webhook_NAME)"},
            409: {"description": "This event was received already (a replay)"},
            413: {"description": "The body is larger than the webhook's max_bytes"},
        },
    )
    async def receive(name: str, request: Request) -> JSONResponse:
        try:
            answer = await _receive(receiver, name, request)
        except Refused as refused:
            log.warning("webhook %r refused (%s): %s", name, refused.status, refused.reason)
            return JSONResponse({"detail": refused.reason}, status_code=refused.status)
        return JSONResponse(answer, status_code=202)

    return app


async def _receive(receiver: Receiver, name: str, request: Request) -> dict[str, Any]:
    endpoint = receiver.find(name)
    if endpoint is None:
        raise Refused(404, f"no webhook {name!r}")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > endpoint.max_bytes:
        raise Refused(413, f"body of {length} bytes is over {endpoint.max_bytes}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > endpoint.max_bytes:
            raise Refused(413, f"body is over {endpoint.max_bytes} bytes")
    key = authenticate(endpoint, request.method, str(request.url), dict(request.headers), body)
    payload = parse_payload(body)
    if not receiver.remember(name, key):
        raise Refused(409, "this event was received already")
    received_at = datetime.now(timezone.utc)
    triggered = receiver.record(name, payload, received_at)
    log.info("webhook %r accepted (%d bytes, routes triggered: %s)", name, len(body), triggered)
    return {"accepted": True, "webhook": name, "triggered": triggered}
