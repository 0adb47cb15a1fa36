"""Names shared by the webhook receiver, the ``webhook`` connector and route schedules."""

from __future__ import annotations

CONNECTION_PREFIX = "dataflow_webhook_"


def webhook_asset_uri(name: str) -> str:
    """The Asset the receiver updates for webhook ``name``; routes subscribe to it."""
    return f"dataflow://webhooks/{name}"


def webhook_asset_name(name: str) -> str:
    return f"{CONNECTION_PREFIX}{name}"
