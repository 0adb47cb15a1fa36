"""The webhook destination through the delivery ledger: kills, retries and refusals.

Each test stages a route's records (extract, route) and runs the deliver phase as a plain
function, as the ``deliver_<name>`` task does; the receiver on loopback checks every
signature and counts unique deliveries by ``webhook-id``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_dataflow.destinations.webhook import WebhookDestination, WebhookUnavailableError
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.state.ledger import ledger_entries
from airflow_dataflow.state.migrate import state_engine
from airflow_dataflow.state.store import StateStore
from tests.fakes.webhook_receiver import Reply, WebhookReceiver, new_secret, running_receiver
from tests.support.faults import deliver_and_get_killed, record_waits
from tests.support.routes import stage_partition

RECORDS = 200
BATCH = 10
SECRET = new_secret()


pytestmark = pytest.mark.usefixtures("own_state_store")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver(secrets=[SECRET]) as started:
        yield started


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    return record_waits(monkeypatch, WebhookDestination, seed=1)


@pytest.fixture
def webhook(receiver: WebhookReceiver, define_conn: Callable[..., str]) -> Callable[..., str]:
    """The destination's flow-style YAML: the receiver's URL, signed, private networks allowed."""
    signing = define_conn(json.dumps({"conn_type": "generic", "password": SECRET}), "signing")

    def settings(extra: str = "") -> str:
        return (
            f"{{type: webhook, url: '{receiver.url()}', batch_size: {BATCH}, "
            f"signing: {{connection: {signing}}}, allow_private_networks: true{extra}}}"
        )

    return settings


def _delivered_ids(receiver: WebhookReceiver) -> list[int]:
    return sorted(record["id"] for record in receiver.records())


def test_each_batch_is_one_signed_request_keyed_by_its_ledger_entry(
    tmp_path: Path, receiver: WebhookReceiver, webhook: Callable[..., str]
) -> None:
    route, context, partition = stage_partition(tmp_path, webhook(), "run-1", RECORDS)
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["rejected"], outcome["batches"]) == (RECORDS, 0, 20)
    assert all(request.signature_error is None for request in receiver.requests)
    ledger_keys = {entry["batch_key"] for entry in ledger_entries(state_engine(), "orders")}
    assert set(receiver.unique()) == ledger_keys
    assert _delivered_ids(receiver) == list(range(RECORDS))
    # a retried task sends nothing again
    assert deliver(route, "out", context, partition)["skipped"] == 20
    assert len(receiver.requests) == 20


def test_killed_after_some_batches_the_retry_delivers_each_record_once(
    tmp_path: Path, receiver: WebhookReceiver, webhook: Callable[..., str]
) -> None:
    route, context, partition = stage_partition(tmp_path, webhook(), "run-1", RECORDS)
    deliver_and_get_killed(route, context, partition, target="webhook:_WebhookSender.send", after=7)
    assert len(receiver.requests) == 7  # the 7th arrived; the process died before noting it
    sending = [e for e in ledger_entries(state_engine(), "orders") if e["status"] == "sending"]
    assert [entry["batch_key"] for entry in sending] == [receiver.requests[6].webhook_id]

    outcome = deliver(route, "out", context, partition)  # the task's retry, same run id

    assert (outcome["delivered"], outcome["skipped"]) == (RECORDS, 6)
    ids = [request.webhook_id for request in receiver.requests]
    assert len(ids) == 21  # the batch in doubt was sent again ...
    assert ids[7] == ids[6]  # ... with the same webhook-id, so the receiver drops it
    assert len(receiver.unique()) == 20
    assert _delivered_ids(receiver) == list(range(RECORDS))  # each record exactly once
    assert all(request.signature_error is None for request in receiver.requests)


def test_attempts_run_out_the_task_fails_and_its_retry_sends_the_rest(
    tmp_path: Path, receiver: WebhookReceiver, webhook: Callable[..., str], sleeps: list[float]
) -> None:
    route, context, partition = stage_partition(
        tmp_path, webhook(", max_attempts: 3"), "run-1", RECORDS
    )
    receiver.script(Reply(), Reply(), Reply(503), Reply(502, {"Retry-After": "7"}), Reply(500))
    with pytest.raises(WebhookUnavailableError, match="gave up after 3 attempts") as caught:
        deliver(route, "out", context, partition)
    assert "500 Internal Server Error" in str(caught.value)
    assert sleeps[1] == 7.0 and len(sleeps) == 2
    statuses = [entry["status"] for entry in ledger_entries(state_engine(), "orders")]
    assert statuses == ["delivered", "delivered", "failed"]

    outcome = deliver(route, "out", context, partition)

    assert (outcome["delivered"], outcome["skipped"]) == (RECORDS, 2)
    assert _delivered_ids(receiver) == list(range(RECORDS))
    # the failed batch kept its webhook-id through all its attempts and the retry
    third = [r.webhook_id for r in receiver.requests[2:6]]
    assert len(set(third)) == 1


def test_refused_batches_become_dead_letters_with_the_response(
    tmp_path: Path, receiver: WebhookReceiver, webhook: Callable[..., str], sleeps: list[float]
) -> None:
    route, context, partition = stage_partition(tmp_path, webhook(), "run-1", RECORDS)
    receiver.script(Reply(), Reply(422, body='{"error": "amount must be positive"}'))
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["rejected"]) == (RECORDS - BATCH, BATCH)
    letters = StateStore.open().dead_letters("orders")
    assert sorted(letter["record"]["id"] for letter in letters) == list(range(10, 20))
    reason = letters[0]["reason"]
    assert reason.startswith("HTTP 422 Unprocessable Entity")
    assert "amount must be positive" in reason
    assert sleeps == []  # a 4xx is never retried
    again = deliver(route, "out", context, partition)
    assert (again["delivered"], again["rejected"], again["skipped"]) == (RECORDS - BATCH, BATCH, 20)


def test_per_batch_sends_one_summary(
    tmp_path: Path, receiver: WebhookReceiver, webhook: Callable[..., str]
) -> None:
    route, context, partition = stage_partition(
        tmp_path, webhook(", per: batch, sample_size: 2"), "run-1", RECORDS
    )
    outcome = deliver(route, "out", context, partition)
    assert outcome["delivered"] == RECORDS
    (request,) = receiver.requests
    assert request.json == [
        {
            "count": RECORDS,
            "records": [
                {"id": 0, "amount": 0, "note": "order 0"},
                {"id": 1, "amount": 1, "note": "order 1"},
            ],
        }
    ]
