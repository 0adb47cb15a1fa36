"""The ``webhook`` destination against a real HTTP receiver on loopback.

The receiver (``tests/fakes/webhook_receiver.py``) checks signatures with the ``standardwebhooks``
reference library, answers from a script (500, 429 + Retry-After, 400, delays ...) and records
every request. Retries run on a recording ``sleep``, so no test waits for a backoff.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from airflow_dataflow.config import load_route_text
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.policy import RateLimiter
from airflow_dataflow.destinations.webhook import (
    WebhookDestination,
    WebhookRedirectError,
    WebhookSettings,
    WebhookUnavailableError,
)
from airflow_dataflow.errors import DestinationError, FatalError, RetriableError, RouteConfigError
from tests.fakes.webhook_receiver import Reply, WebhookReceiver, new_secret, running_receiver
from tests.support.faults import record_waits

RECORDS = [{"id": n, "name": f"order {n}"} for n in range(1, 6)]
Make = Callable[..., WebhookDestination]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as started:
        yield started


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of the retry policy, recorded instead of slept."""
    return record_waits(monkeypatch, WebhookDestination, seed=7)


@pytest.fixture
def make(receiver: WebhookReceiver, sleeps: list[float]) -> Make:
    """A destination posting to the receiver (private networks allowed: it is on loopback)."""

    def build(**settings: Any) -> WebhookDestination:
        settings.setdefault("url", receiver.url())
        settings.setdefault("allow_private_networks", True)
        model = WebhookSettings(type="webhook", **settings)
        context = RunContext(route="orders", run_id="run-1", params={"tenant": "acme"})
        return WebhookDestination("hook", model, context)

    return build


def _signing_conn(define_conn: Callable[..., str], password: str) -> str:
    return define_conn(json.dumps({"conn_type": "generic", "password": password}), "signing")


# -- bodies, batching, headers ------------------------------------------------------------------


def test_one_request_per_record_whose_body_is_the_record(
    make: Make, receiver: WebhookReceiver
) -> None:
    result = make().deliver([RECORDS[:2], RECORDS[2:]])
    assert (result.delivered, result.rejections) == (5, [])
    assert [request.json for request in receiver.requests] == RECORDS
    for request in receiver.requests:
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.headers["content-type"] == "application/json"
        assert re.fullmatch(r"[0-9a-f]{64}", request.webhook_id)
        assert request.headers["idempotency-key"] == request.webhook_id
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        assert "webhook-signature" not in request.headers  # no signing configured
    assert len(receiver.unique()) == 5


def test_batch_size_sends_json_arrays(make: Make, receiver: WebhookReceiver) -> None:
    make(batch_size=2).deliver([RECORDS])
    assert [request.json for request in receiver.requests] == [
        RECORDS[0:2],
        RECORDS[2:4],
        RECORDS[4:5],  # the last batch is still an array
    ]


def test_ids_derive_from_content_not_from_the_run(make: Make, receiver: WebhookReceiver) -> None:
    make().deliver([RECORDS[:2]])
    make().deliver([RECORDS[:2]])
    make().deliver([[{"id": 1, "name": "changed"}]])
    first, second, third = ([r.webhook_id for r in receiver.requests[i : i + 2]] for i in (0, 2, 4))
    assert first == second
    assert third[0] != first[0]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_method(make: Make, receiver: WebhookReceiver, method: str) -> None:
    make(method=method).deliver([RECORDS[:1]])
    assert receiver.requests[0].method == method


def test_record_values_are_data_never_template_source(
    make: Make, receiver: WebhookReceiver
) -> None:
    record = {"id": 1, "note": "{{ 7*7 }}", "block": "{% for x in range(3) %}x{% endfor %}"}
    make().deliver([[record]])
    make(body={"text": "{{ record.note }}", "all": "{{ record }}"}).deliver([[record]])
    make(body="note={{ record.note }}").deliver([[record]])
    make(headers={"X-Note": "{{ record.note }}"}).deliver([[record]])
    default, structured, text, header = receiver.requests
    assert default.json == record
    assert structured.json == {"text": "{{ 7*7 }}", "all": record}
    assert text.body == b"note={{ 7*7 }}"
    assert header.headers["x-note"] == "{{ 7*7 }}"


def test_body_and_header_templates(make: Make, receiver: WebhookReceiver) -> None:
    destination = make(
        body={
            "event": "order.created",
            "tenant": "{{ params.tenant }}",
            "order": "{{ record.id }}",
            "label": "{{ route }}/{{ destination }} #{{ record.id }}",
            "data": "{{ record }}",
        },
        headers={"X-Tenant": "{{ params.tenant }}", "X-Order": "{{ record.id }}"},
    )
    destination.deliver([RECORDS[:1]])
    (request,) = receiver.requests
    assert request.json == {
        "event": "order.created",
        "tenant": "acme",
        "order": 1,  # one whole template keeps the native type
        "label": "orders/hook #1",
        "data": RECORDS[0],
    }
    assert (request.headers["x-tenant"], request.headers["x-order"]) == ("acme", "1")


def test_a_batch_template_sees_records_and_count(make: Make, receiver: WebhookReceiver) -> None:
    make(batch_size=3, body={"count": "{{ count }}", "items": "{{ records }}"}).deliver([RECORDS])
    assert [request.json for request in receiver.requests] == [
        {"count": 3, "items": RECORDS[:3]},
        {"count": 2, "items": RECORDS[3:]},
    ]


def test_a_text_body_is_sent_as_rendered_with_its_content_type(
    make: Make, receiver: WebhookReceiver
) -> None:
    make(
        body="id={{ record.id }}&name={{ record.name | urlencode }}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ).deliver([RECORDS[:1]])
    (request,) = receiver.requests
    assert request.body == b"id=1&name=order%201"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"


def test_a_template_failing_on_a_record_dead_letters_it(
    make: Make, receiver: WebhookReceiver
) -> None:
    records = [{"id": 1, "customer": {"name": "Ann"}}, {"id": 2}]
    result = make(body={"name": "{{ record.customer.name }}"}).deliver([records])
    assert result.delivered == 1
    (rejection,) = result.rejections
    assert rejection.record == {"id": 2}
    assert "template cannot render for records 1-1" in rejection.reason
    assert "customer" in rejection.reason
    assert [request.json for request in receiver.requests] == [{"name": "Ann"}]


def test_a_line_break_into_a_header_is_refused(make: Make, receiver: WebhookReceiver) -> None:
    records = [{"id": 1, "ref": "a\r\nX-Injected: yes"}]
    result = make(headers={"X-Ref": "{{ record.ref }}"}).deliver([records])
    assert "line break" in result.rejections[0].reason
    assert receiver.requests == []


# -- signing ------------------------------------------------------------------------------------


def test_signatures_verify_with_the_reference_library(
    make: Make, define_conn: Callable[..., str]
) -> None:
    secret = new_secret()
    with running_receiver(secrets=[secret]) as receiver:
        signing = {"connection": _signing_conn(define_conn, secret)}
        result = make(url=receiver.url(), signing=signing, batch_size=2).deliver([RECORDS])
        assert result.delivered == 5
        assert [request.signature_error for request in receiver.requests] == [None] * 3
        assert [request.status for request in receiver.requests] == [200] * 3
        assert all(
            request.headers["webhook-signature"].startswith("v1,") for request in receiver.requests
        )


def test_rotation_signs_with_every_secret(make: Make, define_conn: Callable[..., str]) -> None:
    old, new = new_secret(), new_secret()
    with running_receiver(secrets=[old]) as receiver:
        signing = {"connection": _signing_conn(define_conn, f"{old} {new}")}
        make(url=receiver.url(), signing=signing).deliver([RECORDS[:1]])
        (request,) = receiver.requests
        assert request.status == 200
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        # a receiver that already switched to the new secret accepts it too
        Webhook(new).verify(request.body, request.headers)
        with pytest.raises(Exception, match="No matching signature"):
            Webhook(new_secret()).verify(request.body, request.headers)


def test_a_receiver_with_another_secret_refuses_the_batch(
    make: Make, define_conn: Callable[..., str]
) -> None:
    with running_receiver(secrets=[new_secret()]) as receiver:
        signing = {"connection": _signing_conn(define_conn, new_secret())}
        result = make(url=receiver.url(), signing=signing).deliver([RECORDS[:1]])
        assert result.delivered == 0
        assert result.rejections[0].reason.startswith("HTTP 401 Unauthorized")
        assert "No matching signature" in result.rejections[0].reason


@pytest.mark.parametrize(
    "password",
    ["plain-text-secret", "whsec_====", "whsec_%%%%-secret"],
    ids=["text", "empty", "bad"],
)
def test_a_bad_signing_secret_is_a_clear_error(
    make: Make, define_conn: Callable[..., str], password: str
) -> None:
    conn_id = _signing_conn(define_conn, password)
    with pytest.raises(DestinationError) as caught:
        make(signing={"connection": conn_id}).deliver([RECORDS[:1]])
    message = str(caught.value)
    assert f"signing connection {conn_id!r}" in message
    assert "route 'orders': destination 'hook'" in message
    assert "secret" not in message.replace("signing secret", "")  # never the secret itself


# -- retries ------------------------------------------------------------------------------------


def test_retriable_answers_are_retried_with_the_same_id(
    make: Make, receiver: WebhookReceiver, sleeps: list[float]
) -> None:
    in_three_seconds = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=3), True)
    receiver.script(
        Reply(500),
        Reply(429, {"Retry-After": "2"}),
        Reply(503, {"Retry-After": in_three_seconds}),
        Reply(408),
    )
    result = make(max_attempts=5).deliver([RECORDS[:1]])
    assert result.delivered == 1
    assert [request.status for request in receiver.requests] == [500, 429, 503, 408, 200]
    assert len({request.webhook_id for request in receiver.requests}) == 1
    assert len(receiver.unique()) == 1
    jitter, seconds, date, backoff = sleeps
    assert 0 <= jitter <= 0.5  # full jitter: uniform below base * 2**0
    assert seconds == 2.0
    assert 1.0 <= date <= 3.0  # an HTTP-date, counted from now
    assert 0 <= backoff <= 4.0  # below base * 2**3


def test_a_timeout_is_retried_and_the_receiver_sees_the_same_id(
    make: Make, receiver: WebhookReceiver, sleeps: list[float]
) -> None:
    receiver.script(Reply(200, delay=1.5))
    result = make(timeout=0.3).deliver([RECORDS[:1]])
    assert result.delivered == 1
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id  # it got both: the id lets it drop one
    assert len(receiver.unique()) == 1 and len(sleeps) == 1


def test_connect_errors_are_retried_then_the_delivery_fails(
    make: Make, sleeps: list[float]
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    destination = make(url=f"http://127.0.0.1:{port}/hook?token=s3cr3t-token-42", max_attempts=3)
    with pytest.raises(WebhookUnavailableError) as caught:
        destination.deliver([RECORDS[:1]])
    message = str(caught.value)
    assert isinstance(caught.value, RetriableError)
    assert "ConnectError" in message and "gave up after 3 attempts" in message
    assert "route 'orders': destination 'hook'" in message
    assert "s3cr3t-token-42" not in message and "s3cr3t-token-42" not in destination.target()
    assert len(sleeps) == 2


def test_5xx_until_attempts_run_out_fails_retriably(
    make: Make, receiver: WebhookReceiver, sleeps: list[float]
) -> None:
    receiver.default = Reply(503, body="maintenance")
    with pytest.raises(WebhookUnavailableError, match="503 Service Unavailable: maintenance"):
        make(max_attempts=2).deliver([RECORDS[:1]])
    assert len(receiver.requests) == 2


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_other_4xx_refuse_every_record_of_the_batch(
    make: Make, receiver: WebhookReceiver, sleeps: list[float], status: int
) -> None:
    receiver.script(Reply(), Reply(status, body="invalid: " + "x" * 2000))
    result = make(batch_size=2).deliver([RECORDS])
    assert result.delivered == 3
    assert [rejection.record for rejection in result.rejections] == RECORDS[2:4]
    reason = result.rejections[0].reason
    assert reason.startswith(f"HTTP {status} ")
    assert "invalid: xxx" in reason and len(reason) < 700  # the response body, truncated
    assert len(receiver.requests) == 3 and sleeps == []  # never retried


def test_a_redirect_is_not_followed(make: Make, receiver: WebhookReceiver) -> None:
    receiver.script(Reply(302, {"Location": receiver.url("/elsewhere?key=abcdef")}))
    with pytest.raises(WebhookRedirectError) as caught:
        make().deliver([RECORDS[:1]])
    assert isinstance(caught.value, FatalError)  # Airflow does not retry the task
    assert "302 Found" in str(caught.value) and "/elsewhere" in str(caught.value)
    assert "key=abcdef" not in str(caught.value)
    assert [request.path for request in receiver.requests] == ["/hook"]


# -- connections, secrets -----------------------------------------------------------------------


def test_an_http_connection_gives_url_auth_and_headers(
    make: Make, receiver: WebhookReceiver, define_conn: Callable[..., str]
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    conn_id = define_conn(
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": receiver.port,
                "schema": "http",
                "login": "dataflow",
                "password": "pw-secret-4711",
                "extra": {"headers": {"X-Api-Key": "key-secret-0815", "X-Env": "prod"}},
            }
        ),
        "api",
    )
    destination = make(url="v1/orders", connection=conn_id, headers={"x-env": "test"})
    destination.deliver([RECORDS[:1]])
    (request,) = receiver.requests
    assert request.path == "/v1/orders"
    assert request.headers["authorization"] == "Basic ZGF0YWZsb3c6cHctc2VjcmV0LTQ3MTE="
    assert request.headers["x-api-key"] == "key-secret-0815"
    assert request.headers["x-env"] == "test"  # the route's headers win over the connection's
    target = destination.target()
    assert target.startswith(f"POST http://127.0.0.1:{receiver.port}/… (connection {conn_id!r})")
    for secret in ("pw-secret-4711", "key-secret-0815", receiver.url("/v1/orders")):
        assert redact(f"log line with {secret}") == "log line with ***"


def test_a_url_with_user_info_uses_basic_auth_and_is_masked(
    make: Make, receiver: WebhookReceiver
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    # A password unique to this test: the masker is process-wide, and a secret another test
    # masked that is a prefix of this one would leave this one's tail visible.
    password = f"url-password-{uuid.uuid4().hex}"
    url = f"http://bot:{password}@127.0.0.1:{receiver.port}/hook"
    destination = make(url=url)
    destination.deliver([RECORDS[:1]])
    assert receiver.requests[0].headers["authorization"].startswith("Basic ")
    assert password not in destination.target()
    assert redact(f"password {password}") == "password ***"


def test_an_undefined_connection_names_the_remedy(make: Make) -> None:
    with pytest.raises(DestinationError, match="AIRFLOW_CONN_NO_SUCH_API"):
        make(url=None, connection="no_such_api").deliver([RECORDS[:1]])


def test_signing_secrets_are_masked(make: Make, define_conn: Callable[..., str]) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    old, new = new_secret(), new_secret()
    with running_receiver(secrets=[new]) as receiver:
        signing = {"connection": _signing_conn(define_conn, f"{old} {new}")}
        make(url=receiver.url(), signing=signing).deliver([RECORDS[:1]])
    assert redact(f"{old} and {new}") == "*** and ***"


# -- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_spaces_requests(
    make: Make, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = {"now": 0.0}
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock["now"] += seconds

    def limiter(self: WebhookDestination) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit, clock=lambda: clock["now"], sleep=sleep)

    monkeypatch.setattr(WebhookDestination, "rate_limiter", limiter)
    make(rate_limit=2).deliver([RECORDS])
    assert len(receiver.requests) == 5
    assert sum(waits) == pytest.approx(1.5)  # a burst of 2, then one request every 0.5 s


# -- settings -----------------------------------------------------------------------------------

ROUTE = """
source: {{type: file, path: in.jsonl}}
destinations:
  out: {{type: webhook, {settings}}}
"""


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("url: https://example.com/hook, retries: 3", "retries"),
        ("method: POST", "needs url or connection"),
        ("connection: api, url: https://example.com/x", "the path appended"),
        ("url: ftp://example.com/x", "absolute http:// or https:// URL"),
        ("url: /relative", "absolute http:// or https:// URL"),
        ("url: https://example.com, method: GET", "method"),
        ("url: https://example.com, headers: {webhook-id: x}", "set by the destination"),
        ("url: https://example.com, headers: {Idempotency-Key: x}", "set by the destination"),
        ('url: https://example.com, headers: {"bad name": x}', "not a valid HTTP header"),
        ("url: https://example.com, batch_size: 0", "batch_size"),
        ("url: https://example.com, timeout: 0", "timeout"),
        ("url: https://example.com, max_attempts: 0", "max_attempts"),
        ('url: https://example.com, body: "{{ record.id "', "invalid template"),
        ("url: https://example.com, signing: {secret: x}", "signing"),
    ],
)
def test_invalid_settings_are_refused_at_validate(settings: str, expected: str) -> None:
    with pytest.raises(RouteConfigError) as caught:
        load_route_text(ROUTE.format(settings=settings), "orders.route.yaml")
    assert expected in str(caught.value)


def test_valid_settings_and_defaults() -> None:
    route = load_route_text(
        ROUTE.format(settings="url: https://example.com/hook"), "orders.route.yaml"
    )
    settings = route.config.destinations["out"]
    assert isinstance(settings, WebhookSettings)
    assert (settings.method, settings.batch_size, settings.max_attempts) == ("POST", 1, 5)
    assert (settings.timeout, settings.allow_private_networks, settings.body) == (30, False, None)


# -- signing.py against the reference library ----------------------------------------------------


def test_our_signatures_match_the_reference_library() -> None:
    from airflow_dataflow.destinations import signing

    secret, body = new_secret(), b'{"id": 1, "note": "\xc3\xa9t\xc3\xa9"}'
    keys = signing.decode_secrets(secret)
    sent_at = int(time.time())
    reference = Webhook(secret).sign(
        "msg_1", datetime.fromtimestamp(sent_at, timezone.utc), body.decode()
    )
    assert signing.signature(keys[0], "msg_1", sent_at, body) == reference
    header = signing.signature_header(
        [*signing.decode_secrets(new_secret()), *keys], "msg_1", sent_at, body
    )
    assert signing.verify(keys, "msg_1", str(sent_at), body, header)
    assert not signing.verify(keys, "msg_2", str(sent_at), body, header)  # another id
    assert not signing.verify(keys, "msg_1", str(sent_at), body + b" ", header)  # another body
    stale = signing.signature_header(keys, "msg_1", sent_at - 600, body)
    assert not signing.verify(keys, "msg_1", str(sent_at - 600), body, stale)  # too old
    assert signing.decode_secret(secret.removeprefix("whsec_")) == keys[0]  # prefix optional
