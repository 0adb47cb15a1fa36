"""``GA4Hook``: the Google Analytics Data API (v1beta) client of a Google Cloud connection.

The connection is the google provider's ``google_cloud_platform`` type: key file, key JSON,
workload identity or ``is_anonymous`` (anonymous credentials, for an emulator), and the
provider's ``scope`` extra (default here: ``analytics.readonly``, which the Data API needs).
The extra ``api_endpoint`` (a full URL such as ``http://127.0.0.1:8085``) points the client at
another endpoint (``hooks/google.py``). The client always uses the REST transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

from airflow_dataflow.hooks.google import client_options

if TYPE_CHECKING:
    from google.analytics.data_v1beta import (
        BetaAnalyticsDataClient,
        RunReportRequest,
        RunReportResponse,
    )

ANALYTICS_READONLY_SCOPE = "https://www.googleapis.com/auth/analytics.readonly"
REQUEST_TIMEOUT_SECONDS = 120.0


class GA4Hook(GoogleBaseHook):
    """Owns one Google connection and one ``BetaAnalyticsDataClient`` (REST) built from it."""

    conn_name_attr = "gcp_conn_id"
    default_conn_name = "google_cloud_default"
    conn_type = "google_cloud_platform"
    hook_name = "Google Analytics 4 Data API"

    def __init__(self, gcp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(gcp_conn_id=gcp_conn_id, **kwargs)

    @property
    def scopes(self) -> Sequence[str]:
        """The connection's ``scope`` extra (comma-separated), else ``analytics.readonly``."""
        scope = self._get_field("scope", None)
        if scope:
            return [part.strip() for part in str(scope).split(",") if part.strip()]
        return [ANALYTICS_READONLY_SCOPE]

    @cached_property
    def client(self) -> BetaAnalyticsDataClient:
        """The Data API client: this connection's credentials and endpoint, REST transport."""
        from airflow.providers.google.common.consts import CLIENT_INFO
        from google.analytics.data_v1beta import BetaAnalyticsDataClient

        return BetaAnalyticsDataClient(
            credentials=self.get_credentials(),
            transport="rest",
            client_options=client_options(self),
            client_info=CLIENT_INFO,
        )

    def run_report(
        self, request: RunReportRequest, *, timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> RunReportResponse:
        """One ``properties/{id}:runReport`` call, not retried (the caller owns retries)."""
        return self.client.run_report(request=request, retry=None, timeout=timeout)
