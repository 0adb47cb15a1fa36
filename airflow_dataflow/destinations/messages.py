"""What the ``slack`` and ``email`` destinations share: one message per ledger batch.

- **Rendering.** A message is rendered from the destination's templates in a sandboxed Jinja
  environment; records are variables, never template source. ``per: record`` renders one
  message per record (templates see ``record``); ``per: batch`` one summary message per run
  (templates see ``count``, every record routed here, and ``records``, the first of them).
- **One message, one ledger batch.** The delivery ledger marks each message "sending" before
  and "delivered" after it is sent, so a retried task or a re-run never sends again a message
  the ledger knows arrived. Only the message in flight when a process dies is in doubt: it is
  sent again, unless the service can tell that it arrived (``Outbox.received``).
- **Sending.** Every attempt waits for the rate limit (``RateLimiter``, ``rate_limit``
  messages per second) and failures worth retrying are retried by the one ``RetryPolicy``
  (honouring ``Retry-After``). An ``Outbox`` maps its service's answers onto three outcomes:
  ``RetriableError`` (retried, then the task fails and the run can be retried),
  ``MessageRefused`` (this message can never be sent: its record goes to the dead letters)
  and ``MessagingConfigError`` (the connection or settings are wrong: the task fails without
  retries, since no message could go until someone fixes them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from airflow_dataflow.destinations.base import (
    Batch,
    BatchSender,
    Destination,
    DestinationSettings,
    Rejection,
)
from airflow_dataflow.destinations.policy import RateLimiter, RetryPolicy
from airflow_dataflow.errors import DestinationError, FatalError

log = logging.getLogger(__name__)

#: What rendering a message may raise because of a record (an undefined field, a value a
#: filter cannot take, an address that does not parse): that record is dead-lettered.
RENDER_ERRORS = (TemplateError, ValueError, TypeError, LookupError, ArithmeticError)


class MessageRefused(DestinationError):
    """The service refused this message for good (retrying cannot help); ``str`` is why."""


class MessagingConfigError(DestinationError, FatalError):
    """The connection or the settings are wrong: no message can be sent until they are fixed."""


class SummaryRefusedError(DestinationError, FatalError):
    """A ``per: batch`` summary was refused: it stands for every record, so the run fails."""


class MessageSettings(DestinationSettings):
    """Settings every message destination has (``per``, ``rate_limit``, ...)."""

    #: One message per ledger batch: the pipeline reads this to size the batches.
    batch_size: ClassVar[int] = 1


# -- templates ---------------------------------------------------------------------------------


class Sandbox:
    """A sandboxed Jinja environment whose templates compile once and render many times.

    ``finalize`` post-processes the value of every ``{{ expression }}`` (not the template's
    own text), e.g. to escape a service's markup; ``autoescape`` escapes HTML the same way.
    """

    def __init__(
        self, *, autoescape: bool = False, finalize: Callable[[Any], Any] | None = None
    ) -> None:
        self.env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined,
            autoescape=autoescape,
            keep_trailing_newline=True,
            finalize=finalize,
        )
        self._compile = lru_cache(maxsize=256)(self.env.from_string)

    def template(self, source: str) -> Template:
        return self._compile(source)

    def render(self, source: str, variables: dict[str, Any]) -> str:
        return self.template(source).render(variables)

    def render_structure(self, value: Any, variables: dict[str, Any]) -> Any:
        """Every string inside ``value`` (lists, dicts) rendered as a template; the rest kept."""
        if isinstance(value, str):
            return self.render(value, variables) if "{" in value else value
        if isinstance(value, list):
            return [self.render_structure(item, variables) for item in value]
        if isinstance(value, dict):
            return {key: self.render_structure(item, variables) for key, item in value.items()}
        return value


PLAIN = Sandbox()


def is_templated(source: str | None) -> bool:
    return source is not None and ("{{" in source or "{%" in source)


# -- secrets and connections -------------------------------------------------------------------


#: Shorter values are not treated as secrets (masking "/" or "ab" would garble every line).
MIN_SECRET_LENGTH = 6


def mask(*secrets: str | None) -> None:
    """Register secrets with Airflow's masker: task logs show ``***`` in their place."""
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            mask_secret(secret)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` without any of ``secrets`` (for error messages, which outlive the task log)."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


def get_connection(conn_id: str, where: str) -> Any:
    """The Airflow connection ``conn_id``; a clear ``MessagingConfigError`` when it is missing."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise MessagingConfigError(
            f"{where}: connection {conn_id!r} is not defined; define it with `airflow "
            f"connections add {conn_id} ...` or the environment variable "
            f"AIRFLOW_CONN_{conn_id.upper()}"
        ) from exc
    mask(conn.password)
    return conn


# -- sending -----------------------------------------------------------------------------------


class Outbox(Protocol):
    """Posts rendered messages to one service through one connection."""

    def post(self, message: Any, key: str, token: str) -> None:
        """Send ``message``; raise RetriableError, MessageRefused or MessagingConfigError."""

    def received(self, key: str, token: str) -> bool:
        """Whether the message sent as attempt ``token`` of batch ``key`` arrived."""

    def close(self) -> None: ...


def retry_policy() -> RetryPolicy:
    """The retry policy of message sends (a function, so tests can run it on a fake clock)."""
    return RetryPolicy()


def rate_limiter(rate: float | None) -> RateLimiter:
    """The token bucket of one delivery (a function, so tests can run it on a fake clock)."""
    return RateLimiter(rate)


class MessageDestination(Destination):
    """A destination that sends one rendered message per ledger batch (see the module doc).

    Subclasses implement ``compose`` (variables -> message), ``outbox`` and ``describe``.
    """

    settings: MessageSettings

    def compose(self, variables: dict[str, Any]) -> Any:
        raise NotImplementedError

    def outbox(self) -> Outbox:
        raise NotImplementedError

    def describe(self) -> str:
        """Where messages go, for log lines and errors (never a secret)."""
        raise NotImplementedError

    @property
    def where(self) -> str:
        return f"route {self.context.route!r}: destination {self.name!r}"

    def target(self) -> str:
        return self.describe()

    def rows(self, summary: dict[str, Any]) -> list[Any]:
        """The records a ``per: batch`` summary shows (``records`` in templates)."""
        return list(summary.get("records") or [])

    def variables(self, item: Any) -> dict[str, Any]:
        """Template variables for one staged item: a record, or a ``per: batch`` summary."""
        if self.settings.per == "batch":
            summary = item if isinstance(item, dict) else {}
            rows = self.rows(summary)
            extra = {"count": summary.get("count", len(rows)), "records": rows}
        else:
            extra = {"record": item}
        return self.context.template_vars(destination=self.name, **extra)

    def open_batches(self, batches: Iterable[Batch]) -> BatchSender:
        return MessageSender(self, self.outbox(), limiter=rate_limiter(self.settings.rate_limit))


class MessageSender(BatchSender):
    """Sends each batch's messages: render, wait for the rate limit, post under the policy."""

    window = 1  # one message in doubt at most after a crash

    def __init__(
        self,
        destination: MessageDestination,
        outbox: Outbox,
        *,
        limiter: RateLimiter,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.destination = destination
        self.outbox = outbox
        self.limiter = limiter
        self.policy = policy or retry_policy()

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> list[Rejection]:
        rejections = []
        for item in batch:
            reason = self._send_one(item, key, token)
            if reason is None:
                continue
            if self.destination.settings.per == "batch":
                raise SummaryRefusedError(
                    f"{self.destination.where}: the summary message was refused ({reason}); "
                    "it stands for every record of the run, so the run fails and the cursor "
                    "stays: fix the templates (or lower max_rows/sample_size) and run again"
                )
            rejections.append(Rejection(item, reason))
        return rejections

    def _send_one(self, item: Any, key: str, token: str) -> str | None:
        """Send the message of ``item``; the reason when it can never be sent, else None."""
        try:
            message = self.destination.compose(self.destination.variables(item))
        except RENDER_ERRORS as exc:
            return f"cannot render the message: {type(exc).__name__}: {exc}"

        def attempt() -> None:
            self.limiter.acquire()
            self.outbox.post(message, key, token)

        try:
            self.policy.call(attempt, what=f"sending to {self.destination.describe()}")
        except MessageRefused as exc:
            return str(exc)
        return None

    def received(self, key: str, token: str) -> bool:
        return self.outbox.received(key, token)

    def close(self) -> None:
        self.outbox.close()
