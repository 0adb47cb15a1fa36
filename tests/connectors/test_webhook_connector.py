"""The ``webhook`` connector reads the payloads of the events that triggered the run."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.connectors.base import SourceWarning
from airflow_dataflow.connectors.webhook import WebhookConnector, WebhookSourceSettings
from airflow_dataflow.context import RunContext


def read(*events: tuple[str, dict[str, Any]]) -> list[Any]:
    settings = WebhookSourceSettings(type="webhook", name="deals")
    return list(WebhookConnector(settings, RunContext(route="r", asset_events=events)).read())


def test_each_payload_is_a_record_and_arrays_are_one_record_per_element() -> None:
    records = read(
        ("dataflow://webhooks/deals", {"payload": [{"id": 1}, {"id": 2}]}),
        ("dataflow://webhooks/other", {"payload": {"id": 99}}),
        ("dataflow://webhooks/deals", {"payload": {"id": 3}}),
    )
    assert records == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_a_run_not_triggered_by_the_webhook_reads_nothing_and_says_so() -> None:
    [warning] = read()
    assert isinstance(warning, SourceWarning)
    assert "no webhook event triggered this run" in warning.message
