"""The ``hubspot`` connector: CRM objects as records, in HubSpot's own shape.

Records: ``{"id", "properties": {...}, "createdAt", "updatedAt", "archived", "associations"}``
(``archivedAt`` too on archived records); ``associations`` maps each object type named in the
``associations`` setting to the list of associated record ids (strings), ``{}`` without it.

Without ``incremental`` every run reads every record through the list API (and the archived
ones with ``include_archived``). With ``incremental`` a run reads the records whose modified
date (``hs_lastmodifieddate``; ``lastmodifieddate`` for contacts) is in the window
``[cursor - lookback, wall-clock start of the extract - safety_lag)`` through the search API
(see ``hubspot_pages.KeysetSearch``), and the window's end becomes the candidate cursor (an ISO
8601 UTC string), even when nothing was read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from airflow_dataflow.config.durations import parse_duration
from airflow_dataflow.connectors.base import (
    BadRecord,
    Connector,
    ConnectorSettings,
    CursorSpec,
    JsonScalar,
    SourceWarning,
)
from airflow_dataflow.connectors.hubspot_pages import (
    KeysetSearch,
    ObjectList,
    Record,
    read_associations,
)
from airflow_dataflow.errors import DataflowError, RetriableError, SourceError
from airflow_dataflow.hooks.hubspot_limits import HubSpotApiError, HubSpotAuthError

if TYPE_CHECKING:
    from airflow_dataflow.hooks.hubspot import HubSpotHook

log = logging.getLogger(__name__)

STANDARD_OBJECTS = ("contacts", "companies", "deals", "tickets")
CONTACTS = ("contacts", "0-1")
OBJECT_TYPE_ID = re.compile(r"^\d+-\d+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda value: value.total_seconds(), return_type=float),
    WithJsonSchema({"type": ["string", "number"], "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d|w)?$"}),
]


class HubSpotUnavailableError(SourceError, RetriableError):
    """HubSpot could not be reached or kept refusing (429, 5xx) after the retries."""


class HubSpotIncremental(BaseModel):
    """``incremental: {lookback, safety_lag}``: read only what changed since the last run."""

    model_config = ConfigDict(extra="forbid")
    lookback: Duration = Field(
        default=timedelta(0),
        description="re-read records modified this long before the committed cursor",
    )
    safety_lag: Duration = Field(
        default=timedelta(minutes=1),
        description="the window ends this long before the extract starts (search indexing lag)",
    )


class HubSpotSettings(ConnectorSettings):
    """Settings of ``source: {type: hubspot}``."""

    type: Literal["hubspot"]
    connection: str = Field(min_length=1, description="Airflow connection id (type hubspot)")
    object: str = Field(
        min_length=1,
        description="contacts, companies, deals, tickets, or a custom object's name or "
        "objectTypeId (2-...)",
    )
    properties: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="property names to read; omitted: every property (from the properties API)",
    )
    associations: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="object types whose associated record ids each record carries",
    )
    include_archived: bool = Field(
        default=False, description="also read archived (deleted) records, marked archived: true"
    )
    incremental: HubSpotIncremental | None = Field(
        default=None,
        description="read only records modified since the last run (search API)",
    )

    def modified_property(self) -> str:
        """The property holding the record's last modification time."""
        return "lastmodifieddate" if self.object.lower() in CONTACTS else "hs_lastmodifieddate"

    def cursor_spec(self) -> CursorSpec | None:
        if self.incremental is None:
            return None
        return CursorSpec(field=self.modified_property(), initial=None)


class HubSpotConnector(Connector):
    """Reads one CRM object type of the HubSpot account of connection ``connection``."""

    settings_model: ClassVar[type[ConnectorSettings]] = HubSpotSettings
    settings: HubSpotSettings

    @cached_property
    def hook(self) -> HubSpotHook:
        from airflow_dataflow.hooks.hubspot import HubSpotHook

        return HubSpotHook(self.settings.connection)

    @property
    def where(self) -> str:
        return (
            f"route {self.context.route!r}: source (hubspot {self.settings.object!r}, connection "
            f"{self.settings.connection!r})"
        )

    def read(self) -> Iterator[Any | BadRecord | SourceWarning]:
        started = wall_clock()
        try:
            yield from self._read(started)
        except SourceError:
            raise
        except RetriableError as exc:
            raise HubSpotUnavailableError(f"{self.where}: {exc}") from exc
        except DataflowError as exc:
            raise SourceError(f"{self.where}: {exc}{_remedy(exc)}") from exc

    def _read(self, started: datetime) -> Iterator[Any | SourceWarning]:
        object_type = self.object_type()
        properties = self.settings.properties or self.all_properties(object_type)
        incremental = self.settings.incremental
        count = 0
        if incremental is None:
            lists = [ObjectList(self.hook, object_type, properties)]
            if self.settings.include_archived:
                lists.append(ObjectList(self.hook, object_type, properties, archived=True))
            for listing in lists:
                for page in listing.pages():
                    count += len(page)
                    yield from self._records(object_type, page)
                yield from _split_warning(listing)
        else:
            start, end = self.window(started, incremental)
            search = KeysetSearch(
                self.hook,
                object_type,
                properties,
                self.settings.modified_property(),
                None if start is None else _millis(start),
                _millis(end),
            )
            for page in search.pages():
                count += len(page)
                yield from self._records(object_type, page)
            if self.settings.include_archived:
                yield from self._archived_in(object_type, properties, start, end)
            assert self.cursor is not None
            self.cursor.advance(iso(end))
        log.info(
            "read %d %s from HubSpot in %d requests (%.1fs waiting for rate limits)",
            count,
            object_type,
            self.hook.requests,
            self.hook.pacer.waited,
        )

    def window(
        self, started: datetime, incremental: HubSpotIncremental
    ) -> tuple[datetime | None, datetime]:
        """This run's window ``[start, end)``: ``start`` is ``None`` on a first run."""
        if self.cursor is None:
            raise SourceError(f"{self.where}: an incremental read needs the run's cursor")
        end = started - incremental.safety_lag
        if self.cursor.start is None:
            return None, end
        committed = parse_instant(self.cursor.start, self.where, self.cursor.field)
        # A cursor never moves back: a longer safety_lag than before leaves it where it was.
        return committed - incremental.lookback, max(end, committed)

    def object_type(self) -> str:
        """The type to put in API paths: a standard name, or a custom object's objectTypeId."""
        wanted = self.settings.object
        if wanted.lower() in STANDARD_OBJECTS or (
            OBJECT_TYPE_ID.match(wanted) and not wanted.startswith("2-")
        ):
            return wanted.lower()
        schemas = self.hook.call("schemas", "get_all").data or {}
        known: list[str] = []
        for schema in schemas.get("results") or []:
            names = {
                schema.get("name"),
                schema.get("fullyQualifiedName"),
                schema.get("objectTypeId"),
            }
            if wanted in names:
                return str(schema["objectTypeId"])
            known.append(f"{schema.get('name')} ({schema.get('objectTypeId')})")
        raise SourceError(
            f"{self.where}: source.object {wanted!r} is neither a standard object "
            f"({', '.join(STANDARD_OBJECTS)}) nor a custom object of this account (custom "
            f"objects: {', '.join(known) or 'none'}); name one of them"
        )

    def all_properties(self, object_type: str) -> list[str]:
        """Every property name of ``object_type``, from the properties API."""
        data = self.hook.call("properties", "get_all", object_type).data or {}
        return [str(item["name"]) for item in data.get("results") or [] if item.get("name")]

    def _records(self, object_type: str, page: list[Record]) -> Iterator[Record]:
        associated = {
            to_type: read_associations(
                self.hook, object_type, to_type, [str(item["id"]) for item in page]
            )
            for to_type in self.settings.associations
        }
        for item in page:
            record_id = str(item["id"])
            record: Record = {
                "id": record_id,
                "properties": item.get("properties") or {},
                "createdAt": item.get("createdAt"),
                "updatedAt": item.get("updatedAt"),
                "archived": bool(item.get("archived", False)),
                "associations": {
                    to_type: ids.get(record_id, []) for to_type, ids in associated.items()
                },
            }
            if record["archived"]:
                record["archivedAt"] = item.get("archivedAt")
            yield record

    def _archived_in(
        self,
        object_type: str,
        properties: Sequence[str],
        start: datetime | None,
        end: datetime,
    ) -> Iterator[Any | SourceWarning]:
        """Records archived within the window (the search API never returns archived ones)."""
        listing = ObjectList(self.hook, object_type, properties, archived=True)
        for page in listing.pages():
            inside = [item for item in page if _archived_within(item, start, end)]
            yield from self._records(object_type, inside)
        yield from _split_warning(listing)


def wall_clock() -> datetime:
    """Now, in UTC: where an incremental window ends (minus ``safety_lag``)."""
    return datetime.now(timezone.utc)


def _archived_within(item: Record, start: datetime | None, end: datetime) -> bool:
    archived_at = item.get("archivedAt")
    if not archived_at:
        return False
    when = parse_instant(archived_at, "HubSpot", "archivedAt")
    return (start is None or when >= start) and when < end


def _split_warning(listing: ObjectList) -> Iterator[SourceWarning]:
    if listing.changed:
        yield SourceWarning(
            f"hubspot {listing.object_type}: {listing.changed} records changed between the "
            "requests of one page (their properties are read in several requests to keep URLs "
            "short) and may lack some properties; the next run reads them again"
        )


def _remedy(exc: DataflowError) -> str:
    if isinstance(exc, HubSpotAuthError):
        return (
            " (HubSpot refused the credentials: check the connection's private-app token, or "
            "its OAuth client_id, client_secret and refresh_token, and the app's scopes)"
        )
    if isinstance(exc, HubSpotApiError) and exc.status == 403:
        return " (the token lacks a scope this object needs: add it to the app)"
    return ""


def parse_instant(value: JsonScalar, where: str, field: str) -> datetime:
    """A cursor or timestamp: ISO 8601 (naive = UTC) or milliseconds since the epoch."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000, timezone.utc)
        text = str(value).strip()
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, timezone.utc)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise SourceError(
            f"{where}: the cursor value {value!r} of {field} is not a time (ISO 8601 like "
            "2024-03-01T00:00:00Z, or milliseconds since the epoch); reset it with "
            "`airflow-dataflow cursor reset ROUTE [--to TIME]`"
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def iso(when: datetime) -> str:
    """``when`` as HubSpot writes times: UTC, milliseconds, ``Z``."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{when.microsecond // 1000:03d}Z"
    )


def _millis(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(milliseconds=1)
