"""Google connections: the google provider's credentials plus an ``api_endpoint`` extra.

The GA4 and BigQuery connectors build their clients from an ordinary ``google_cloud_platform``
connection (key file, key JSON, workload identity, ``is_anonymous``: whatever the google
provider's ``GoogleBaseHook`` understands). The extra ``api_endpoint`` (a full URL) points the
client at another endpoint, e.g. a local emulator; without it the client talks to Google.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
    from google.api_core.client_options import ClientOptions
    from google.cloud.bigquery import Client

API_ENDPOINT_EXTRA = "api_endpoint"


def api_endpoint(hook: GoogleBaseHook) -> str | None:
    """The connection's ``api_endpoint`` extra (plain or ``extra__google_cloud_platform__``-prefixed)."""
    value = hook._get_field(API_ENDPOINT_EXTRA, None)
    return str(value).rstrip("/") if value else None


def client_options(hook: GoogleBaseHook) -> ClientOptions:
    """Client options for a Google API client: the connection's endpoint when it sets one."""
    return hook.get_client_options(api_endpoint_override=api_endpoint(hook))


def bigquery_client(
    conn_id: str, location: str | None, where: str, error: Callable[[str], Exception]
) -> tuple[Client, str | None]:
    """A BigQuery client with the connection's credentials, project and endpoint, and the
    job location (``location``, else the connection's); problems raised as ``error(message)``
    naming ``where`` (the route and setting)."""
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from google.cloud import bigquery

    located = {"location": location} if location else {}
    try:
        hook = BigQueryHook(gcp_conn_id=conn_id, use_legacy_sql=False, **located)
        credentials = hook.get_credentials()
        project = hook.project_id
    except AirflowNotFoundException as exc:
        raise error(
            f"{where} is not a defined Airflow connection; define it with `airflow "
            f"connections add {conn_id} --conn-type google_cloud_platform ...` or the "
            f"environment variable AIRFLOW_CONN_{conn_id.upper()}"
        ) from exc
    except Exception as exc:  # the provider raises many kinds for bad key files
        raise error(f"{where} gives no credentials: {exc}") from exc
    if not project:
        raise error(f"{where} names no project: set its extra project (the project jobs run in)")
    client = bigquery.Client(
        project=project,
        credentials=credentials,
        client_options=client_options(hook),
        location=hook.location,
    )
    return client, hook.location
