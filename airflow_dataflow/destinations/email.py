"""The ``email`` destination: one message per record or per run, sent with ``SmtpHook``.

``SmtpHook`` (apache-airflow-providers-smtp) opens the connection: host, port, SSL or
STARTTLS, login (basic or OAuth2), all from the ``smtp`` connection and its extras. The message
is built here (the hook's ``send_email_smtp`` makes HTML-only messages and retries any error at
once, without backoff): text and HTML bodies as ``multipart/alternative``, the batch as a CSV
attachment when ``attach: csv``, one message addressed to every recipient (``bcc`` only in the
envelope). Its ``Message-ID`` derives from the batch and the run, so a message sent again after
a crash carries the same id and mail clients show it once. See ``messages.py`` for batching,
retries and the rate limit, docs/destinations/email.md for which SMTP answers are retried,
dead-lettered or fail the task.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, getaddresses
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

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
)
from airflow_dataflow.errors import RetriableError
from airflow_dataflow.jsonable import json_default
from airflow_dataflow.templating import TemplateText

if TYPE_CHECKING:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

log = logging.getLogger(__name__)

HTML = Sandbox(autoescape=True)
_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+")

RECORD_SUBJECT = "[{{ route }}] {{ destination }}"
BATCH_SUBJECT = (
    "[{{ route }}] {{ count }} record{{ '' if count == 1 else 's' }} for {{ destination }}"
)
RECORD_TEXT = "{% for key, value in record.items() %}{{ key }}: {{ value }}\n{% endfor %}"
BATCH_TEXT = (
    "{{ count }} record{{ '' if count == 1 else 's' }} from route {{ route }} "
    "to {{ destination }}.\n"
    "{% for row in records %}\n{% for key, value in row.items() %}{{ key }}: {{ value }}\n"
    "{% endfor %}{% endfor %}"
    "{% if count > records | length %}\n... and {{ count - records | length }} more\n{% endif %}"
)


def parse_addresses(value: str) -> list[tuple[str, str]]:
    """``(name, address)`` pairs of one value ("a@x", "Ann <a@x>, b@y"); ValueError if bad."""
    pairs = getaddresses([value])
    if not pairs or any(not _ADDRESS.fullmatch(address) for _, address in pairs):
        raise ValueError(f"not an email address (or a comma-separated list of them): {value!r}")
    return [(name, _ascii_address(address)) for name, address in pairs]


def _ascii_address(address: str) -> str:
    """SMTP without SMTPUTF8: an international domain as IDNA; the local part must be ASCII."""
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise ValueError(f"{address!r}: a non-ASCII mailbox name needs SMTPUTF8, not supported")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise ValueError(f"{address!r}: invalid domain ({exc})") from None


def _static_addresses(value: str | list[str] | None) -> str | list[str] | None:
    """Addresses without templates are checked when the route is loaded."""
    for item in [value] if isinstance(value, str) else value or []:
        if not is_templated(item):
            parse_addresses(item)
    return value


Addresses = Annotated[TemplateText | list[TemplateText], AfterValidator(_static_addresses)]


class EmailSettings(MessageSettings):
    type: Literal["email"]  # type: ignore[assignment]
    connection: str = Field(
        description="Airflow connection of type smtp: host, port, login, password; extras "
        "from_email, disable_ssl, disable_tls, ssl_context, timeout, auth_type"
    )
    from_: Annotated[TemplateText | None, AfterValidator(_static_addresses)] = Field(
        default=None,
        alias="from",
        description="Sender address (template). Default: the connection's from_email extra",
    )
    to: Addresses = Field(description="One address or a list (each may be a template)")
    cc: Addresses = Field(default_factory=list, description="One address or a list")
    bcc: Addresses = Field(
        default_factory=list, description="One address or a list; not shown in the headers"
    )
    subject: TemplateText | None = Field(
        default=None, description="Subject (template). Default: route, destination and count"
    )
    text: TemplateText | None = Field(
        default=None,
        description="Plain-text body (template). Default when html is not set either: the "
        "record's fields, or the count and the records",
    )
    html: TemplateText | None = Field(
        default=None, description="HTML body (template; values are HTML-escaped)"
    )
    attach: Literal["csv"] | None = Field(
        default=None, description="csv: attach the message's records as a CSV file"
    )


@dataclass
class Email:
    """A composed message: envelope sender, envelope recipients, and the MIME message."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    pending: list[str] = field(default_factory=list)  # still to send to (all, at first)

    def __post_init__(self) -> None:
        self.pending = self.pending or list(self.recipients)


class EmailDestination(MessageDestination):
    """Sends one email per record, or one summary per run (``per: batch``)."""

    settings_model: ClassVar[type[DestinationSettings]] = EmailSettings
    settings: EmailSettings

    def describe(self) -> str:
        return f"email:{self.settings.connection}"

    @cached_property
    def connection(self) -> Any:
        return get_connection(self.settings.connection, f"{self.where}: connection")

    def outbox(self) -> Outbox:
        conn = self.connection
        if (conn.conn_type or "").lower() != "smtp":
            raise MessagingConfigError(
                f"{self.where}: connection {self.settings.connection!r} has type "
                f"{conn.conn_type!r}; the email destination needs type smtp"
            )
        return _SmtpOutbox(self)

    def compose(self, variables: dict[str, Any]) -> Email:
        settings = self.settings
        sender = self._sender(variables)
        to, cc, bcc = (
            self._addresses(value, variables) for value in (settings.to, settings.cc, settings.bcc)
        )
        if not to and not cc and not bcc:
            raise ValueError("no recipient: to, cc and bcc rendered empty")
        message = EmailMessage()
        message["Subject"] = self._subject(variables)
        message["From"] = formataddr(sender)
        if to:
            message["To"] = ", ".join(formataddr(pair) for pair in to)
        if cc:
            message["Cc"] = ", ".join(formataddr(pair) for pair in cc)
        self._bodies(message, variables)
        if settings.attach == "csv":
            rows = variables["records"] if settings.per == "batch" else [variables["record"]]
            message.add_attachment(records_csv(rows), subtype="csv", filename=f"{self.name}.csv")
        recipients = list(dict.fromkeys(address for _, address in [*to, *cc, *bcc]))
        return Email(sender=sender[1], recipients=recipients, message=message)

    def _sender(self, variables: dict[str, Any]) -> tuple[str, str]:
        """``from`` (rendered: a bad one refuses the record), else the connection's sender."""
        if self.settings.from_ is not None:
            pairs = parse_addresses(PLAIN.render(self.settings.from_, variables))
            if len(pairs) != 1:
                raise ValueError(f"from must be one address, not {len(pairs)}")
            return pairs[0]
        default = self.connection.extra_dejson.get("from_email")
        try:
            (pair,) = parse_addresses(str(default or ""))
        except ValueError as exc:
            raise MessagingConfigError(
                f"{self.where}: no sender: set from, or the extra from_email of connection "
                f"{self.settings.connection!r} to one address (it is {default!r})"
            ) from exc
        return pair

    @staticmethod
    def _addresses(value: str | list[str], variables: dict[str, Any]) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for source in [value] if isinstance(value, str) else value:
            rendered = PLAIN.render(source, variables).strip()
            if rendered:  # a template may render empty: that recipient is left out
                pairs.extend(parse_addresses(rendered))
        return pairs

    def _subject(self, variables: dict[str, Any]) -> str:
        default = BATCH_SUBJECT if self.settings.per == "batch" else RECORD_SUBJECT
        subject = PLAIN.render(self.settings.subject or default, variables)
        return " ".join(subject.split())  # one line: a value cannot inject headers

    def _bodies(self, message: EmailMessage, variables: dict[str, Any]) -> None:
        """text/plain, text/html, or both as multipart/alternative."""
        settings = self.settings
        text = settings.text
        if text is None and settings.html is None:
            text = BATCH_TEXT if settings.per == "batch" else RECORD_TEXT
        if text is not None:
            message.set_content(PLAIN.render(text, variables))
        if settings.html is not None:
            html = HTML.render(settings.html, variables)
            if text is None:
                message.set_content(html, subtype="html")
            else:
                message.add_alternative(html, subtype="html")

    def message_id(self, key: str, sender: str) -> str:
        """The same for every send of one batch in one run (a re-send after a crash)."""
        digest = hashlib.blake2b(f"{key}\0{self.context.run_id}".encode(), digest_size=16)
        domain = sender.rsplit("@", 1)[-1] or "airflow-dataflow.invalid"
        return f"<{digest.hexdigest()}.dataflow@{domain}>"


def records_csv(rows: list[Any]) -> str:
    """CSV of ``rows``: a header of every field in first-seen order; nested values as JSON."""
    columns: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        values = row if isinstance(row, dict) else {}
        writer.writerow([_cell(values.get(column)) for column in columns])
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=json_default, ensure_ascii=False)
    return value


class _SmtpOutbox:
    """One SMTP session for the delivery (opened by ``SmtpHook``, re-opened after a failure)."""

    def __init__(self, destination: EmailDestination) -> None:
        self.destination = destination
        self.hook: SmtpHook | None = None
        conn = destination.connection
        self.server = f"{conn.host}:{conn.port or 'default port'}"

    def post(self, email: Email, key: str, token: str) -> None:
        message = email.message
        if "Message-ID" not in message:
            message["Message-ID"] = self.destination.message_id(key, email.sender)
            message["Date"] = format_datetime(datetime.now(timezone.utc))
        client = self._client()
        try:
            refused = client.sendmail(email.sender, email.pending, message.as_bytes(policy=SMTP))
        except smtplib.SMTPRecipientsRefused as exc:
            self._all_refused(exc.recipients)
        except smtplib.SMTPSenderRefused as exc:
            self._reset()
            self._sender_refused(exc)
        except smtplib.SMTPResponseException as exc:
            self._reset()
            self._response(exc.smtp_code, exc.smtp_error, "the message")
        except smtplib.SMTPNotSupportedError as exc:
            raise MessageRefused(f"the mail server cannot take the message: {exc}") from exc
        except OSError as exc:  # disconnected, reset, timed out (SMTPServerDisconnected too)
            self._reset()
            raise RetriableError(
                f"{self.destination.where}: the connection to mail server {self.server} "
                f"failed while sending: {exc}"
            ) from exc
        if refused:
            self._partly_refused(email, refused)

    def _client(self) -> smtplib.SMTP:
        if self.hook is None:
            self.hook = self._connect()
        client = self.hook._smtp_client  # the hook keeps its session here (no public accessor)
        assert isinstance(client, smtplib.SMTP)
        return client

    def _connect(self) -> SmtpHook:
        from airflow.providers.smtp.hooks.smtp import SmtpHook
        from airflow.sdk.exceptions import AirflowException

        where, name = self.destination.where, self.destination.settings.connection
        hook = SmtpHook(smtp_conn_id=name)
        try:
            hook.get_conn()
        except smtplib.SMTPAuthenticationError as exc:
            raise MessagingConfigError(
                f"{where}: mail server {self.server} refused the login of connection "
                f"{name!r} ({exc.smtp_code} {_text(exc.smtp_error)}); check its login and password"
            ) from exc
        except (ssl.SSLError, smtplib.SMTPNotSupportedError) as exc:
            raise MessagingConfigError(
                f"{where}: TLS with mail server {self.server} failed ({exc}); check the extras "
                f"disable_ssl (true for a plain or STARTTLS port such as 25 or 587), "
                f"disable_tls (true when the server offers no STARTTLS) and ssl_context of "
                f"connection {name!r}"
            ) from exc
        except (OSError, AirflowException) as exc:
            raise RetriableError(
                f"{where}: cannot connect to mail server {self.server} of connection "
                f"{name!r}: {exc}"
            ) from exc
        return hook

    def _reset(self) -> None:
        """Drop the session after a failure; the next attempt opens a new one."""
        if self.hook is not None and self.hook._smtp_client is not None:
            with contextlib.suppress(OSError):
                self.hook._smtp_client.close()
        self.hook = None

    def _all_refused(self, recipients: dict[str, tuple[int, bytes]]) -> None:
        said = _refusals(recipients)
        if any(400 <= code < 500 for code, _ in recipients.values()):
            raise RetriableError(f"{self.destination.where}: the mail server deferred {said}")
        raise MessageRefused(f"the mail server refused every recipient: {said}")

    def _partly_refused(self, email: Email, refused: dict[str, tuple[int, bytes]]) -> None:
        """Sent to the others: retry the deferred (4xx) recipients, log the refused (5xx)."""
        deferred = [address for address, (code, _) in refused.items() if 400 <= code < 500]
        permanent = {a: answer for a, answer in refused.items() if a not in deferred}
        if permanent:
            log.warning(
                "%s: the message was sent, but the mail server refused %s",
                self.destination.where,
                _refusals(permanent),
            )
        if deferred:
            email.pending = deferred
            raise RetriableError(
                f"{self.destination.where}: the mail server deferred "
                f"{_refusals({a: refused[a] for a in deferred})}"
            )

    def _sender_refused(self, exc: smtplib.SMTPSenderRefused) -> None:
        said = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        if 400 <= exc.smtp_code < 500:
            raise RetriableError(f"{self.destination.where}: the mail server deferred: {said}")
        raise MessagingConfigError(
            f"{self.destination.where}: mail server {self.server} refused the sender "
            f"{exc.sender!r} ({said}); set from (or the connection's from_email) to an address "
            "the server lets this login send as"
        )

    def _response(self, code: int, text: bytes | str, what: str) -> None:
        said = f"{code} {_text(text)}"
        if 400 <= code < 500 or code < 200:
            raise RetriableError(
                f"{self.destination.where}: the mail server deferred {what}: {said}"
            )
        raise MessageRefused(f"the mail server refused {what}: {said}")

    def received(self, key: str, token: str) -> bool:
        return False  # SMTP cannot be asked; a re-send keeps the Message-ID

    def close(self) -> None:
        if self.hook is not None and self.hook._smtp_client is not None:
            with contextlib.suppress(OSError):  # smtplib's errors are OSErrors too
                self.hook._smtp_client.quit()
        self._reset()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _refusals(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(
        f"{address} ({code} {_text(text)})" for address, (code, text) in recipients.items()
    )
