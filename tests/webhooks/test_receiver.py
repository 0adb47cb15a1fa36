"""The webhook receiver app (``POST /dataflow/webhooks/{name}``): every answer of the contract."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from airflow_dataflow.destinations.signing import decode_secrets, signature_header
from airflow_dataflow.state.migrate import upgrade
from airflow_dataflow.webhooks.hubspot_signature import sign_v3
from airflow_dataflow.webhooks.receipts import ReceiptLog
from airflow_dataflow.webhooks.receiver import Receiver, create_app

TOKEN = "s3cret-token"
HUBSPOT_SECRET = "hubspot-client-secret"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard webhooks key").decode()
PAYLOAD = [{"objectId": 42, "subscriptionType": "deal.creation"}]


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def __call__(self, name: str, payload: Any, received_at: datetime) -> bool:
        self.events.append((name, payload))
        return True


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: Recorded
) -> Iterator[TestClient]:
    def connection(verify: str, secret: str, **extra: Any) -> str:
        extra = {"verify": verify, **extra}
        return json.dumps({"conn_type": "dataflow_webhook", "password": secret, "extra": extra})

    monkeypatch.setenv("AIRFLOW_CONN_DATAFLOW_WEBHOOK_ORDERS", connection("token", TOKEN))
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATAFLOW_WEBHOOK_SMALL", connection("token", TOKEN, max_bytes=64)
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATAFLOW_WEBHOOK_DEALS", connection("hubspot_v3", HUBSPOT_SECRET)
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATAFLOW_WEBHOOK_EVENTS", connection("standard", STANDARD_SECRET)
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    receiver = Receiver(first_time=ReceiptLog(engine).first_time, record=recorded)
    yield TestClient(create_app(receiver), base_url="https://airflow.example.com")


def post(client: TestClient, name: str, body: bytes, **headers: str) -> Any:
    return client.post(f"/webhooks/{name}", content=body, headers=headers)


def body_of(payload: Any = PAYLOAD) -> bytes:
    return json.dumps(payload).encode()


def hubspot_headers(body: bytes, stamp: float | None = None, secret: str = HUBSPOT_SECRET) -> dict:
    millis = int((stamp or time.time()) * 1000)
    url = "https://airflow.example.com/webhooks/deals"
    return {
        "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, millis),
        "X-HubSpot-Request-Timestamp": str(millis),
        "Content-Type": "application/json",
    }


def standard_headers(body: bytes, msg_id: str = "msg_1", stamp: float | None = None) -> dict:
    sent = int(stamp or time.time())
    header = signature_header(decode_secrets(STANDARD_SECRET), msg_id, sent, body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(sent), "webhook-signature": header}


def test_a_request_with_the_token_is_accepted_and_recorded(
    client: TestClient, recorded: Recorded
) -> None:
    answer = post(client, "orders", body_of(), **{"X-Dataflow-Token": TOKEN})
    assert answer.status_code == 202
    assert answer.json() == {"accepted": True, "webhook": "orders", "triggered": True}
    assert recorded.events == [("orders", PAYLOAD)]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing x-dataflow-token header"),
        ({"X-Dataflow-Token": "guess"}, "wrong x-dataflow-token"),
    ],
)
def test_a_missing_or_wrong_token_is_401(
    client: TestClient,
    recorded: Recorded,
    headers: dict[str, str],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = post(client, "orders", body_of(), **headers)
    assert answer.status_code == 401 and answer.json()["detail"] == reason
    assert recorded.events == []
    assert f"webhook 'orders' refused (401): {reason}" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("name", ["nobody", "bad%20name", "a.b"])
def test_an_unknown_webhook_is_404(client: TestClient, recorded: Recorded, name: str) -> None:
    answer = post(client, name, body_of(), **{"X-Dataflow-Token": TOKEN})
    assert answer.status_code == 404 and recorded.events == []


def test_a_body_that_is_not_json_is_400(client: TestClient, recorded: Recorded) -> None:
    answer = post(client, "orders", b"<xml/>", **{"X-Dataflow-Token": TOKEN})
    assert answer.status_code == 400 and "not JSON" in answer.json()["detail"]
    assert recorded.events == []


def test_a_body_over_max_bytes_is_413(client: TestClient, recorded: Recorded) -> None:
    answer = post(client, "small", body_of({"text": "x" * 100}), **{"X-Dataflow-Token": TOKEN})
    assert answer.status_code == 413 and recorded.events == []


def test_a_body_over_max_bytes_without_content_length_is_413(
    client: TestClient, recorded: Recorded
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        yield b"x" * 100
        yield b'"}'

    answer = client.post("/webhooks/small", content=chunks(), headers={"X-Dataflow-Token": TOKEN})
    assert answer.status_code == 413 and recorded.events == []


def test_the_same_event_twice_is_409(client: TestClient, recorded: Recorded) -> None:
    headers = {"X-Dataflow-Token": TOKEN, "X-Dataflow-Event-Id": "evt-1"}
    assert post(client, "orders", body_of(), **headers).status_code == 202
    assert post(client, "orders", body_of({"other": 1}), **headers).status_code == 409
    headers["X-Dataflow-Event-Id"] = "evt-2"
    assert post(client, "orders", body_of(), **headers).status_code == 202
    assert len(recorded.events) == 2


def test_without_an_event_id_the_same_body_again_is_409(client: TestClient) -> None:
    headers = {"X-Dataflow-Token": TOKEN}
    assert post(client, "orders", body_of(), **headers).status_code == 202
    assert post(client, "orders", body_of(), **headers).status_code == 409
    assert post(client, "orders", body_of({"n": 2}), **headers).status_code == 202


def test_a_hubspot_signed_request_is_accepted(client: TestClient, recorded: Recorded) -> None:
    body = body_of()
    assert post(client, "deals", body, **hubspot_headers(body)).status_code == 202
    assert recorded.events == [("deals", PAYLOAD)]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (lambda body: hubspot_headers(body, secret="wrong"), "does not match"),
        (lambda body: hubspot_headers(body, stamp=time.time() - 301), "stale request"),
        (lambda body: {"Content-Type": "application/json"}, "missing"),
    ],
)
def test_a_badly_signed_stale_or_unsigned_hubspot_request_is_401(
    client: TestClient, recorded: Recorded, headers: Any, reason: str
) -> None:
    body = body_of()
    answer = post(client, "deals", body, **headers(body))
    assert answer.status_code == 401 and reason in answer.json()["detail"]
    assert recorded.events == []


def test_a_replayed_hubspot_request_is_409(client: TestClient) -> None:
    body = body_of()
    headers = hubspot_headers(body)
    assert post(client, "deals", body, **headers).status_code == 202
    assert post(client, "deals", body, **headers).status_code == 409


def test_standard_webhooks_signed_stale_and_replayed(
    client: TestClient, recorded: Recorded
) -> None:
    body = body_of()
    assert post(client, "events", body, **standard_headers(body)).status_code == 202
    assert post(client, "events", body, **standard_headers(body)).status_code == 409
    stale = standard_headers(body, "msg_2", stamp=time.time() - 600)
    assert post(client, "events", body, **stale).status_code == 401
    forged = standard_headers(body, "msg_3")
    assert post(client, "events", body + b" ", **forged).status_code == 401
    assert len(recorded.events) == 1


def test_the_openapi_document_lists_the_answers(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    answers = document["paths"]["/webhooks/{name}"]["post"]["responses"]
    assert {"202", "400", "401", "404", "409", "413"} <= set(answers)


def test_the_committed_openapi_document_is_the_apps() -> None:
    from airflow_dataflow.plugins.app import openapi_document

    committed = (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text()
    assert committed == openapi_document(), "docs/openapi.json is stale: make openapi"
