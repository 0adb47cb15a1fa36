"""``HubSpotWebhookSubscriptionsOperator`` against the fake HubSpot's webhooks v3 API."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dataflow.hooks.hubspot_limits import HubSpotError
from airflow_dataflow.operators.hubspot_webhooks import HubSpotWebhookSubscriptionsOperator
from airflow_dataflow.webhooks.hubspot_subscriptions import (
    Subscription,
    WebhookSubscriptionError,
)
from tests.fakes.hubspot import APP_ID, DEVELOPER_API_KEY, PRIVATE_TOKEN, FakeHubSpot


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot() as server:
        yield server


def connect(monkeypatch: pytest.MonkeyPatch, fake: FakeHubSpot, **extra: Any) -> str:
    conn_id = f"hubspot_app_{uuid.uuid4().hex[:8]}"
    extras = {"developer_api_key": DEVELOPER_API_KEY, "app_id": APP_ID, **extra}
    conn = {"conn_type": "hubspot", "host": fake.url, "password": PRIVATE_TOKEN, "extra": extras}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def run(conn_id: str, **kwargs: Any) -> dict[str, Any]:
    operator = HubSpotWebhookSubscriptionsOperator(
        task_id="subscribe", hubspot_conn_id=conn_id, **kwargs
    )
    return operator.execute(context={})


def test_creates_the_subscriptions_and_sets_the_target_url(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(
        connect(monkeypatch, fake),
        subscriptions=["deal.creation", "deal.propertyChange:amount"],
        target_url="https://airflow.example.com/dataflow/webhooks/deals",
        max_concurrent_requests=5,
    )
    assert set(result["created"]) == {"deal.creation", "deal.propertyChange:amount"}
    assert fake.webhook_settings[APP_ID]["targetUrl"].endswith("/dataflow/webhooks/deals")
    assert fake.webhook_settings[APP_ID]["throttling"] == {"maxConcurrentRequests": 5}
    stored = {(s["eventType"], s["propertyName"], s["active"]) for s in fake.subscriptions[APP_ID]}
    assert stored == {("deal.creation", None, True), ("deal.propertyChange", "amount", True)}
    assert all("hapikey=" in r.url for r in fake.requests if r.kind == "webhooks")


def test_running_again_creates_nothing_and_activates_paused_ones(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, fake)
    wanted = ["deal.creation", {"event_type": "contact.deletion"}]
    first = run(conn_id, subscriptions=wanted)
    paused = fake.subscriptions[APP_ID][1]
    paused["active"] = False
    second = run(conn_id, subscriptions=wanted)
    assert second["created"] == {}
    assert second["activated"] == {"contact.deletion": paused["id"]}
    assert second["unchanged"] == {"deal.creation": first["created"]["deal.creation"]}
    assert len(fake.subscriptions[APP_ID]) == 2 and paused["active"] is True


def test_subscriptions_the_route_does_not_name_are_kept(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, fake)
    run(conn_id, subscriptions=["ticket.creation"])
    run(conn_id, subscriptions=["deal.creation"])
    assert {s["eventType"] for s in fake.subscriptions[APP_ID]} == {
        "ticket.creation",
        "deal.creation",
    }


def test_hubspots_refusal_names_the_app_and_the_event(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WebhookSubscriptionError) as caught:
        run(connect(monkeypatch, fake), subscriptions=["deal.propertyChange"])
    message = str(caught.value)
    assert f"app {APP_ID}: subscribing to deal.propertyChange" in message
    assert "HTTP 400" in message and "propertyName is required" in message


def test_a_wrong_developer_key_is_reported_with_hubspots_message(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, fake, developer_api_key="not-the-key")
    with pytest.raises(WebhookSubscriptionError, match=r"HTTP 401.*API key provided is invalid"):
        run(conn_id, subscriptions=["deal.creation"])


def test_an_unknown_app_is_reported(fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WebhookSubscriptionError, match="app 7: listing subscriptions: HTTP 404"):
        run(connect(monkeypatch, fake), subscriptions=["deal.creation"], app_id=7)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"developer_api_key": None}, "no extra developer_api_key"),
        ({"app_id": None}, "the extra app_id (a number) is missing"),
        ({"app_id": "my-app"}, "is 'my-app', not a number"),
    ],
)
def test_missing_connection_extras_are_named(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], expected: str
) -> None:
    conn_id = connect(monkeypatch, fake, **extra)
    with pytest.raises(HubSpotError, match=re.escape(expected)):
        run(conn_id, subscriptions=["deal.creation"])
    assert fake.count("webhooks") == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("deal.creation", Subscription("deal.creation")),
        ("deal.propertyChange:amount", Subscription("deal.propertyChange", "amount")),
        (
            {"event_type": "deal.creation", "active": False},
            Subscription("deal.creation", active=False),
        ),
    ],
)
def test_subscription_specs(spec: str | dict[str, Any], expected: Subscription) -> None:
    assert Subscription.parse(spec) == expected


def test_a_subscription_spec_with_unknown_keys_is_refused() -> None:
    with pytest.raises(WebhookSubscriptionError, match=r"unknown keys: \['event'\]"):
        HubSpotWebhookSubscriptionsOperator(task_id="t", subscriptions=[{"event": "deal.creation"}])
