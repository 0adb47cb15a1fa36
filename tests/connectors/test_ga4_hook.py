"""GA4Hook: the real Data API client of a google_cloud_platform connection."""

from __future__ import annotations

import json

from google.analytics.data_v1beta import BetaAnalyticsDataClient, RunReportRequest
from google.auth.credentials import AnonymousCredentials

from airflow_dataflow.hooks.ga4 import ANALYTICS_READONLY_SCOPE, GA4Hook
from tests.connectors import ga4_support
from tests.fakes.ga4 import PROPERTY_ID, FakeGA4
from tests.support.databases import DefineConn

ga4 = ga4_support.ga4  # fixtures
ga4_conn = ga4_support.ga4_conn


def test_builds_the_rest_client_from_the_connection(ga4: FakeGA4, ga4_conn: str) -> None:
    hook = GA4Hook(gcp_conn_id=ga4_conn)
    client = hook.client
    assert isinstance(client, BetaAnalyticsDataClient)
    assert client.transport.kind == "rest"
    assert isinstance(hook.get_credentials(), AnonymousCredentials)  # extra is_anonymous
    assert client.api_endpoint == ga4.url  # extra api_endpoint
    assert hook.client is client  # one client per hook


def test_run_report_talks_to_the_endpoint(ga4: FakeGA4, ga4_conn: str) -> None:
    request = RunReportRequest(
        property=f"properties/{PROPERTY_ID}",
        dimensions=[{"name": "country"}],
        metrics=[{"name": "sessions"}],
        date_ranges=[{"start_date": "2024-03-01", "end_date": "2024-03-01"}],
    )
    response = GA4Hook(gcp_conn_id=ga4_conn).run_report(request)
    assert response.row_count == 4
    assert ga4.requests[0].property_id == PROPERTY_ID


def test_scopes_default_to_analytics_readonly(ga4_conn: str, define_conn: DefineConn) -> None:
    assert list(GA4Hook(gcp_conn_id=ga4_conn).scopes) == [ANALYTICS_READONLY_SCOPE]
    scoped = define_conn(
        json.dumps({"conn_type": "google_cloud_platform", "extra": {"scope": "a, b"}})
    )
    assert list(GA4Hook(gcp_conn_id=scoped).scopes) == ["a", "b"]
