"""The ``webhook`` connector: the payloads of the webhook events that triggered the run.

A route with ``schedule: {webhook: NAME}`` runs when the webhook receiver accepted a request
for ``NAME`` (an Asset event of ``dataflow://webhooks/NAME`` whose extra holds the payload).
Its ``source: {type: webhook, name: NAME}`` reads those payloads: one record per payload, or
one per element of a payload that is a JSON array (HubSpot sends arrays of events). When
Airflow queued several events before the run started, all of them are read, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field

from airflow_dataflow.connectors.base import Connector, ConnectorSettings, SourceWarning
from airflow_dataflow.webhooks.names import webhook_asset_uri


class WebhookSourceSettings(ConnectorSettings):
    """Settings of ``source: {type: webhook}``."""

    type: Literal["webhook"]
    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="the webhook (connection dataflow_webhook_NAME) whose payloads are read",
    )


class WebhookConnector(Connector):
    """Reads the triggering webhook events' payloads."""

    settings_model: ClassVar[type[ConnectorSettings]] = WebhookSourceSettings
    settings: WebhookSourceSettings

    def read(self) -> Iterator[Any | SourceWarning]:
        uri = webhook_asset_uri(self.settings.name)
        payloads = [extra.get("payload") for event_uri, extra in self.context.asset_events
                    if event_uri == uri]  # fmt: skip
        if not payloads:
            yield SourceWarning(
                f"webhook {self.settings.name!r}: no webhook event triggered this run (it was "
                "started another way), so there is nothing to read"
            )
        for payload in payloads:
            if isinstance(payload, list):
                yield from payload
            else:
                yield payload
