"""Standard Webhooks signatures (https://www.standardwebhooks.com), for sending and checking.

A secret is ``whsec_`` followed by base64 (the prefix is optional); the HMAC key is the decoded
bytes. The signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"`` with the body's exact
bytes; the ``webhook-signature`` header holds ``v1,<base64 HMAC-SHA256>`` for each secret,
separated by spaces, so a receiver that knows any one of them (rotation) can check it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

SECRET_PREFIX = "whsec_"
VERSION = "v1"
TOLERANCE_SECONDS = 300


class SigningSecretError(ValueError):
    """A signing secret that is not ``whsec_`` + base64 (the message never holds the secret)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of one secret: the base64 after the optional ``whsec_`` prefix."""
    text = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SigningSecretError(
            "a signing secret must be whsec_ followed by base64 (Standard Webhooks)"
        ) from None
    if not key:
        raise SigningSecretError("a signing secret is empty")
    return key


def decode_secrets(secrets: str) -> list[bytes]:
    """The keys of every secret in ``secrets`` (separated by whitespace, for rotation)."""
    keys = [decode_secret(secret) for secret in secrets.split()]
    if not keys:
        raise SigningSecretError("no signing secret given")
    return keys


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` sent as message ``msg_id`` at ``timestamp``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per key, separated by spaces."""
    return " ".join(signature(key, msg_id, timestamp, body) for key in keys)


def verify(
    keys: list[bytes],
    msg_id: str,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` holds a valid ``v1`` signature by one of ``keys`` of a fresh message."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        return False
    expected = {signature(key, msg_id, sent_at, body) for key in keys}
    offered = header.split()
    return any(
        hmac.compare_digest(candidate, wanted) for candidate in offered for wanted in expected
    )
