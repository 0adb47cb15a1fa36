"""The ``slack`` destination: messages from sandboxed templates, through the Slack provider.

The connection's type picks the hook: ``slackwebhook`` posts to an incoming webhook
(``SlackWebhookHook``; the channel is the webhook's), ``slack`` calls the Web API's
``chat.postMessage`` (``SlackHook``; ``channel`` says where). Both hooks are built with no
retry handlers of their own: retries are the project's one ``RetryPolicy`` (honouring 429
``Retry-After``), and every message waits for the rate limit (default 1 message per second,
Slack's guidance for posting). See ``messages.py`` for batching and the ledger, and
docs/destinations/slack.md for what becomes a dead letter and what fails the task.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from http.client import HTTPException
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from airflow_dataflow.destinations.base import DestinationSettings
from airflow_dataflow.destinations.messages import (
    PLAIN,
    MessageDestination,
    MessageRefused,
    MessageSettings,
    MessagingConfigError,
    Outbox,
    Sandbox,
    get_connection,
    is_templated,
    mask,
    scrub,
)
from airflow_dataflow.destinations.policy import is_retriable_status, parse_retry_after
from airflow_dataflow.errors import RetriableError
from airflow_dataflow.templating import TemplateText, check_templates

log = logging.getLogger(__name__)

WEBHOOK_TYPE = "slackwebhook"
API_TYPE = "slack"
METADATA_EVENT = "airflow_dataflow_message"

RECORD_TEXT = (
    "`{{ route }}` → `{{ destination }}`\n"
    "{% for key, value in record.items() %}• *{{ key }}*: {{ value }}\n{% endfor %}"
)
BATCH_TEXT = (
    "*{{ count }} record{{ '' if count == 1 else 's' }}* from route `{{ route }}` "
    "to `{{ destination }}`"
    "{% for row in records %}\n• {% for key, value in row.items() %}{{ key }}: {{ value }}"
    "{{ '' if loop.last else ', ' }}{% endfor %}{% endfor %}"
    "{% if count > records | length %}\n… and {{ count - records | length }} more{% endif %}"
)

# Slack's error codes, by what they mean for us (https://api.slack.com/methods/chat.postMessage,
# https://api.slack.com/messaging/webhooks#handling_errors).
_CONFIG_ERRORS = {
    # webhooks: the URL is wrong, revoked, or its app or workspace is gone
    "no_service": "the webhook URL is unknown or was revoked",
    "no_service_id": "the webhook URL is incomplete",
    "no_team": "the webhook's workspace does not exist",
    "team_disabled": "the webhook's workspace is disabled",
    "invalid_token": "the webhook token is invalid",
    "action_prohibited": "an admin restricted posting with this webhook",
    "posting_to_general_channel_denied": "only admins may post to the webhook's channel",
    "no_active_hooks": "the webhook was disabled",
    # Web API: the token or its scopes
    "invalid_auth": "the token is invalid",
    "not_authed": "no token was sent (the connection's password is empty)",
    "account_inactive": "the token's user or bot was deactivated",
    "token_revoked": "the token was revoked",
    "token_expired": "the token expired",
    "no_permission": "the token lacks permission",
    "missing_scope": "the token lacks the chat:write scope",
    "not_allowed_token_type": "this kind of token cannot post messages",
    "access_denied": "access was denied",
    "team_access_not_granted": "the token has no access to this workspace",
    "ekm_access_denied": "administrators suspended posting",
    "restricted_action": "a workspace preference forbids posting",
    "org_login_required": "the workspace is migrating; try again later",
}
_CHANNEL_ERRORS = {"channel_not_found", "is_archived", "channel_is_archived", "not_in_channel"}
_TRANSIENT_ERRORS = {
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
}
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_NETWORK_ERRORS = (OSError, HTTPException)


def slack_escape(value: Any) -> str:
    """Slack's markup escaping: ``&``, ``<`` and ``>`` (so values cannot ping or forge links)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


ESCAPED = Sandbox(finalize=slack_escape)

Blocks = Annotated[list[dict[str, Any]], AfterValidator(check_templates)]


class SlackSettings(MessageSettings):
    type: Literal["slack"]  # type: ignore[assignment]
    connection: str = Field(
        description="Airflow connection: type slackwebhook (incoming webhook: host and "
        "webhook token as password) or slack (Web API: bot token as password, extra base_url)"
    )
    channel: TemplateText | None = Field(
        default=None,
        description="Channel name (#alerts) or id, for slack (Web API) connections; may be a "
        "template. Webhooks always post to their own channel",
    )
    text: TemplateText | None = Field(
        default=None,
        description="Message text (template, Slack mrkdwn); also the notification fallback "
        "of blocks. Default: the record's fields, or the count and up to max_rows rows",
    )
    blocks: Blocks | None = Field(
        default=None, description="Block Kit blocks; every string in them is a template"
    )
    max_rows: int = Field(
        default=10, ge=0, description="per: batch: at most this many rows in the summary"
    )
    escape: bool = Field(
        default=True,
        description="Escape &, < and > in rendered values so record values cannot mention "
        "@channel or forge links (the templates' own markup is kept)",
    )
    rate_limit: float | None = Field(
        default=1.0, gt=0, description="At most this many messages per second (null: no limit)"
    )

    @model_validator(mode="after")
    def _samples_for_rows(self) -> SlackSettings:
        """``per: batch`` keeps ``sample_size`` records for the summary: enough for max_rows."""
        if "sample_size" not in self.model_fields_set:
            self.sample_size = self.max_rows
        return self


@dataclass(frozen=True)
class SlackMessage:
    channel: str | None
    text: str | None
    blocks: list[Any] | None

    def payload(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in (("text", self.text), ("blocks", self.blocks))
            if value is not None
        }


class SlackDestination(MessageDestination):
    """Posts one Slack message per record, or one summary per run (``per: batch``)."""

    settings_model: ClassVar[type[DestinationSettings]] = SlackSettings
    settings: SlackSettings

    def describe(self) -> str:
        channel = self.settings.channel
        return f"slack:{self.settings.connection}" + (f" {channel}" if channel else "")

    def rows(self, summary: dict[str, Any]) -> list[Any]:
        return super().rows(summary)[: self.settings.max_rows]

    @cached_property
    def _text_sandbox(self) -> Sandbox:
        return ESCAPED if self.settings.escape else PLAIN

    def compose(self, variables: dict[str, Any]) -> SlackMessage:
        settings = self.settings
        text_source = settings.text
        if text_source is None and settings.blocks is None:
            text_source = BATCH_TEXT if settings.per == "batch" else RECORD_TEXT
        channel = None
        if settings.channel is not None:
            channel = PLAIN.render(settings.channel, variables).strip()
            if not channel:
                raise ValueError(f"channel {settings.channel!r} rendered empty")
        return SlackMessage(
            channel=channel,
            text=None if text_source is None else self._text_sandbox.render(text_source, variables),
            blocks=None
            if settings.blocks is None
            else self._text_sandbox.render_structure(settings.blocks, variables),
        )

    def outbox(self) -> Outbox:
        conn = get_connection(self.settings.connection, f"{self.where}: connection")
        conn_type = (conn.conn_type or "").lower()
        if conn_type == WEBHOOK_TYPE:
            if self.settings.channel is not None:
                raise MessagingConfigError(
                    f"{self.where}: channel is set, but connection "
                    f"{self.settings.connection!r} is an incoming webhook, which always posts "
                    "to the channel chosen when it was created; remove channel, or use a "
                    "connection of type slack (Web API) with a bot token"
                )
            return _WebhookOutbox(self)
        if conn_type == API_TYPE:
            if self.settings.channel is None:
                raise MessagingConfigError(
                    f"{self.where}: connection {self.settings.connection!r} is a Slack Web API "
                    "connection: set channel (a name like '#alerts' or an id)"
                )
            return _ApiOutbox(self)
        raise MessagingConfigError(
            f"{self.where}: connection {self.settings.connection!r} has type {conn_type!r}; "
            f"the slack destination needs type {WEBHOOK_TYPE} (incoming webhook) or "
            f"{API_TYPE} (Web API)"
        )

    def answer(
        self, status: int, error: str, headers: Mapping[str, Any], details: str = ""
    ) -> None:
        """Map Slack's answer to a message onto our outcomes (return: it was accepted)."""
        if status == 200 and error in ("ok", ""):
            return
        said = f"{error or 'no error code'} (HTTP {status}){f': {details}' if details else ''}"
        if status == 429 or error in _TRANSIENT_ERRORS or is_retriable_status(status):
            retry_after = parse_retry_after(_header(headers, "Retry-After"))
            raise RetriableError(f"{self.where}: Slack answered {said}", retry_after=retry_after)
        if error in _CONFIG_ERRORS:
            raise MessagingConfigError(
                f"{self.where}: Slack refused connection {self.settings.connection!r}: {said}: "
                f"{_CONFIG_ERRORS[error]}; fix the connection (retrying cannot help)"
            )
        if error in _CHANNEL_ERRORS and not is_templated(self.settings.channel):
            raise MessagingConfigError(
                f"{self.where}: Slack cannot post to "
                f"{self.settings.channel or 'the webhook channel'}: {said}; check the channel "
                "(and that the app was invited to it)"
            )
        raise MessageRefused(f"Slack refused the message: {said}")


class _WebhookOutbox:
    """Incoming webhook through ``SlackWebhookHook``; cannot tell whether a message arrived."""

    def __init__(self, destination: SlackDestination) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        self.destination = destination
        hook = SlackWebhookHook(
            slack_webhook_conn_id=destination.settings.connection, retry_handlers=[]
        )
        try:
            self.client = hook.client
        except AirflowNotFoundException as exc:
            raise MessagingConfigError(
                f"{destination.where}: connection {destination.settings.connection!r} has no "
                "webhook token: set its password to the webhook URL or its token part"
            ) from exc
        self.url = self.client.url
        self.secrets = [self.url, urlsplit(self.url).path]  # the path holds the token
        mask(*self.secrets)

    def post(self, message: SlackMessage, key: str, token: str) -> None:
        try:
            response = self.client.send_dict(message.payload())
        except _NETWORK_ERRORS as exc:
            raise RetriableError(
                f"{self.destination.where}: cannot reach the Slack webhook: "
                f"{scrub(str(exc), self.secrets)}"
            ) from exc
        body = (response.body or "").strip()
        self.destination.answer(response.status_code, body, response.headers or {})

    def received(self, key: str, token: str) -> bool:
        return False  # a webhook cannot be asked: the message in doubt is sent again

    def close(self) -> None:
        pass


class _ApiOutbox:
    """``chat.postMessage`` through ``SlackHook``; messages carry metadata naming the attempt,
    so after a crash ``conversations.history`` tells whether the message in doubt arrived."""

    def __init__(self, destination: SlackDestination) -> None:
        from airflow.providers.slack.hooks.slack import SlackHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        self.destination = destination
        self.hook = SlackHook(slack_conn_id=destination.settings.connection, retry_handlers=[])
        try:
            self.client = self.hook.client
        except AirflowNotFoundException as exc:
            raise MessagingConfigError(
                f"{destination.where}: connection {destination.settings.connection!r} has no "
                "token: set its password to the bot token (xoxb-...)"
            ) from exc
        mask(self.client.token)

    def post(self, message: SlackMessage, key: str, token: str) -> None:
        from slack_sdk.errors import SlackApiError

        metadata = {
            "event_type": METADATA_EVENT,
            "event_payload": {
                "route": self.destination.context.route,
                "destination": self.destination.name,
                "batch": key,
                "attempt": token,
            },
        }
        try:
            self.client.chat_postMessage(
                channel=message.channel, metadata=metadata, **message.payload()
            )
        except SlackApiError as exc:
            response = exc.response
            data = response.data if isinstance(response.data, dict) else {}
            details = "; ".join(data.get("response_metadata", {}).get("messages", []))
            self.destination.answer(
                response.status_code, str(data.get("error", "")), response.headers, details
            )
        except _NETWORK_ERRORS as exc:
            raise RetriableError(
                f"{self.destination.where}: cannot reach the Slack Web API: {exc}"
            ) from exc

    def received(self, key: str, token: str) -> bool:
        """Look for the attempt's metadata among the channel's latest messages."""
        channel = self.destination.settings.channel
        if channel is None or is_templated(channel):
            return False
        try:
            channel_id = self._channel_id(channel)
            history = self.client.conversations_history(
                channel=channel_id, include_all_metadata=True, limit=100
            )
        except Exception as exc:  # any failure to check means: send it again
            log.warning(
                "cannot tell whether the message in doubt reached %s (%s); sending it again",
                self.destination.describe(),
                exc,
            )
            return False
        for found in history.get("messages") or []:
            metadata = found.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if (
                metadata.get("event_type") == METADATA_EVENT
                and payload.get("batch") == key
                and payload.get("attempt") == token
            ):
                return True
        return False

    def _channel_id(self, channel: str) -> str:
        """conversations.history wants an id: a name is looked up (conversations.list)."""
        if _CHANNEL_ID.match(channel):
            return channel
        return self.hook.get_channel_id(channel.removeprefix("#"))

    def close(self) -> None:
        pass


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return None
