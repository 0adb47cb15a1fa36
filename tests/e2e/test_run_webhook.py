"""The route example of docs/destinations/webhook.md, run by ``airflow-dataflow run``.

The example runs as written, except that its connections point at the receiver on loopback and
``allow_private_networks: true`` is added (the receiver is on 127.0.0.1, which the SSRF guard
refuses by default).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.webhook_receiver import WebhookReceiver, new_secret, running_receiver
from tests.support.cli import CliResult, run_route
from tests.support.routes import doc_route_example, write_jsonl

SECRET = new_secret()
ORDERS = [
    {
        "id": n,
        "status": "paid" if n % 3 else "open",
        "amount": n * 10,
        "customer": {"email": f"c{n}@example.com"},
    }
    for n in range(1, 31)
]
PAID = [order for order in ORDERS if order["status"] == "paid"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver(secrets=[SECRET]) as started:
        yield started


def _write_route(tmp_path: Path, dataflow: Callable[..., CliResult], api: str) -> Path:
    """The page's example (private networks allowed), its orders, and connections ``api``."""
    route = yaml.safe_load(doc_route_example("webhook.md"))
    route["destinations"]["crm"]["allow_private_networks"] = True
    path = tmp_path / "paid_orders.route.yaml"
    path.write_text(yaml.safe_dump(route, sort_keys=False), encoding="utf-8")
    write_jsonl(tmp_path / "data" / "orders.jsonl", ORDERS)
    dataflow.connect("crm_api", api)  # type: ignore[attr-defined]
    dataflow.connect(  # type: ignore[attr-defined]
        "crm_signing", json.dumps({"conn_type": "generic", "password": SECRET})
    )
    return path


def test_the_documented_route_delivers_signed_batches(
    dataflow: Callable[..., CliResult], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    api = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": receiver.port,
        "schema": "http",
        "extra": {"headers": {"X-Api-Key": "api-key-e2e-1234"}},
    }
    path = _write_route(tmp_path, dataflow, json.dumps(api))

    summary = run_route(dataflow, path)

    assert summary["counts"]["read"] == len(ORDERS)
    assert summary["counts"]["destinations"] == {"crm": len(PAID)}
    requests = receiver.requests
    assert [request.status for request in requests] == [200, 200]  # 20 paid orders, 10 each
    for request in requests:
        assert request.signature_error is None  # checked by the standardwebhooks library
        assert (request.method, request.path) == ("POST", "/v1/orders/import")
        assert request.headers["x-api-key"] == "api-key-e2e-1234"
        assert request.headers["x-dataflow-run"] == summary["run_id"]
        assert request.headers["idempotency-key"] == request.webhook_id
    assert [request.json["count"] for request in requests] == [10, 10]
    assert {request.json["source"] for request in requests} == {"paid_orders"}
    sent = [order for request in requests for order in request.json["orders"]]
    assert sent == [
        {"id": o["id"], "amount": o["amount"], "email": o["customer"]["email"]} for o in PAID
    ]
    assert not (tmp_path / "dead").exists()

    # A second run is a new delivery of the same records: same ids, so the receiver drops them.
    again = run_route(dataflow, path)
    assert again["run_id"] != summary["run_id"]
    assert again["counts"]["destinations"] == {"crm": len(PAID)}
    assert len(receiver.requests) == 4
    assert len(receiver.unique()) == 2


def test_a_refused_batch_becomes_dead_letters_in_the_run_summary(
    dataflow: Callable[..., CliResult], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    from tests.fakes.webhook_receiver import Reply

    path = _write_route(tmp_path, dataflow, f"http://127.0.0.1:{receiver.port}/http")
    receiver.script(Reply(), Reply(422, body='{"error": "unknown customer"}'))

    summary = run_route(dataflow, path)

    assert summary["counts"]["destinations"] == {"crm": 10}
    assert summary["counts"]["rejected"] == {"crm": 10}
    listed = dataflow("dead-letters", "list", str(path), "--json")
    assert listed.returncode == 0, listed.output[-3000:]
    letters = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
    assert sorted(letter["record"]["id"] for letter in letters) == [o["id"] for o in PAID[10:]]
    assert {letter["destination"] for letter in letters} == {"crm"}
    assert letters[0]["reason"].startswith("HTTP 422 Unprocessable Entity")
    assert "unknown customer" in letters[0]["reason"]
