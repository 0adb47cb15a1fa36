"""HubSpot's v3 request signature (``X-HubSpot-Signature-v3``), checked in constant time.

HubSpot signs each webhook request with its app's client secret: the base64 HMAC-SHA256 of
``method + uri + body + timestamp``, the timestamp (milliseconds since the epoch) sent in
``X-HubSpot-Request-Timestamp``. A request is accepted when the signature matches and the
timestamp is at most five minutes old (and not more than five minutes ahead: clocks drift, but a
timestamp from the future is no proof of freshness). The URI is the full URL HubSpot called
(scheme, host, path and query), with the percent-escapes HubSpot decodes before signing decoded.

The HMAC itself is the client library's (``hubspot.utils.signature.Signature``); what it leaves
out (future timestamps, URI decoding, telling *why* a request is refused) is done here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
MAX_AGE_SECONDS = 300.0

# The escapes HubSpot decodes in the URI before signing (its request-validation docs).
_DECODED_ESCAPES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


class SignatureError(Exception):
    """The request is not proven to come from HubSpot; ``str()`` says why (safe to log)."""


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a v3 signature covers: the request as received."""

    method: str
    uri: str
    body: bytes
    headers: Mapping[str, str]


def canonical_uri(uri: str) -> str:
    """``uri`` with the escapes HubSpot decodes before signing decoded (either hex case)."""
    out: list[str] = []
    index = 0
    while index < len(uri):
        escape = uri[index : index + 3].upper()
        if escape in _DECODED_ESCAPES:
            out.append(_DECODED_ESCAPES[escape])
            index += 3
        else:
            out.append(uri[index])
            index += 1
    return "".join(out)


def sign_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """The ``X-HubSpot-Signature-v3`` value HubSpot sends for this request: base64 of the
    HMAC-SHA256, keyed by the app's client secret, of method + URI + body + timestamp (the
    same as ``hubspot.utils.signature.Signature.get_signature``, without needing that library
    in the API server)."""
    source = f"{method.upper()}{canonical_uri(uri)}{body.decode('utf-8')}{timestamp_ms}"
    digest = hmac.new(client_secret.encode(), source.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_v3(request: SignedRequest, client_secret: str, *, now: float | None = None) -> None:
    """Raise ``SignatureError`` unless ``request`` carries a fresh, valid v3 signature."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    signature = headers.get(SIGNATURE_HEADER.lower())
    stamp = headers.get(TIMESTAMP_HEADER.lower())
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not stamp:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    try:
        timestamp_ms = int(stamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} {stamp!r} is not milliseconds") from None
    age = (time.time() if now is None else now) - timestamp_ms / 1000
    if age > MAX_AGE_SECONDS:
        raise SignatureError(f"stale request: signed {age:.0f}s ago (at most 300s accepted)")
    if age < -MAX_AGE_SECONDS:
        raise SignatureError(f"timestamp {-age:.0f}s in the future (at most 300s accepted)")
    try:
        expected = sign_v3(client_secret, request.method, request.uri, request.body, timestamp_ms)
    except UnicodeDecodeError:
        raise SignatureError("request body is not UTF-8") from None
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise SignatureError("signature does not match (wrong client secret, URI or body)")
