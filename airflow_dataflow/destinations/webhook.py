"""The ``webhook`` destination: records as JSON HTTP requests, signed, retried, SSRF-guarded.

- One request per batch of ``batch_size`` records (one ledger batch each): with ``batch_size``
  1 the body is the record object, otherwise a JSON array; a ``body`` template replaces it.
- ``Idempotency-Key`` and ``webhook-id`` are the batch's ledger key (route, destination,
  target, position and content; never the run): the same on every retry and re-run, so a
  receiver that deduplicates by it gets each batch once. ``webhook-timestamp`` is the time of
  each attempt, and ``webhook-signature`` signs it (Standard Webhooks, ``signing.py``).
- Connect errors, timeouts, 408, 429 and 5xx are retried by ``RetryPolicy`` (backoff with full
  jitter, or the server's ``Retry-After``); when attempts run out the task fails. Any other
  4xx refuses the batch for good: each of its records becomes a dead letter naming the status
  and the start of the response body. A 3xx fails the delivery (redirects are not followed).
- Requests go only to public addresses unless ``allow_private_networks`` (``ssrf.py``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import httpx
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_dataflow.destinations.base import (
    Batch,
    BatchSender,
    DeliveryResult,
    Destination,
    DestinationSettings,
    Rejection,
    mask_in_logs,
    rechunk,
)
from airflow_dataflow.destinations.policy import (
    RateLimiter,
    RetryPolicy,
    is_retriable_status,
    parse_retry_after,
)
from airflow_dataflow.destinations.signing import SigningSecretError, decode_secrets
from airflow_dataflow.destinations.signing import signature_header as sign
from airflow_dataflow.destinations.ssrf import AddressGuard, AddressRefusedError, PinnedTransport
from airflow_dataflow.errors import DestinationError, FatalError, RetriableError
from airflow_dataflow.jsonable import dumps
from airflow_dataflow.templating import (
    TemplateText,
    check_templates,
    is_template,
    render_text,
    render_value,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

RESPONSE_EXCERPT = 500
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
# Extras HttpHook reads as options; any other top-level extra key is not a header here.
_HTTP_HOOK_OPTIONS = frozenset(
    {
        "stream",
        "cert",
        "proxies",
        "proxy",
        "timeout",
        "verify_ssl",
        "allow_redirects",
        "max_redirects",
        "trust_env",
        "check_response",
        "srv_lookup",
        "auth_type",
        "auth_kwargs",
    }
)


class WebhookUnavailableError(DestinationError, RetriableError):
    """The endpoint could not take a batch now (connect error, timeout, 408, 429, 5xx)."""


class WebhookRedirectError(DestinationError, FatalError):
    """The endpoint answered with a redirect, which is never followed."""


class WebhookSigning(BaseModel):
    """``signing:``: Standard Webhooks signatures with the secrets of a connection."""

    model_config = ConfigDict(extra="forbid")
    connection: str = Field(
        min_length=1,
        description="Airflow connection (any type) whose password is the secret, whsec_...; "
        "several secrets separated by spaces sign with each (rotation)",
    )


class WebhookSettings(DestinationSettings):
    """Settings of ``{type: webhook}``."""

    type: Literal["webhook"]  # type: ignore[assignment]
    url: TemplateText | None = Field(
        default=None,
        description="http(s) URL (a template over route, destination, run_id, ds, params); "
        "with connection: the path appended to the connection's URL",
    )
    connection: str | None = Field(
        default=None,
        min_length=1,
        description="Airflow http connection: host, schema (http/https), port, login/password "
        "(basic auth), extra {headers: {...}, verify: bool or CA bundle path}",
    )
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, TemplateText] = Field(
        default_factory=dict, description="request headers; values are templates"
    )
    body: str | dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="template of the body (text, or a YAML value whose strings are "
        "templates, sent as JSON); default: the record, or the list of records when batched",
    )
    batch_size: int = Field(
        default=1, ge=1, description="records per request; above 1 the body is a JSON array"
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds, per attempt")
    max_attempts: int = Field(default=5, ge=1, description="attempts per batch, the first included")
    signing: WebhookSigning | None = None
    allow_private_networks: bool = Field(
        default=False,
        description="allow loopback, private, link-local and other non-public addresses",
    )

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the destination itself")
        return value

    @field_validator("body")
    @classmethod
    def _check_body(cls, value: Any) -> Any:
        return check_templates(value)

    @model_validator(mode="after")
    def _check_url(self) -> WebhookSettings:
        if self.url is None and self.connection is None:
            raise ValueError("webhook needs url or connection")
        if self.url is None or is_template(self.url):
            return self
        if self.connection is not None:
            if "://" in self.url:
                raise ValueError(
                    "with connection, url is the path appended to the connection's URL, "
                    "not a full URL"
                )
            return self
        check_url(self.url)
        return self


def check_url(url: str) -> httpx.URL:
    """``url`` parsed; ValueError unless it is an absolute http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("url must be an absolute http:// or https:// URL")
    return parsed


@dataclass
class _Endpoint:
    """Where requests go and what the connection adds to them."""

    url: httpx.URL
    display: str
    auth: httpx.BasicAuth | None = None
    headers: dict[str, str] = field(default_factory=dict)
    verify: bool | str = True


class WebhookDestination(Destination):
    """Sends records to an HTTP endpoint, one request per batch, through the delivery ledger."""

    settings_model = WebhookSettings
    settings: WebhookSettings

    def target(self) -> str:
        """Method and endpoint (without secrets), plus a digest telling full URLs apart."""
        endpoint = self._endpoint
        digest = hashlib.sha256(str(endpoint.url).encode("utf-8")).hexdigest()[:12]
        return f"{self.settings.method} {endpoint.display} #{digest}"

    def open_batches(self, batches: Iterable[Batch]) -> BatchSender:
        return _WebhookSender(self, self._client(), self._messages(), self.retry_policy())

    def deliver(self, batches: Iterable[Batch]) -> DeliveryResult:
        """Every record, without the ledger (a dead-letter destination): same keys, same sends."""
        from airflow_dataflow.state.ledger import batch_key

        target = self.target()
        result = DeliveryResult(locations=[target])
        offset = 0
        with self.open_batches(batches) as sender:
            for index, batch in enumerate(rechunk(batches, self.settings.batch_size)):
                lines = (dumps(record).encode("utf-8") for record in batch)
                key = batch_key(self.context.route, self.name, target, index, lines)
                rejections = sender.send(batch, key, "direct", offset) or []
                result.rejections.extend(rejections)
                result.delivered += len(batch) - len(rejections)
                offset += len(batch)
        return result

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.settings.max_attempts)

    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit)

    # -- where and how -----------------------------------------------------------------------

    @cached_property
    def _endpoint(self) -> _Endpoint:
        variables = self.context.template_vars(destination=self.name)
        path = render_text(self.settings.url, variables) if self.settings.url else ""
        if self.settings.connection is None:
            return self._url_endpoint(path)
        return self._connection_endpoint(self.settings.connection, path)

    def _url_endpoint(self, url: str) -> _Endpoint:
        try:
            parsed = check_url(url)
        except ValueError as exc:
            raise self._error(f"the rendered url {exc}") from None
        if parsed.userinfo or parsed.query:
            mask_in_logs(url)
        auth = None
        if parsed.username:
            auth = httpx.BasicAuth(parsed.username, parsed.password or "")
            mask_in_logs(parsed.password)
            parsed = parsed.copy_with(username=None, password=None)
        return _Endpoint(url=parsed, display=_display(parsed, with_path=True), auth=auth)

    def _connection_endpoint(self, conn_id: str, path: str) -> _Endpoint:
        conn = self._connection(conn_id, "connection")
        url = _join(_base_url(conn), path)
        try:
            parsed = check_url(url)
        except ValueError as exc:
            raise self._error(f"connection {conn_id!r} does not give a usable URL: {exc}") from None
        mask_in_logs(url)
        mask_in_logs(conn.password)
        extra = conn.extra_dejson
        headers = self._extra_headers(conn_id, extra)
        for value in headers.values():
            mask_in_logs(value)
        auth = httpx.BasicAuth(conn.login, conn.password or "") if conn.login else None
        display = f"{_display(parsed, with_path=False)} (connection {conn_id!r})"
        verify = extra.get("verify", True)
        if not isinstance(verify, bool | str):
            raise self._error(f"connection {conn_id!r}: extra verify must be true, false or a path")
        return _Endpoint(url=parsed, display=display, auth=auth, headers=headers, verify=verify)

    def _extra_headers(self, conn_id: str, extra: dict[str, Any]) -> dict[str, str]:
        headers = extra.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in headers.items()
        ):
            raise self._error(f"connection {conn_id!r}: extra headers must map names to strings")
        ignored = sorted(set(extra) - {"headers", "verify"} - _HTTP_HOOK_OPTIONS)
        if ignored:
            log.warning(
                "destination %s: connection %s: extra keys %s are not sent; put request headers "
                "under the extra key 'headers'",
                self.name,
                conn_id,
                ", ".join(ignored),
            )
        return headers

    def _signing_keys(self) -> list[bytes]:
        if self.settings.signing is None:
            return []
        conn_id = self.settings.signing.connection
        conn = self._connection(conn_id, "signing.connection")
        if not conn.password:
            raise self._error(f"signing connection {conn_id!r} has no password (the secret)")
        for secret in conn.password.split():
            mask_in_logs(secret)
        try:
            return decode_secrets(conn.password)
        except SigningSecretError as exc:
            raise self._error(f"signing connection {conn_id!r}: {exc}") from None

    def _connection(self, conn_id: str, setting: str) -> Connection:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise self._error(
                f"{setting} names Airflow connection {conn_id!r}, which is not defined; define "
                f"it with `airflow connections add {conn_id} ...` or the environment variable "
                f"AIRFLOW_CONN_{conn_id.upper()}"
            ) from None

    def _client(self) -> httpx.Client:
        endpoint = self._endpoint
        verify: bool | ssl.SSLContext = endpoint.verify is not False
        if isinstance(endpoint.verify, str):
            verify = ssl.create_default_context(cafile=endpoint.verify)
        guard = AddressGuard(allow_private_networks=self.settings.allow_private_networks)
        return httpx.Client(
            transport=PinnedTransport(guard, httpx.HTTPTransport(verify=verify)),
            timeout=httpx.Timeout(self.settings.timeout),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would resolve the name itself
            auth=endpoint.auth,
        )

    def _messages(self) -> _Messages:
        return _Messages(self, self._signing_keys())

    def _error(self, message: str) -> DestinationError:
        return DestinationError(f"{self.where}: {message}")

    @property
    def where(self) -> str:
        return f"route {self.context.route!r}: destination {self.name!r}"


@dataclass
class _Message:
    """One batch's request: body and headers, signed anew at each attempt."""

    body: bytes
    headers: dict[str, str]
    msg_id: str
    keys: list[bytes]

    def headers_at(self, timestamp: int) -> dict[str, str]:
        headers = {**self.headers, "webhook-timestamp": str(timestamp)}
        if self.keys:
            headers["webhook-signature"] = sign(self.keys, self.msg_id, timestamp, self.body)
        return headers


class _RenderError(Exception):
    """A template cannot render for these records: they become dead letters."""


class _Messages:
    """Renders the body and headers of a batch (templates compiled once, cached)."""

    def __init__(self, destination: WebhookDestination, keys: list[bytes]) -> None:
        self.settings = destination.settings
        self.context = destination.context
        self.name = destination.name
        self.endpoint_headers = destination._endpoint.headers
        self.keys = keys

    def build(self, batch: Batch, key: str) -> _Message:
        variables = self._variables(batch)
        try:
            body = self._body(batch, variables)
            headers = self._headers(variables)
        except (TemplateError, TypeError, ValueError, RecursionError) as exc:
            raise _RenderError(f"{type(exc).__name__}: {exc}") from exc
        headers.update({"Idempotency-Key": key, "webhook-id": key})
        return _Message(body=body, headers=headers, msg_id=key, keys=self.keys)

    def _variables(self, batch: Batch) -> dict[str, Any]:
        extra: dict[str, Any] = {"records": batch, "count": len(batch)}
        if self.settings.batch_size == 1:
            extra["record"] = batch[0]
        return self.context.template_vars(destination=self.name, **extra)

    def _body(self, batch: Batch, variables: dict[str, Any]) -> bytes:
        template = self.settings.body
        if template is None:
            payload: Any = batch[0] if self.settings.batch_size == 1 else batch
            return dumps(payload).encode("utf-8")
        if isinstance(template, str):
            return render_text(template, variables).encode("utf-8")
        return dumps(render_value(template, variables)).encode("utf-8")

    def _headers(self, variables: dict[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.endpoint_headers}
        for name, template in self.settings.headers.items():
            value = render_text(template, variables)
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} would contain a line break")
            for existing in [known for known in headers if known.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        return headers


class _WebhookSender(BatchSender):
    """One request per batch, retried by the policy; a 4xx refuses the batch's records."""

    def __init__(
        self,
        destination: WebhookDestination,
        client: httpx.Client,
        messages: _Messages,
        policy: RetryPolicy,
    ) -> None:
        self.destination = destination
        self.client = client
        self.messages = messages
        self.policy = policy
        self.limiter = destination.rate_limiter()
        self.method = destination.settings.method
        self.url = destination._endpoint.url
        self.display = destination._endpoint.display

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> list[Rejection] | None:
        what = f"records {offset}-{offset + len(batch) - 1}"
        try:
            message = self.messages.build(batch, key)
        except _RenderError as exc:
            reason = f"the body or a header template cannot render for {what}: {exc}"
            return [Rejection(record, reason) for record in batch]
        response = self.policy.call(
            lambda: self._attempt(message, what), what=f"{self.method} of {what}"
        )
        return self._outcome(response, batch, what)

    def _attempt(self, message: _Message, what: str) -> httpx.Response:
        self.limiter.acquire()
        request = self.client.build_request(
            self.method,
            self.url,
            content=message.body,
            headers=message.headers_at(int(time.time())),
        )
        try:
            response = self.client.send(request)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise self._unavailable(f"{type(exc).__name__}: {exc}", what) from exc
        except AddressRefusedError as exc:
            raise AddressRefusedError(
                f"{self.destination.where}: {self.method} {self.display}: {exc}"
            ) from None
        except httpx.HTTPError as exc:
            raise self.destination._error(
                f"{self.method} {self.display} for {what} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if is_retriable_status(response.status_code):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise self._unavailable(_status(response), what, retry_after=retry_after)
        return response

    def _unavailable(
        self, problem: str, what: str, retry_after: float | None = None
    ) -> WebhookUnavailableError:
        log.warning(
            "%s: %s %s for %s: attempt failed: %s",
            self.destination.where,
            self.method,
            self.display,
            what,
            problem,
        )
        return WebhookUnavailableError(
            f"{self.destination.where}: {self.method} {self.display} for {what}: {problem}. "
            f"Retriable: a task retry or the next run sends this batch again with the same "
            f"webhook-id, and skips the batches already delivered",
            retry_after=retry_after,
        )

    def _outcome(self, response: httpx.Response, batch: Batch, what: str) -> list[Rejection] | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            raise WebhookRedirectError(
                f"{self.destination.where}: {self.method} {self.display} for {what} answered "
                f"{status} {response.reason_phrase} (to {_location(response)}): redirects are "
                f"not followed; set the destination's URL to the final address"
            )
        reason = f"HTTP {_status(response)} from {self.display}"
        return [Rejection(record, reason) for record in batch]

    def close(self) -> None:
        self.client.close()


def _status(response: httpx.Response) -> str:
    """``"400 Bad Request: <start of the body>"``, whitespace collapsed."""
    text = " ".join(response.text.split())
    if len(text) > RESPONSE_EXCERPT:
        text = text[:RESPONSE_EXCERPT] + "…"
    status = f"{response.status_code} {response.reason_phrase}".strip()
    return f"{status}: {text}" if text else status


def _location(response: httpx.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        return "no Location"
    try:
        return _display(httpx.URL(location), with_path=True)
    except httpx.InvalidURL:
        return "an invalid Location"


def _display(url: httpx.URL, *, with_path: bool) -> str:
    """The URL without user info and query (and without its path when that may be secret)."""
    origin = f"{url.scheme}://{url.netloc.decode('ascii').rpartition('@')[2]}" if url.scheme else ""
    path = url.path if with_path else ("/…" if url.path not in ("", "/") else "/")
    return f"{origin}{path}{'?…' if url.query else ''}"


def _base_url(conn: Connection) -> str:
    """The connection's base URL, read as ``HttpHook`` reads it (host, schema, port)."""
    host = conn.host or ""
    base = host if "://" in host else f"{conn.schema or 'http'}://{host}"
    return f"{base}:{conn.port}" if conn.port else base


def _join(base: str, path: str) -> str:
    if base and path and not base.endswith("/") and not path.startswith("/"):
        return f"{base}/{path}"
    return base + path
