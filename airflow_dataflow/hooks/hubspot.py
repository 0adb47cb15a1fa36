"""HubSpot: ``HubSpotHook`` owns a ``hubspot`` connection and builds the ``hubspot-api-client``.

Connection (type ``hubspot``): the password is a private-app access token; or the extras
``client_id``, ``client_secret`` and ``refresh_token`` give OAuth 2 (the access token is fetched
with ``POST /oauth/v1/token``, ``grant_type=refresh_token``, refreshed a minute before it
expires, and once more when HubSpot answers 401). The host is the API base URL with scheme and
port (default ``https://api.hubapi.com``); the optional extra ``search_requests_per_second``
(default 5, HubSpot's limit) paces the CRM search endpoints.

Every call goes through one path (``HubSpotHook.call``): paced by ``HubSpotPacer`` (a token
bucket per limit, learning the account's limit from the ``X-HubSpot-RateLimit-*`` headers so it
stays under it instead of meeting 429s), retried by ``RetryPolicy`` on 429, 5xx and connection
errors (``Retry-After`` honoured, else exponential backoff with full jitter). Responses are read
raw (``_preload_content=False``): records keep HubSpot's wire shape (``createdAt``, string ids)
instead of the client's model objects.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_dataflow.destinations.base import mask_in_logs
from airflow_dataflow.destinations.policy import (
    Clock,
    RetryPolicy,
    Sleep,
    is_retriable_status,
    parse_retry_after,
)
from airflow_dataflow.hooks.hubspot_limits import (
    SEARCH_REQUESTS_PER_SECOND,
    HubSpotApiError,
    HubSpotAuthError,
    HubSpotError,
    HubSpotPacer,
    HubSpotResponse,
    HubSpotRetriableError,
    lower_headers,
)

if TYPE_CHECKING:
    import hubspot

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.hubapi.com"
REFRESH_MARGIN_SECONDS = 60.0
REQUEST_TIMEOUT = (10.0, 120.0)  # connect, read (seconds)
OAUTH_EXTRAS = ("client_id", "client_secret", "refresh_token")


# Which client API each call goes through (``hubspot.Client`` discovery paths).
_APIS: dict[str, Callable[[hubspot.Client], Any]] = {
    "objects": lambda client: client.crm.objects.basic_api,
    "search": lambda client: client.crm.objects.search_api,
    "properties": lambda client: client.crm.properties.core_api,
    "schemas": lambda client: client.crm.schemas.core_api,
    "associations": lambda client: client.crm.associations.v4.batch_api,
    "association_pages": lambda client: client.crm.associations.v4.basic_api,
}


class HubSpotHook(BaseHook):
    """A HubSpot account through a ``hubspot`` connection (private-app token or OAuth 2)."""

    conn_name_attr = "hubspot_conn_id"
    default_conn_name = "hubspot_default"
    conn_type = "hubspot"
    hook_name = "HubSpot"

    def __init__(
        self,
        hubspot_conn_id: str = default_conn_name,
        *,
        base_url: str | None = None,
        search_requests_per_second: float | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__()
        self.hubspot_conn_id = hubspot_conn_id
        self._base_url = base_url
        self._search_rate = search_requests_per_second
        self.clock = clock
        self.retry = retry or RetryPolicy(
            max_attempts=6, base_delay=1.0, max_delay=60.0, sleep=sleep
        )
        self._sleep = sleep
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._apis: dict[str, Any] = {}
        self.requests = 0  # sent, retries included
        self.rate_limited = 0  # 429 answers received

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {"host": "API base URL", "password": "Private app access token"},
            "placeholders": {
                "host": DEFAULT_BASE_URL,
                "password": "pat-na1-... (leave empty for OAuth)",
                "extra": json.dumps(
                    {
                        "client_id": "...",
                        "client_secret": "...",
                        "refresh_token": "...",
                        "developer_api_key": "(webhook subscriptions only)",
                        "app_id": "(webhook subscriptions only)",
                    }
                ),
            },
        }

    # -- connection -----------------------------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.hubspot_conn_id)
        except AirflowNotFoundException as exc:
            raise HubSpotError(
                f"Airflow connection {self.hubspot_conn_id!r} is not defined; define it (type "
                f"hubspot, password: a private-app token) with `airflow connections add` or "
                f"AIRFLOW_CONN_{self.hubspot_conn_id.upper()}"
            ) from exc

    @cached_property
    def extras(self) -> dict[str, Any]:
        extra = self.connection.extra_dejson
        return dict(extra) if isinstance(extra, dict) else {}

    @cached_property
    def base_url(self) -> str:
        """The API base URL: the explicit argument, else the connection's host, else HubSpot's."""
        if self._base_url:
            return self._base_url.rstrip("/")
        host = (self.connection.host or "").strip().rstrip("/")
        if not host:
            return DEFAULT_BASE_URL
        if "://" not in host:
            scheme = self.connection.schema if self.connection.schema in ("http", "https") else ""
            host = f"{scheme or 'https'}://{host}"
        port = self.connection.port
        if port and urlsplit(host).port is None:
            host = f"{host}:{port}"
        return host

    @cached_property
    def oauth(self) -> dict[str, str] | None:
        """The OAuth extras (all three), or ``None`` for a private-app token connection."""
        given = {name: self.extras.get(name) for name in OAUTH_EXTRAS}
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise HubSpotError(
                f"connection {self.hubspot_conn_id!r} sets OAuth extras but not "
                f"{', '.join(missing)}; give client_id, client_secret and refresh_token, or a "
                "private-app token as the password"
            )
        mask_in_logs(given["client_secret"])
        mask_in_logs(given["refresh_token"])
        return {name: str(value) for name, value in given.items()}

    def developer_api_key(self) -> str:
        """The app developer's API key (extra ``developer_api_key``): the webhooks APIs need it."""
        key = self.extras.get("developer_api_key")
        if not key:
            raise HubSpotError(
                f"connection {self.hubspot_conn_id!r} has no extra developer_api_key: the "
                "webhooks APIs authenticate with the app developer's API key"
            )
        mask_in_logs(str(key))
        return str(key)

    def app_id(self) -> int:
        """The HubSpot app's id (extra ``app_id``), for its webhook settings and subscriptions."""
        value = self.extras.get("app_id")
        if value is None or not str(value).isdigit():
            raise HubSpotError(
                f"connection {self.hubspot_conn_id!r}: the extra app_id (a number) is "
                f"{'missing' if value is None else f'{value!r}, not a number'}; it names the "
                "HubSpot app whose webhooks are managed"
            )
        return int(value)

    @cached_property
    def pacer(self) -> HubSpotPacer:
        rate = self._search_rate or self.extras.get("search_requests_per_second")
        return HubSpotPacer(
            float(rate or SEARCH_REQUESTS_PER_SECOND), clock=self.clock, sleep=self._sleep
        )

    def access_token(self) -> str:
        """The bearer token: the private-app token, or a current OAuth access token."""
        if self.oauth is None:
            token = self.connection.password
            if not token:
                raise HubSpotError(
                    f"connection {self.hubspot_conn_id!r} has no credentials: set its password "
                    "to a private-app access token, or the extras client_id, client_secret "
                    "and refresh_token (OAuth)"
                )
            mask_in_logs(token)
            return str(token)
        if self._access_token is None or self.clock() >= self._expires_at - REFRESH_MARGIN_SECONDS:
            self.refresh_access_token()
        assert self._access_token is not None
        return self._access_token

    def refresh_access_token(self) -> str:
        """Exchange the refresh token for a new access token (OAuth connections)."""
        if self.oauth is None:
            raise HubSpotError(f"connection {self.hubspot_conn_id!r} is not an OAuth connection")
        oauth = self.oauth

        def send() -> HubSpotResponse:
            api = self._new_client().oauth.tokens_api
            return self._send(
                "OAuth token refresh",
                lambda: api.create_with_http_info(
                    grant_type="refresh_token",
                    client_id=oauth["client_id"],
                    client_secret=oauth["client_secret"],
                    refresh_token=oauth["refresh_token"],
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )

        data = self.retry.call(send, what="HubSpot OAuth token refresh").data or {}
        token = data.get("access_token")
        if not token:
            raise HubSpotError("HubSpot's OAuth token answer carries no access_token")
        mask_in_logs(token)
        self._access_token = str(token)
        self._expires_at = self.clock() + float(data.get("expires_in") or 1800)
        self._apis.clear()  # their configuration carries the old token
        log.info("refreshed the HubSpot access token of %s", self.hubspot_conn_id)
        return self._access_token

    # -- the client -----------------------------------------------------------------------

    def client(self, *, api_key: str | None = None) -> hubspot.Client:
        """A ``hubspot.Client`` pointed at ``base_url``: authenticated with ``api_key`` (a
        developer API key, sent as ``hapikey``; the webhooks APIs) when given, else with the
        connection's access token. Retries are ours (``call``), not urllib3's."""
        if api_key:
            mask_in_logs(api_key)
            return self._new_client(api_key=api_key)
        return self._new_client(access_token=self.access_token())

    def _new_client(self, **credentials: str) -> hubspot.Client:
        import hubspot
        from urllib3.util.retry import Retry

        return hubspot.Client(
            **credentials,
            host=self.base_url,
            retry=Retry(total=0, redirect=0, raise_on_status=False),
        )

    def _api(self, name: str) -> Any:
        """The client API ``name`` (see ``_APIS``), built once per token."""
        if self.oauth is not None:
            self.access_token()  # refreshes (and drops the built APIs) near the expiry
        api = self._apis.get(name)
        if api is None:
            api = self._apis[name] = _APIS[name](self.client())
        return api

    # -- calls ----------------------------------------------------------------------------

    def call(
        self, api: str, method: str, *args: Any, search: bool = False, **kwargs: Any
    ) -> HubSpotResponse:
        """``<api>.<method>_with_http_info(*args, **kwargs)``: paced, retried, JSON decoded.

        A 401 on an OAuth connection refreshes the token and tries once more.
        """
        what = f"HubSpot {api}.{method}"
        return self.retry.call(
            lambda: self._authorized(api, method, args, kwargs, search), what=what
        )

    def _authorized(
        self, api: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], search: bool
    ) -> HubSpotResponse:
        what = f"HubSpot {api}.{method}"
        try:
            return self._paced(api, method, args, kwargs, search)
        except HubSpotAuthError:
            if self.oauth is None:
                raise
            log.warning("%s: 401, refreshing the access token and trying once more", what)
            self.refresh_access_token()
            return self._paced(api, method, args, kwargs, search)

    def _paced(
        self, api: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], search: bool
    ) -> HubSpotResponse:
        self.pacer.before(search=search)
        function = getattr(self._api(api), f"{method}_with_http_info")
        return self._send(
            f"HubSpot {api}.{method}",
            lambda: function(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            ),
        )

    def _send(self, what: str, request: Callable[[], Any]) -> HubSpotResponse:
        """One request; its answer decoded, or the right error raised."""
        import urllib3

        self.requests += 1
        try:
            raw = request()
        except urllib3.exceptions.HTTPError as exc:
            raise HubSpotRetriableError(f"{what}: {self.base_url} unreachable: {exc}") from exc
        except Exception as exc:
            status = getattr(exc, "status", None)
            if not isinstance(status, int) or not hasattr(exc, "body"):
                raise
            raise self._refused(what, exc, status) from exc
        try:
            body = raw.data
            headers = lower_headers(raw.headers.items())
        finally:
            raw.release_conn()
        self.pacer.observe(headers)
        return HubSpotResponse(raw.status, headers, json.loads(body) if body else None)

    def _refused(self, what: str, exc: Any, status: int) -> Exception:
        """The error for HubSpot's non-2xx answer ``exc`` (an ``ApiException``)."""
        headers = lower_headers((exc.headers or {}).items())
        self.pacer.observe(headers)
        if status == 0:  # the client's own failure (SSL, ...)
            return HubSpotRetriableError(f"{what}: {exc.reason}")
        if status == 401:
            return HubSpotAuthError(what, status, exc.body, headers)
        if is_retriable_status(status):
            self.rate_limited += status == 429
            retry_after = parse_retry_after(headers.get("retry-after"))
            error = HubSpotApiError(what, status, exc.body, headers)
            return HubSpotRetriableError(str(error), retry_after=retry_after)
        return HubSpotApiError(what, status, exc.body, headers)
