"""Registering a HubSpot app's webhook subscriptions (``/webhooks/v3/{appId}/...``).

``sync_subscriptions`` makes the app subscribe to every wanted event, idempotently: it lists
what the app has, creates what is missing, re-activates what is paused, and leaves the rest
(subscriptions the route does not name are kept: other tools may own them). With a
``target_url`` it first sets the app's webhook settings (where HubSpot sends the events, and
how many requests it may send at once). The webhooks APIs authenticate with the app
developer's API key (``hapikey``), not with the portal's token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_dataflow.errors import DataflowError

DEFAULT_MAX_CONCURRENT_REQUESTS = 10
T = TypeVar("T")


class WebhookSubscriptionError(DataflowError):
    """HubSpot refused a webhook settings or subscription call."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One event an app subscribes to: ``deal.creation``, or ``deal.propertyChange`` of a
    property (``property_name`` is required for property changes)."""

    event_type: str
    property_name: str | None = None
    active: bool = True

    @classmethod
    def parse(cls, spec: str | dict[str, Any]) -> Subscription:
        """``"deal.creation"``, ``"deal.propertyChange:amount"`` or a mapping of the fields."""
        if isinstance(spec, str):
            event, _, prop = spec.partition(":")
            return cls(event.strip(), prop.strip() or None)
        unknown = set(spec) - {"event_type", "property_name", "active"}
        if unknown or "event_type" not in spec:
            raise WebhookSubscriptionError(
                f"webhook subscription {spec!r}: give event_type (and property_name, active); "
                f"unknown keys: {sorted(unknown)}"
            )
        return cls(
            str(spec["event_type"]), spec.get("property_name"), bool(spec.get("active", True))
        )

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.event_type, self.property_name or None)

    def describe(self) -> str:
        return f"{self.event_type}:{self.property_name}" if self.property_name else self.event_type


@dataclass(slots=True)
class SyncResult:
    """What ``sync_subscriptions`` did: subscription ids by the event they are for."""

    created: dict[str, str] = field(default_factory=dict)
    activated: dict[str, str] = field(default_factory=dict)
    unchanged: dict[str, str] = field(default_factory=dict)
    target_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "activated": self.activated,
            "unchanged": self.unchanged,
            "target_url": self.target_url,
        }


def sync_subscriptions(
    webhooks: Any,
    app_id: int,
    wanted: Sequence[Subscription],
    *,
    target_url: str | None = None,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
) -> SyncResult:
    """Make app ``app_id`` subscribe to ``wanted`` through ``webhooks`` (a
    ``hubspot.Client().webhooks`` authenticated with the developer API key)."""
    from hubspot.webhooks import (
        SettingsChangeRequest,
        SubscriptionCreateRequest,
        SubscriptionPatchRequest,
        ThrottlingSettings,
    )

    result = SyncResult()
    if target_url:
        request = SettingsChangeRequest(
            target_url=target_url,
            throttling=ThrottlingSettings(max_concurrent_requests=max_concurrent_requests),
        )
        _call(
            f"app {app_id}: setting the target URL",
            webhooks.settings_api.configure,
            app_id,
            request,
        )
        result.target_url = target_url
    listed = _call(
        f"app {app_id}: listing subscriptions", webhooks.subscriptions_api.get_all, app_id
    )
    existing = {(s.event_type, s.property_name or None): s for s in listed.results or []}
    for subscription in dict.fromkeys(wanted):
        name = subscription.describe()
        current = existing.get(subscription.key)
        if current is None:
            created = _call(
                f"app {app_id}: subscribing to {name}",
                webhooks.subscriptions_api.create,
                app_id,
                SubscriptionCreateRequest(
                    event_type=subscription.event_type,
                    property_name=subscription.property_name,
                    active=subscription.active,
                ),
            )
            result.created[name] = str(created.id)
        elif subscription.active and not current.active:
            _call(
                f"app {app_id}: activating {name}",
                webhooks.subscriptions_api.update,
                int(current.id),
                app_id,
                SubscriptionPatchRequest(active=True),
            )
            result.activated[name] = str(current.id)
        else:
            result.unchanged[name] = str(current.id)
    return result


def _call(what: str, function: Callable[..., T], *args: Any) -> T:
    from hubspot.webhooks import ApiException

    try:
        return function(*args)
    except ApiException as exc:
        raise WebhookSubscriptionError(
            f"HubSpot webhooks, {what}: HTTP {exc.status}: {exc.body or exc.reason}"
        ) from exc
