"""Google connections: the google provider's credentials plus an ``api_endpoint`` extra.

The GA4 and BigQuery connectors build their clients from an ordinary ``google_cloud_platform``
connection (key file, key JSON, workload identity, ``is_anonymous``: whatever the google
provider's ``GoogleBaseHook`` understands). The extra ``api_endpoint`` (a full URL) points the
client at another endpoint, e.g. a local emulator; without it the client talks to Google.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    from google.api_core.client_options import ClientOptions

API_ENDPOINT_EXTRA = "api_endpoint"


def api_endpoint(hook: GoogleBaseHook) -> str | None:
    """The connection's ``api_endpoint`` extra (plain or ``extra__google_cloud_platform__``-prefixed)."""
    value = hook._get_field(API_ENDPOINT_EXTRA, None)
    return str(value).rstrip("/") if value else None


def client_options(hook: GoogleBaseHook) -> ClientOptions:
    """Client options for a Google API client: the connection's endpoint when it sets one."""
    return hook.get_client_options(api_endpoint_override=api_endpoint(hook))
