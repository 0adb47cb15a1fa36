"""Shared helpers of the HubSpot tests: the fake server, its connection, reading a source."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dataflow.connectors.base import Cursor, SourceWarning
from airflow_dataflow.connectors.hubspot import HubSpotConnector, HubSpotSettings
from airflow_dataflow.context import RunContext
from tests.fakes.hubspot import CLIENT_ID, CLIENT_SECRET, PRIVATE_TOKEN, REFRESH_TOKEN, FakeHubSpot


def connection_json(fake: FakeHubSpot, *, oauth: bool = False, **extra: Any) -> str:
    """An Airflow connection (JSON) to ``fake``: a private-app token, or OAuth extras."""
    extras: dict[str, Any] = {"search_requests_per_second": 1000, **extra}
    conn: dict[str, Any] = {"conn_type": "hubspot", "host": fake.url}
    if oauth:
        extras.update(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN)
    else:
        conn["password"] = PRIVATE_TOKEN
    conn["extra"] = extras
    return json.dumps(conn)


def connect(
    monkeypatch: pytest.MonkeyPatch, fake: FakeHubSpot, *, oauth: bool = False, **extra: Any
) -> str:
    """Define a connection to ``fake`` under a fresh id; the id."""
    conn_id = f"hubspot_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(fake, oauth=oauth, **extra)
    )
    return conn_id


def connector(conn_id: str, cursor: Cursor | None = None, **settings: Any) -> HubSpotConnector:
    model = HubSpotSettings(type="hubspot", connection=conn_id, **settings)
    return HubSpotConnector(model, RunContext(route="crm"), cursor)


def read(conn_id: str, cursor: Cursor | None = None, **settings: Any) -> list[dict[str, Any]]:
    """The records a ``hubspot`` source with ``settings`` reads (warnings are left out)."""
    items = connector(conn_id, cursor, **settings).read()
    return [item for item in items if not isinstance(item, SourceWarning)]


def ids(records: list[dict[str, Any]]) -> list[int]:
    return [int(record["id"]) for record in records]


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot() as server:
        yield server


@pytest.fixture
def deals_fake() -> Iterator[FakeHubSpot]:
    """The fake with the test data set: 25,000 deals, 12,000 modified at one millisecond."""
    with FakeHubSpot(deals=25_000) as server:
        yield server
