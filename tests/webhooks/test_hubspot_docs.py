"""The Python examples of docs/connectors/hubspot.md run as written."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from airflow_dataflow.operators.hubspot_webhooks import HubSpotWebhookSubscriptionsOperator
from airflow_dataflow.webhooks.hubspot_signature import sign_v3

PAGE = Path(__file__).resolve().parents[2] / "docs" / "connectors" / "hubspot.md"
SECRET = "app-client-secret"


def python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)


def run_example(marker: str) -> dict[str, Any]:
    (code,) = [block for block in python_examples() if marker in block]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return namespace


def test_the_subscriptions_dag_example_builds_the_operator() -> None:
    namespace = run_example("HubSpotWebhookSubscriptionsOperator(")
    [dag] = [value for value in namespace.values() if type(value).__name__ == "DAG"]
    task = dag.get_task("subscribe")
    assert isinstance(task, HubSpotWebhookSubscriptionsOperator)
    assert [s.describe() for s in task.subscriptions] == [
        "deal.creation",
        "deal.propertyChange:amount",
        "contact.deletion",
    ]


def test_the_signature_example_accepts_a_signed_request_and_refuses_a_forged_one() -> None:
    accept = run_example("def accept(")["accept"]
    url = "https://airflow.example.com/dataflow/webhooks/deals"
    body = b'[{"objectId": 1, "subscriptionType": "deal.creation"}]'
    stamp = int(time.time() * 1000)
    headers = {
        "X-HubSpot-Signature-v3": sign_v3(SECRET, "POST", url, body, stamp),
        "X-HubSpot-Request-Timestamp": str(stamp),
    }
    assert accept("POST", url, body, headers, SECRET) is True
    assert accept("POST", url, body + b" ", headers, SECRET) is False
