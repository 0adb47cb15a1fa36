"""The destination interface: a destination delivers batches of records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from airflow_dataflow.context import RunContext


class DestinationSettings(BaseModel):
    """Base of every destination's settings model (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["__base__"]
    min_records: int = Field(
        default=0, ge=0, description="Deliver only when at least this many records were routed here"
    )
    per: Literal["record", "batch"] = Field(
        default="record",
        description="record: deliver every record; batch: deliver one summary per run, "
        "{count, records: [up to sample_size]}",
    )
    sample_size: int = Field(default=10, ge=0, description="Records kept in a per: batch summary")
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="at most this many sends (messages, requests, batches) per second",
    )


@dataclass
class DeliveryResult:
    """What one delivery did: records delivered and where they went."""

    delivered: int = 0
    locations: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


Batch = list[dict[str, Any]]


@dataclass(frozen=True)
class Rejection:
    """A record the destination refused for good (e.g. HTTP 4xx other than 408/429).

    It goes to the dead letters with ``reason`` (naming the response); retrying cannot help.
    """

    record: Any
    reason: str


class BatchSender:
    """Sends a delivery batch by batch, so the delivery ledger can skip batches already sent.

    ``send`` delivers one batch (``offset``: how many records of the delivery precede it, for
    error messages naming a record); ``key`` (the batch's ledger key, from route, destination,
    target and content) and ``token`` (this attempt) let a destination deduplicate natively
    (a marker row in the same transaction, an ``Idempotency-Key`` header, an object name).
    ``received`` answers, for a batch whose previous attempt ended without a known outcome
    (the process died), whether that attempt (``token``) arrived; ``False`` when it cannot tell,
    and the batch is sent again.
    """

    #: How many batches the ledger may mark "sending" ahead, in one state-store write. More
    #: than 1 only when, after a crash, ``received`` can tell which of them arrived or
    #: sending them again is harmless (up to ``window`` batches are in doubt at once).
    window: int = 1

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> list[Rejection] | None:
        """Deliver ``batch``; return the records refused for good (the rest was delivered).

        Raise ``RetriableError`` (after the destination's own retries) for failures worth
        retrying later: the task fails or retries and nothing of the batch counts as sent.
        """
        raise NotImplementedError

    def received(self, key: str, token: str) -> bool:
        return False

    def close(self) -> None:
        """Release connections; called once, after the last batch or a failure."""

    def __enter__(self) -> BatchSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Destination:
    """Delivers records. Subclasses set ``settings_model`` and implement ``deliver``.

    ``deliver`` receives the destination's records as an iterable of batches (lists of dicts),
    streamed from staging, and returns a ``DeliveryResult``: the whole delivery is one unit
    for the ledger (right for destinations that rewrite one file or table whole). A destination
    that can take batches one at a time also implements ``open_batches``.
    """

    settings_model: ClassVar[type[DestinationSettings]]

    def __init__(self, name: str, settings: DestinationSettings, context: RunContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context

    def deliver(self, batches: Iterable[Batch]) -> DeliveryResult:
        raise NotImplementedError

    def target(self) -> str:
        """Where this delivery writes (a rendered path, a table): part of every batch key."""
        return ""

    def open_batches(self, batches: Iterable[Batch]) -> BatchSender | None:
        """A sender for batch-by-batch delivery of ``batches``, or ``None`` to use ``deliver``.

        ``batches`` is re-iterable (staging), for destinations that need a first pass.
        """
        return None


def mask_in_logs(secret: str | None) -> None:
    """Hide ``secret`` in every log line (Airflow's masker; task and supervisor processes)."""
    if secret:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)


def rechunk(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """The records of ``batches`` regrouped into lists of ``size`` (the last may be shorter)."""
    chunk: Batch = []
    for batch in batches:
        for record in batch:
            chunk.append(record)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
