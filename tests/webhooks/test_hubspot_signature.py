"""HubSpot v3 webhook signatures: what is accepted, and each reason a request is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from airflow_dataflow.webhooks.hubspot_signature import (
    SignatureError,
    SignedRequest,
    canonical_uri,
    verify_v3,
)

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URI = "https://hooks.example.com/dataflow/webhooks/deals"
BODY = b'[{"eventId":1,"subscriptionType":"deal.propertyChange","objectId":123}]'


def documented_signature(secret: str, method: str, uri: str, body: bytes, stamp: int) -> str:
    """The algorithm as HubSpot documents it, written out independently of the code under test."""
    source = f"{method}{uri}{body.decode()}{stamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def request(
    *,
    uri: str = URI,
    body: bytes = BODY,
    stamp: int | None = None,
    secret: str = SECRET,
    signed_uri: str | None = None,
    method: str = "POST",
) -> SignedRequest:
    stamp = int(time.time() * 1000) if stamp is None else stamp
    signature = documented_signature(secret, method, signed_uri or uri, body, stamp)
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": str(stamp)}
    return SignedRequest(method=method, uri=uri, body=body, headers=headers)


def test_a_correctly_signed_fresh_request_is_accepted() -> None:
    verify_v3(request(), SECRET)


def test_header_names_are_case_insensitive() -> None:
    signed = request()
    lowered = {name.lower(): value for name, value in signed.headers.items()}
    verify_v3(SignedRequest(signed.method, signed.uri, signed.body, lowered), SECRET)


def test_the_wrong_client_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_v3(request(secret="another-secret"), SECRET)


def test_a_tampered_body_is_refused() -> None:
    signed = request()
    tampered = SignedRequest(signed.method, signed.uri, signed.body + b" ", signed.headers)
    with pytest.raises(SignatureError, match="does not match"):
        verify_v3(tampered, SECRET)


def test_a_request_signed_for_another_uri_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_v3(request(signed_uri=URI.replace("deals", "contacts")), SECRET)


def test_a_timestamp_older_than_five_minutes_is_refused() -> None:
    now = time.time()
    stale = request(stamp=int((now - 301) * 1000))
    with pytest.raises(SignatureError, match="stale request"):
        verify_v3(stale, SECRET, now=now)


def test_a_timestamp_just_under_five_minutes_old_is_accepted() -> None:
    now = time.time()
    verify_v3(request(stamp=int((now - 299) * 1000)), SECRET, now=now)


def test_a_timestamp_far_in_the_future_is_refused() -> None:
    now = time.time()
    with pytest.raises(SignatureError, match="in the future"):
        verify_v3(request(stamp=int((now + 600) * 1000)), SECRET, now=now)


@pytest.mark.parametrize("missing", ["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"])
def test_a_missing_header_is_refused_by_name(missing: str) -> None:
    signed = request()
    headers = {name: value for name, value in signed.headers.items() if name != missing}
    with pytest.raises(SignatureError, match=f"missing {missing}"):
        verify_v3(SignedRequest(signed.method, signed.uri, signed.body, headers), SECRET)


def test_a_timestamp_that_is_not_milliseconds_is_refused() -> None:
    signed = request()
    headers = {**signed.headers, "X-HubSpot-Request-Timestamp": "yesterday"}
    with pytest.raises(SignatureError, match="not milliseconds"):
        verify_v3(SignedRequest(signed.method, signed.uri, signed.body, headers), SECRET)


def test_a_body_that_is_not_utf8_is_refused() -> None:
    signed = request()
    with pytest.raises(SignatureError, match="not UTF-8"):
        verify_v3(SignedRequest(signed.method, signed.uri, b"\xff\xfe", signed.headers), SECRET)


def test_escapes_hubspot_decodes_are_decoded_before_checking() -> None:
    received = "https://hooks.example.com/dataflow/webhooks/deals?next=%2Fhome%3Fa%3Ab&x=%2a"
    decoded = "https://hooks.example.com/dataflow/webhooks/deals?next=/home?a:b&x=*"
    assert canonical_uri(received) == decoded
    verify_v3(request(uri=received, signed_uri=decoded), SECRET)


def test_other_escapes_are_kept() -> None:
    assert canonical_uri("https://h/p?q=a%20b%26c") == "https://h/p?q=a%20b%26c"


def test_signatures_agree_with_the_hubspot_client_library() -> None:
    from hubspot.utils.signature import Signature

    from airflow_dataflow.webhooks.hubspot_signature import sign_v3

    stamp = 1_700_000_000_123
    expected = Signature.get_signature(
        SECRET, BODY.decode(), "v3", http_uri=URI, http_method="POST", timestamp=str(stamp)
    )
    assert sign_v3(SECRET, "post", URI, BODY, stamp) == expected
