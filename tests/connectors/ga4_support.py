"""Shared fixtures and helpers of the GA4 connector tests (imported by each test module)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_dataflow.connectors.base import BadRecord, Cursor, SourceWarning
from airflow_dataflow.connectors.ga4 import GA4Connector, GA4Settings
from airflow_dataflow.context import RunContext
from tests.fakes.ga4 import PROPERTY_ID, FakeGA4, fake_ga4
from tests.support.databases import DefineConn

RUN_DATE = "2024-03-20"  # the run's ds: relative dates resolve against it


@pytest.fixture
def ga4() -> Iterator[FakeGA4]:
    with fake_ga4() as server:
        yield server


@pytest.fixture
def ga4_conn(ga4: FakeGA4, define_conn: DefineConn) -> str:
    """An Airflow connection (JSON, type google_cloud_platform) to the fake, anonymous."""
    return define_conn(json.dumps(ga4.connection()), "ga4")


def settings(conn_id: str, **overrides: Any) -> GA4Settings:
    values: dict[str, Any] = {
        "type": "ga4",
        "connection": conn_id,
        "property_id": PROPERTY_ID,
        "dimensions": ["date", "country"],
        "metrics": ["sessions", "engagementRate"],
        "date_range": {"start": "2024-03-01", "end": "2024-03-03"},
    }
    values.update(overrides)
    return GA4Settings.model_validate(values)


class Sleeps(list[float]):
    """An injected ``sleep``: records each pause instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def connector(
    conn_id: str,
    cursor: Cursor | None = None,
    *,
    sleep: Sleeps | None = None,
    page_size: int = 10_000,
    ds: str = RUN_DATE,
    **overrides: Any,
) -> GA4Connector:
    return GA4Connector(
        settings(conn_id, **overrides),
        RunContext(route="ga4_daily", ds=ds),
        cursor,
        sleep=sleep if sleep is not None else Sleeps(),
        page_size=page_size,
    )


def read(conn_id: str, cursor: Cursor | None = None, **options: Any) -> list[Any]:
    return list(connector(conn_id, cursor, **options).read())


def records(items: list[Any]) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)]


def warnings(items: list[Any]) -> list[str]:
    return [item.message for item in items if isinstance(item, SourceWarning)]


def bad(items: list[Any]) -> list[BadRecord]:
    return [item for item in items if isinstance(item, BadRecord)]
