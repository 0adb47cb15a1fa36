"""``HubSpotWebhookSubscriptionsOperator``: a HubSpot app subscribes to the events a route needs.

A thin operator over ``HubSpotHook`` (the developer API key and app id from the connection's
extras) and ``webhooks.hubspot_subscriptions.sync_subscriptions`` (idempotent: run it in a
set-up DAG or before a route that is triggered by HubSpot's webhooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_dataflow.webhooks.hubspot_subscriptions import (
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    Subscription,
    sync_subscriptions,
)


class HubSpotWebhookSubscriptionsOperator(BaseOperator):
    """Registers webhook ``subscriptions`` (``"deal.creation"``, ``"deal.propertyChange:amount"``
    or ``{event_type, property_name, active}``) for the app of ``hubspot_conn_id``; with
    ``target_url`` also points the app's webhooks there. Returns what it created, activated and
    found already in place (subscription ids by event)."""

    template_fields: Sequence[str] = ("target_url",)
    ui_color = "#ff7a59"

    def __init__(
        self,
        *,
        subscriptions: Sequence[str | dict[str, Any]],
        hubspot_conn_id: str = "hubspot_default",
        app_id: int | None = None,
        target_url: str | None = None,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.subscriptions = [Subscription.parse(spec) for spec in subscriptions]
        self.hubspot_conn_id = hubspot_conn_id
        self.app_id = app_id
        self.target_url = target_url
        self.max_concurrent_requests = max_concurrent_requests

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_dataflow.hooks.hubspot import HubSpotHook

        hook = HubSpotHook(self.hubspot_conn_id)
        app_id = self.app_id if self.app_id is not None else hook.app_id()
        client = hook.client(api_key=hook.developer_api_key())
        result = sync_subscriptions(
            client.webhooks,
            app_id,
            self.subscriptions,
            target_url=self.target_url,
            max_concurrent_requests=self.max_concurrent_requests,
        )
        self.log.info(
            "HubSpot app %s webhooks: created %s, activated %s, already there %s",
            app_id,
            sorted(result.created) or "none",
            sorted(result.activated) or "none",
            sorted(result.unchanged) or "none",
        )
        return result.as_dict()
